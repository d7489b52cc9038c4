# tcpgrace: build, test and demonstrate zero-downtime upgrades.
GO      ?= go
PYTHON  ?= python3
BIN     := bin
EXAMPLES := $(patsubst examples/%/,%,$(wildcard examples/*/))

.PHONY: all build test demo bench bench-go fmt-check vet clean

all: build

## build: compile every example into bin/
build:
	@mkdir -p $(BIN)
	@for ex in $(EXAMPLES); do \
		echo "go build -o $(BIN)/$$ex ./examples/$$ex"; \
		$(GO) build -o $(BIN)/$$ex ./examples/$$ex || exit 1; \
	done

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

## test: formatting, vet, every example builds, all tests with the race detector
test: fmt-check vet build
	$(PYTHON) -m py_compile bench/stress.py bench/harness.py
	$(GO) test -race -count=1 ./...

## demo: build lineserver, upgrade it live five times under load (a new build each time), print the loss table
demo: build
	$(PYTHON) bench/harness.py --source ./examples/lineserver --upgrades 5 --interval 1

## bench: Go benchmarks, then live upgrades against a naive stop-then-start restart under the same load
bench: bench-go
	$(PYTHON) bench/harness.py --source ./examples/lineserver --upgrades 10 --interval 2 --naive

bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./bench

clean:
	rm -rf $(BIN)
