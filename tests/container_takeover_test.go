package tests

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// runContainer runs image as a container called name, on the host's
// network, with dir bind-mounted at /shared and args for its entrypoint
// (tcpgrace run); the container is removed when the test ends.
func runContainer(t *testing.T, d *dockerClient, image, name, dir string, args ...string) *container {
	t.Helper()
	c := &container{d: d, name: name}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("container %s logs:\n%s", name, c.logs())
		}
		d.run("rm", "-f", name)
	})
	d.must(append([]string{"run", "-d", "--name", name, "--network", "host", "-v", dir + ":/shared", image}, args...)...)
	return c
}

// waitExited waits until the container has exited and returns its exit
// code.
func (c *container) waitExited(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for c.inspect("{{.State.Running}}") == "true" {
		require.False(t, time.Now().After(deadline), "container %s still runs after %v\nlogs:\n%s", c.name, waitTimeout, c.logs())
		time.Sleep(50 * time.Millisecond)
	}
	return c.inspect("{{.State.ExitCode}}")
}

// TestContainerBlueGreen: the blue/green deploy of two containers. Blue
// (examples/container's image, version one) runs tcpgrace run as PID 1
// with its control socket in a directory shared with the host; green,
// another container of the next version's image, starts with the same
// sockets plus -takeover on blue's control socket, takes the sockets,
// and once its lineserver is ready blue drains and exits 0. Under load on
// TCP, not one request fails; green then serves, answers on the same
// control socket path, and stops cleanly.
func TestContainerBlueGreen(t *testing.T) {
	t.Parallel() // its own dockerd; with the light tests, not the serial load tests
	d := needDocker(t)
	ctx, next := t.TempDir(), t.TempDir()
	staticBuilds(t, map[string]string{versions[0]: ctx, versions[1]: next})
	blueImage, greenImage := exampleImage(t, d, ctx), exampleImage(t, d, next)
	shared := t.TempDir()
	addr := freeAddr(t)
	args := []string{"-listen", "tcp://" + addr, "-control", "/shared/ctl", "-stop-timeout", "8s", "--",
		"/lineserver", "-tcp", addr, "-drain-timeout", "7s"}
	suffix := strings.NewReplacer(":", "-").Replace(blueImage)
	blue := runContainer(t, d, blueImage, "blue-"+suffix, shared, args...)
	blue.waitCount(readyRe, 1)
	l := startLoad([]target{{"tcp", addr}}, 4, 1_000_000)
	defer l.halt()
	l.waitRequests(t, 200)

	green := runContainer(t, d, greenImage, "green-"+suffix, shared, append([]string{"-takeover", "/shared/ctl"}, args...)...)
	green.waitLog(`msg="takeover: the old supervisor confirmed; serving" pid=1 `)
	green.waitLog(`msg=start pid=\d+ version=` + versions[1])
	assert.Equal(t, "0", blue.waitExited(t), "blue exits 0 once its instance drained")
	assert.Regexp(t, `msg="takeover done: the taker serves; draining" pid=1`, blue.logs())
	assert.Regexp(t, `msg="supervisor exit" pid=1 status=0`, blue.logs())
	before := l.ok.Load()
	l.waitRequests(t, before+200)
	l.stopLoad(t)

	_, err := os.Stat(filepath.Join(shared, "ctl"))
	require.NoError(t, err, "blue left the control socket's file to green")
	out := d.must("exec", green.name, "/tcpgrace", "status", "-control", "/shared/ctl")
	assert.Contains(t, out, `"pid":1,`, "green's supervisor answers status on the same path")
	assert.Contains(t, out, `"generation":2,`, "its instance is generation 2: green counts on from blue's")
	d.must("stop", green.name)
	assert.Equal(t, "0", green.inspect("{{.State.ExitCode}}"), "green stops cleanly")
}
