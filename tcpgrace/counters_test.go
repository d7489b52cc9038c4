//go:build linux

package tcpgrace

import (
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// TestAddCounter: counters added to a generation appear, sorted by name
// with the values read at that moment, in Status and in the control
// socket's status; a bad name, a name added twice, no value and no help
// are refused with the name in the error, and add nothing.
func TestAddCounter(t *testing.T) {
	u, path, _ := controlUpgrader(t, Options{}, nil)
	var a, b atomic.Uint64
	require.NoError(t, u.AddCounter("zeta_events_total", "Zeta events.", a.Load))
	require.NoError(t, u.AddCounter("alpha_packets_total", "Alpha packets.", b.Load))
	a.Store(5)
	b.Store(2)
	assert.Equal(t, []CounterStatus{{"alpha_packets_total", "Alpha packets.", 2}, {"zeta_events_total", "Zeta events.", 5}},
		u.Status().Counters)
	rep := ask(t, path, control.Request{Cmd: control.CmdStatus})
	require.True(t, rep.OK, rep.Error)
	assert.Equal(t, map[string]uint64{"alpha_packets_total": 2, "zeta_events_total": 5}, rep.Status.Counters)

	for _, c := range []struct {
		name, help string
		value      func() uint64
		want       string
	}{
		{"Upper_total", "h", a.Load, `"Upper_total": a counter's name is lower case`},
		{"packets", "h", a.Load, `"packets": a counter's name`},
		{"_total", "h", a.Load, `"_total": a counter's name`},
		{"9lives_total", "h", a.Load, `"9lives_total": a counter's name`},
		{"a-b_total", "h", a.Load, `"a-b_total": a counter's name`},
		{strings.Repeat("a", 59) + "_total", "h", a.Load, "a counter's name"},
		{"tcpgrace_x_total", "h", nil, `"tcpgrace_x_total": no value function`},
		{"x_total", " ", a.Load, `"x_total": no help text`},
		{"zeta_events_total", "h", a.Load, `"zeta_events_total": added already`},
	} {
		assert.ErrorContains(t, u.AddCounter(c.name, c.help, c.value), c.want)
	}
	assert.Len(t, u.Status().Counters, 2, "refused counters add nothing")
}
