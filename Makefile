# tcpgrace: build, test and demonstrate zero-downtime upgrades.
GO      ?= go
PYTHON  ?= python3
BIN     := bin
EXAMPLES := $(patsubst examples/%/main.go,%,$(wildcard examples/*/main.go))
COMMANDS := $(patsubst cmd/%/main.go,%,$(wildcard cmd/*/main.go))
# The Go modules of this repository: the library at the root (tcpgrace,
# inherit, internal, cmd), and beside it, each with its own go.mod and
# a replace to the root, examples, tests, bench and tcpgrace/metrics
# (the Prometheus collector, kept out of the library's module). go.work joins them
# for development; every target below covers all of them (a go.mod up
# to two levels down; tidy-check fails if go.work uses another one).
MODULES := . $(patsubst %/go.mod,%,$(wildcard */go.mod */*/go.mod))
PACKAGES := $(patsubst %,./%/...,$(filter-out .,$(MODULES))) ./...
# The library module's packages, and the oldest Go release it supports.
LIBRARY := ./tcpgrace/... ./inherit/... ./internal/... ./cmd/...
GO_OLDEST ?= go1.25.5

.PHONY: all build test tidy-check vet-platforms test-go1.25 download tools interop-table mutants fuzz demo bench bench-go soak fmt-check vet clean

all: build

## build: compile every example and command (tcpgrace) into bin/
build:
	@mkdir -p $(BIN)
	@for ex in $(EXAMPLES); do \
		echo "go build -o $(BIN)/$$ex ./examples/$$ex"; \
		$(GO) build -o $(BIN)/$$ex ./examples/$$ex || exit 1; \
	done
	@for c in $(COMMANDS); do \
		echo "go build -o $(BIN)/$$c ./cmd/$$c"; \
		$(GO) build -o $(BIN)/$$c ./cmd/$$c || exit 1; \
	done

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PACKAGES)

## tidy-check: go mod tidy changes no module's go.mod or go.sum, and go.work uses every module
tidy-check:
	@for m in $(MODULES); do \
		(cd $$m && GOWORK=off $(GO) mod tidy -diff) || { echo "tidy-check: run go mod tidy in $$m"; exit 1; }; \
	done
	@used=$$($(GO) list -m -f '{{.Dir}}' | sort); \
	want=$$(for m in $(MODULES); do (cd $$m && pwd); done | sort); \
	[ "$$used" = "$$want" ] || { echo "tidy-check: go.work should use exactly: $(MODULES)"; exit 1; }

## vet-platforms: the library module, tests included, vets on darwin and freebsd (tests/platforms_test.go checks that windows builds fail with the reason)
vet-platforms:
	GOOS=darwin $(GO) vet $(LIBRARY)
	GOOS=freebsd $(GO) vet $(LIBRARY)

## test: formatting, tidy modules, vet (here and for darwin/freebsd), every example builds, all tests of every module with the race detector, bounded fuzzing
test: fmt-check tidy-check vet vet-platforms build
	$(PYTHON) -m py_compile bench/stress.py bench/harness.py examples/python/lineserver.py
	$(MAKE) fuzz FUZZTIME=20000x # a count, not a duration: Go 1.26's fuzzing can fail a target at its time limit (golang/go#75804)
	$(GO) test -race -count=1 -parallel 8 $(PACKAGES)

## test-go1.25: the library module's unit tests under the oldest supported Go (fetched like a module)
test-go1.25:
	GOTOOLCHAIN=$(GO_OLDEST) GOWORK=off $(GO) test -race -count=1 $(LIBRARY)

## download: every module's dependencies into the module cache
download:
	@for m in $(MODULES); do echo "go mod download ($$m)"; (cd $$m && GOWORK=off $(GO) mod download) || exit 1; done

# The third-party load clients of the interop tests (tests/interop_test.go),
# pinned; wrk and ab come from the distribution (Debian: wrk, apache2-utils).
TOOLS := github.com/rakyll/hey@v0.1.4 github.com/tsenart/vegeta/v12@v12.13.0 github.com/bojand/ghz/cmd/ghz@v0.120.0
## tools: install the interop tests' Go load clients (hey, vegeta, ghz) into $(go env GOPATH)/bin
tools:
	@for t in $(TOOLS); do echo "go install $$t"; $(GO) install $$t || exit 1; done
	@command -v wrk >/dev/null && command -v ab >/dev/null || echo "tools: wrk and ab are not installed (Debian: apt-get install wrk apache2-utils); their interop tests will skip"

## interop-table: each interop client through 8 live upgrades and through 8 naive restarts (the table in bench/RESULTS.md)
interop-table: tools
	@out=$$(TCPGRACE_INTEROP_TABLE=1 $(GO) test -count=1 -v -run '^TestInteropTable$$' -timeout 20m ./tests) || { echo "$$out"; exit 1; }; \
	echo "$$out" | grep '^|'

## mutants: apply each patch in tests/mutants to a copy of the tree; the tests it names must fail (MUTANTS= picks some; MUTANT_JOBS at once, 2 by default)
MUTANT_JOBS ?= 2
mutants:
	$(GO) run ./tests/mutants -j $(MUTANT_JOBS) $(MUTANTS)

FUZZTIME ?= 30s
## fuzz: run each fuzz target for FUZZTIME
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./internal/wire
	$(GO) test -run '^$$' -fuzz '^FuzzListenFDs$$' -fuzztime $(FUZZTIME) ./internal/wire
	$(GO) test -run '^$$' -fuzz '^FuzzParseRequest$$' -fuzztime $(FUZZTIME) ./internal/control
	$(GO) test -run '^$$' -fuzz '^FuzzParseStat$$' -fuzztime $(FUZZTIME) ./internal/proc
	$(GO) test -run '^$$' -fuzz '^FuzzParseFrame$$' -fuzztime $(FUZZTIME) ./internal/handoff
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeTicketKeys$$' -fuzztime $(FUZZTIME) ./internal/wire
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeConnItem$$' -fuzztime $(FUZZTIME) ./tcpgrace
	$(GO) test -run '^$$' -fuzz '^FuzzFDName$$' -fuzztime $(FUZZTIME) ./internal/sdnotify
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeTaken$$' -fuzztime $(FUZZTIME) ./internal/wire

## demo: build lineserver, upgrade it live five times under load (a new build each time), print the loss table
demo: build
	$(PYTHON) bench/harness.py --source ./examples/lineserver --upgrades 5 --interval 1

## bench: Go benchmarks, then live upgrades against a naive stop-then-start restart under the same load
bench: bench-go
	$(PYTHON) bench/harness.py --source ./examples/lineserver --upgrades 10 --interval 2 --naive --json $(BIN)/harness.json
	@echo; echo "Performance targets (bench/RESULTS.md, \"Against the targets\"):"
	@$(PYTHON) bench/targets.py $(BIN)/bench.txt $(BIN)/harness.json

bench-go:
	@mkdir -p $(BIN)
	@{ $(GO) test -run '^$$' -bench . -benchmem -count 5 ./bench; echo $$? > $(BIN)/bench.rc; } | tee $(BIN)/bench.txt; exit $$(cat $(BIN)/bench.rc)

## soak: 1000 live upgrades under load; fds and RSS of the serving process at upgrades 1, 100 and 1000
soak: build
	$(PYTHON) bench/harness.py --server $(BIN)/lineserver --upgrades 1000 --interval 0.1 --workers 4 --report-at 1,100,1000

clean:
	rm -rf $(BIN)
