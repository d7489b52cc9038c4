package tests

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRunTakeover: tcpgrace run -takeover, without containers. Under
// load on TCP and a Unix socket, a second supervisor whose command never
// becomes ready (it exits 3; -start-limit 2) takes the sockets, gives up
// and exits 1, and the first serves on; then one of the next version
// takes them over: its instance serves, the first supervisor drains its
// own and exits 0, leaving the Unix socket file in place, and not one
// request fails.
func TestRunTakeover(t *testing.T) {
	dir := t.TempDir()
	ctl, sock := filepath.Join(dir, "ctl"), filepath.Join(dir, "s.sock")
	tcp := freeAddr(t)
	flags := []string{"-listen", "tcp://" + tcp, "-listen", "unix://" + sock, "-control", ctl}
	command := []string{lineserverBin, "-tcp", tcp, "-unix", sock}
	blue := startRun(t, runSpec{flags: flags, command: command})
	l := startLoad([]target{{"tcp", tcp}, {"unix", sock}}, 2, 1_000_000)
	defer l.halt()
	l.waitRequests(t, 100)

	broken := startRun(t, runSpec{flags: append([]string{"-takeover", ctl, "-start-limit", "2"}, flags...),
		command: []string{"/bin/sh", "-c", "exit 3"}, noWait: true})
	require.ErrorContains(t, broken.wait(), "exit status 1", "the taker whose command never starts gives up\nlogs:\n%s", broken.logs)
	blue.waitLog(`msg="takeover failed: serving on" .*the command never became ready`)
	l.waitRequests(t, l.ok.Load()+100)

	green := startRun(t, runSpec{flags: append([]string{"-takeover", ctl}, flags...), command: command})
	green.waitLog(`msg="takeover: the old supervisor confirmed; serving"`)
	require.NoError(t, blue.wait(), "the old supervisor exits 0 once its instance drained\nlogs:\n%s", blue.logs)
	blue.waitLog(`msg="takeover done: the taker serves; draining"`)
	l.waitRequests(t, l.ok.Load()+100)
	l.stopLoad(t)
	require.FileExists(t, sock, "the old supervisor left the socket file to the new one")
	require.NoError(t, echoOnce("unix", sock, "after"))
	assert.Regexp(t, `msg="instance ready" pid=\d+ instance=\d+ generation=2 `, green.logs.String(), "the new supervisor counts on from the old one's generations")
	require.NoError(t, green.stop())
}
