//go:build linux

package tcpgrace

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// openFDs lists this process's open fds and what they point at.
func openFDs(t *testing.T) map[string]string {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err, "/proc/self/fd should be readable")
	fds := map[string]string{}
	for _, e := range entries {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		fds[e.Name()] = target
	}
	return fds
}

// settledFDs is openFDs once what earlier tests left unreachable has
// been finalized (closed) and the listing stays the same for 50 ms.
func settledFDs(t *testing.T) map[string]string {
	t.Helper()
	runtime.GC()
	runtime.GC()
	fds := openFDs(t)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		again := openFDs(t)
		if maps.Equal(fds, again) {
			break
		}
		fds = again
	}
	return fds
}

// fdDiff describes how two openFDs listings differ, for failure messages.
func fdDiff(before, after map[string]string) string {
	var diff []string
	for fd, target := range after {
		if before[fd] != target {
			diff = append(diff, fmt.Sprintf("+%s->%s", fd, target))
		}
	}
	for fd, target := range before {
		if got, ok := after[fd]; !ok || got != target {
			diff = append(diff, fmt.Sprintf("-%s->%s", fd, target))
		}
	}
	sort.Strings(diff)
	return strings.Join(diff, " ")
}

func TestFailedUpgradesLeakNothing(t *testing.T) {
	h := newHarness(t, 10*time.Second)
	kinds := []struct {
		setup        func()
		readyTimeout time.Duration
		want         error
	}{
		{h.useMissing, 10 * time.Second, ErrChildFailed},
		{h.useGarbage, 10 * time.Second, ErrChildFailed},
		{func() { h.useNotExecutable(false) }, 10 * time.Second, ErrChildFailed},
		{func() { h.useChild(childExit3) }, exitReadyTimeout, ErrChildFailed},
		{func() { h.useChild(childFail) }, 10 * time.Second, ErrChildFailed},
		{func() { h.useChild(childHang) }, 300 * time.Millisecond, ErrReadyTimeout},
	}
	run := func(i int) {
		k := kinds[i%len(kinds)]
		k.setup()
		// Only the never-ready kind gets a short timeout, so that a slow
		// start of the others on a loaded machine cannot turn into one.
		h.u.opts.ReadyTimeout = k.readyTimeout // no Upgrade runs: no race
		err := h.u.Upgrade(context.Background())
		assert.ErrorIs(t, err, k.want, "failed upgrade %d should fail with %v", i, k.want)
	}
	for i := range kinds { // warm up: lazily opened runtime fds
		run(i)
	}
	before := settledFDs(t)
	for i := range 20 {
		run(i)
	}
	after := openFDs(t)
	assert.Equal(t, len(before), len(after), "20 failed upgrades should leave the number of open fds unchanged: %s", fdDiff(before, after))
	// The one goroutine that outlives the upgrades is the reader of the
	// service's mailbox, stopped for each upgrade and started again after
	// it failed.
	goleak.VerifyNone(t, goleak.IgnoreAnyFunction("github.com/tcpgrace/tcpgrace/tcpgrace.(*mailbox).receive"))
	h.assertParentServes("after 20 failed upgrades")
}
