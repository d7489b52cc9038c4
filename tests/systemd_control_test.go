package tests

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// controlService is notifyService with -control and tcpgrace upgrade as
// ExecReload=, so that systemctl reload waits for the upgrade's outcome.
func controlService(args string) string {
	unit := notifyService(args+" -control @DIR@/control.sock", "")
	return strings.Replace(unit, "ExecReload=/bin/kill -USR1 $MAINPID\n",
		"ExecReload=@DIR@/tcpgrace upgrade -control @DIR@/control.sock\n", 1)
}

// TestSystemdReloadThroughControl: with ExecReload=tcpgrace upgrade,
// systemctl reload returns once the new generation serves (MainPID is
// already its pid), and fails when the upgrade fails: a broken build
// (a script that reports a config error and exits 3) makes systemctl
// reload exit non-zero, while the unit stays active with the old main
// process serving; a good build then reloads again. Under load
// throughout, not one request fails.
func TestSystemdReloadThroughControl(t *testing.T) {
	needShell(t)
	dir := t.TempDir()
	installLineserver(t, dir)
	require.NoError(t, copyExecutable(dir+"/tcpgrace", tcpgraceBin(), 0o755), "installing tcpgrace")
	good := readFile(t, dir+"/lineserver")
	addr := freeAddr(t)
	s := bootSystemd(t, dir, map[string]string{"lines.service": controlService("-tcp " + addr + " -ready-timeout 5s")})
	s.mustSystemctl("start", "lines.service")
	s.waitMain("lines.service", 1)
	l := startLoad([]target{{"tcp", addr}}, 2, 1_000_000)
	l.waitRequests(t, 100)
	w := s.watchState("lines.service", "active", "reloading")

	s.mustSystemctl("reload", "lines.service")
	// The old generation's line, written before it answers tcpgrace
	// upgrade; the child's own "ready" line follows its word on the
	// readiness pipe and may come later.
	m := regexp.MustCompile(`msg="upgrade done: next generation serves" pid=\d+ generation=1 child=(\d+) `).FindSubmatch(readFile(t, s.path("service.log")))
	require.NotNil(t, m, "generation 2 was ready when systemctl reload returned")
	gen2, _ := strconv.Atoi(string(m[1]))
	assert.Equal(t, strconv.Itoa(gen2), s.show("lines.service", "MainPID"), "and systemd follows it already")
	s.waitMain("lines.service", 2)
	l.waitRequests(t, 100)

	deployFile(t, dir, []byte(brokenScript))
	out, err := s.systemctl("reload", "lines.service")
	assert.Error(t, err, "systemctl reload fails with the upgrade: %s", out)
	assert.Contains(t, out, "lines.service", "and says which unit: %s", out)
	assert.Equal(t, strconv.Itoa(gen2), s.show("lines.service", "MainPID"), "the old generation is still the main process")
	assert.Equal(t, "active", s.show("lines.service", "ActiveState"), "the unit stays active")
	logs := string(readFile(t, s.path("service.log")))
	assert.Regexp(t, `(?m)^tcpgrace upgrade: .*exit status 3$`, logs, "tcpgrace upgrade said why, in the unit's log")
	assert.Contains(t, logs, "config error: listen address missing", "next to the broken build's own words")
	l.waitRequests(t, 100)

	deployFile(t, dir, good)
	s.mustSystemctl("reload", "lines.service")
	s.waitMain("lines.service", 3)
	l.waitRequests(t, 100)
	w.check(t, "a reload, a failed one, another")
	l.stopLoad(t)
}
