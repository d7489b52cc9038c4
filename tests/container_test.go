package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/tcpgrace/tcpgrace/internal/control"
)

// A real container (issue #20): the image of examples/container, FROM
// scratch with static builds of tcpgrace and lineserver, run by a real
// dockerd with tcpgrace run as its PID 1 on the host's network (loopback
// addresses only), upgraded and stopped the ways its README gives, under
// load.

// dockerTimeout bounds dockerd's start, its stop and each docker command.
const dockerTimeout = 30 * time.Second

// dockerClient runs the docker command against one daemon.
type dockerClient struct {
	t    *testing.T
	host string // DOCKER_HOST; "" for the command's default
}

// needDocker returns a client of a dockerd that answers: the one the
// docker command reaches by default, else one started for the test and
// stopped at its end. It skips the test, naming what is missing, without
// root, the docker command or dockerd, or when dockerd cannot run here.
func needDocker(t *testing.T) *dockerClient {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: dockerd and its containers")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("needs the docker command (Debian: apt-get install docker.io)")
	}
	d := &dockerClient{t: t, host: os.Getenv("DOCKER_HOST")}
	if _, err := d.run("version"); err == nil {
		return d
	}
	return startDockerd(t)
}

// startDockerd starts a dockerd of the test's own (data root, exec root,
// pid file and API socket in a temp dir; no iptables rules, no bridge:
// its containers use the host's network) and waits until it answers.
func startDockerd(t *testing.T) *dockerClient {
	t.Helper()
	bin, err := exec.LookPath("dockerd")
	if err != nil {
		t.Skip("needs dockerd (Debian: apt-get install docker.io): no daemon answers and none is installed")
	}
	dir := t.TempDir()
	d := &dockerClient{t: t, host: "unix://" + filepath.Join(dir, "docker.sock")}
	logPath := filepath.Join(dir, "dockerd.log")
	log, err := os.Create(logPath)
	require.NoError(t, err, "dockerd's log")
	cmd := exec.Command(bin, "--iptables=false", "--bridge=none", "--host", d.host,
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "dockerd.pid"))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	require.NoError(t, cmd.Start(), "starting dockerd")
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { // before the temp dir is removed: registered after it
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(dockerTimeout):
			t.Errorf("dockerd did not stop within %v; killing it", dockerTimeout)
			cmd.Process.Kill()
			<-exited
		}
		log.Close()
		unmountUnder(t, dir)
	})
	begin := time.Now()
	for _, err := d.run("version"); err != nil; _, err = d.run("version") {
		select {
		case <-exited:
			t.Skipf("dockerd cannot run here, it exited: %s", readFile(t, logPath))
		case <-time.After(50 * time.Millisecond):
		}
		require.Less(t, time.Since(begin), dockerTimeout, "dockerd does not answer: %v\n%s", err, readFile(t, logPath))
	}
	t.Logf("started dockerd in %v", time.Since(begin).Round(time.Millisecond))
	return d
}

// unmountUnder detaches every mount below dir, which a stopped dockerd
// leaves (its exec root's netns/default), so that the temp dir can be
// removed.
func unmountUnder(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	require.NoError(t, err, "reading the mount table")
	defer f.Close()
	sc := bufio.NewScanner(f)
	var mounts []string
	for sc.Scan() {
		// id parent major:minor root mountpoint ...
		if fields := strings.Fields(sc.Text()); len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mounts = append(mounts, fields[4])
		}
	}
	slices.Reverse(mounts) // the last mounted first
	for _, m := range mounts {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Errorf("unmounting %s, which dockerd left: %v", m, err)
		}
	}
}

// run runs docker with args and returns its output (stdout and stderr),
// trimmed.
func (d *dockerClient) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	if d.host != "" {
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+d.host)
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// must is run that fails the test on an error.
func (d *dockerClient) must(args ...string) string {
	d.t.Helper()
	out, err := d.run(args...)
	require.NoError(d.t, err, "docker %s: %s", strings.Join(args, " "), out)
	return out
}

// staticBuilds puts static builds (cgo off, as an image FROM scratch
// needs) of cmd/tcpgrace and examples/lineserver, of each version, into
// dirs[version]. They are built once per test binary (under binDir), all
// versions at once, and copied for each test after.
func staticBuilds(t *testing.T, dirs map[string]string) {
	t.Helper()
	built := static.get(t)
	for version, dir := range dirs {
		src, ok := built[version]
		require.True(t, ok, "no static build of version %q", version)
		for _, name := range []string{"tcpgrace", "lineserver"} {
			require.NoError(t, copyExecutable(filepath.Join(dir, name), filepath.Join(src, name), 0o755))
		}
	}
}

// static holds the static builds of every version, made once.
var static staticSet

type staticSet struct {
	once sync.Once
	dirs map[string]string // version -> directory, under binDir (TestMain removes it)
	err  error
}

// get builds every version the first time, and returns where each is.
func (s *staticSet) get(t *testing.T) map[string]string {
	t.Helper()
	s.once.Do(func() {
		root := filepath.Join(binDir, "static")
		s.dirs = map[string]string{}
		errs := make(chan error, len(versions))
		for _, version := range versions {
			dir := filepath.Join(root, version)
			s.dirs[version] = dir
			go func() {
				cmd := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", dir+"/", "./cmd/tcpgrace", "./examples/lineserver")
				cmd.Dir = ".."
				cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
				out, err := cmd.CombinedOutput()
				if err != nil {
					err = fmt.Errorf("go build (%s): %w: %s", version, err, out)
				}
				errs <- err
			}()
		}
		for range versions {
			if err := <-errs; err != nil && s.err == nil {
				s.err = err
			}
		}
	})
	require.NoError(t, s.err, "static builds of tcpgrace and lineserver")
	return s.dirs
}

// exampleImage builds examples/container's Dockerfile, as shipped, in
// ctx, which holds static builds, and removes the image when the test
// ends. FROM scratch is no image to pull: nothing is fetched.
func exampleImage(t *testing.T, d *dockerClient, ctx string) string {
	t.Helper()
	require.NoError(t, os.WriteFile(filepath.Join(ctx, "Dockerfile"), readFile(t, "../examples/container/Dockerfile"), 0o644))
	image := fmt.Sprintf("tcpgrace-e2e:%d-%d", os.Getpid(), time.Now().UnixNano())
	d.must("build", "-q", "-t", image, ctx)
	t.Cleanup(func() { d.run("rmi", "-f", image) })
	return image
}

// container is one container of the example's image.
type container struct {
	d    *dockerClient
	name string
}

// runExample runs image with --network host and its CMD as shipped but
// for the address, 0.0.0.0:9000, replaced by addr; the container is
// removed when the test ends.
func runExample(t *testing.T, d *dockerClient, image, addr string) *container {
	t.Helper()
	var cmd []string
	require.NoError(t, json.Unmarshal([]byte(d.must("image", "inspect", "-f", "{{json .Config.Cmd}}", image)), &cmd), "the image's CMD")
	require.Contains(t, cmd, "tcp://0.0.0.0:9000", "the CMD listens on port 9000: %q", cmd)
	for i := range cmd {
		cmd[i] = strings.ReplaceAll(cmd[i], "0.0.0.0:9000", addr)
	}
	c := &container{d: d, name: strings.NewReplacer(":", "-").Replace(image)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("container logs:\n%s", c.logs())
		}
		d.run("rm", "-f", c.name)
	})
	d.must(append([]string{"run", "-d", "--name", c.name, "--network", "host", image}, cmd...)...)
	return c
}

// logs is what the container wrote: the supervisor's log and the app's.
func (c *container) logs() string {
	out, _ := c.d.run("logs", c.name)
	return out
}

// waitCount waits until re matches the container's logs n times.
func (c *container) waitCount(re *regexp.Regexp, n int) {
	c.d.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for len(re.FindAllString(c.logs(), -1)) < n {
		require.False(c.d.t, time.Now().After(deadline), "timed out waiting for %d lines matching %s\nlogs:\n%s", n, re, c.logs())
		require.Equal(c.d.t, "true", c.inspect("{{.State.Running}}"), "the container exited while waiting for %d lines matching %s\nlogs:\n%s", n, re, c.logs())
		time.Sleep(50 * time.Millisecond)
	}
}

// waitLog waits for a line matching expr.
func (c *container) waitLog(expr string) {
	c.d.t.Helper()
	c.waitCount(regexp.MustCompile(expr), 1)
}

// inspect is one field of docker inspect, a Go template.
func (c *container) inspect(field string) string {
	c.d.t.Helper()
	return c.d.must("inspect", "-f", field, c.name)
}

// TestContainer: examples/container's image, FROM scratch, runs tcpgrace
// run as PID 1 with the host's network. Under load, it is upgraded by
// docker exec tcpgrace upgrade (exit 0, the new instance's pid), by a new
// lineserver copied in with docker cp and docker kill -s USR1 (the new
// instance runs the new build), and its supervisor replaced by docker cp
// and docker kill -s USR2 (same pid 1); docker kill -s HUP reaches the
// serving instance (lineserver logs it); a SIGKILL of the app is followed
// by a new instance, and lineserver's own self-exec (SIGUSR1 to the app)
// by the supervisor following its new main process: not one request
// fails. docker stop then refuses new clients, lets a held connection
// finish, and the container exits 0.
func TestContainer(t *testing.T) {
	t.Parallel() // its own dockerd; with the light tests, not the serial load tests
	d := needDocker(t)
	begin := time.Now()
	ctx, next := t.TempDir(), t.TempDir() // the first version, the image's; the next one
	staticBuilds(t, map[string]string{versions[0]: ctx, versions[1]: next})
	image := exampleImage(t, d, ctx)
	addr := freeAddr(t)
	c := runExample(t, d, image, addr)
	c.waitCount(readyRe, 1)
	l := startLoad([]target{{"tcp", addr}}, 2, 1_000_000)
	l.waitRequests(t, 100)

	c.execUpgrade(t)
	l.waitRequests(t, 100)

	d.must("cp", filepath.Join(next, "lineserver"), c.name+":/lineserver")
	d.must("kill", "-s", "USR1", c.name)
	c.waitCount(readyRe, 3)
	pid := readyRe.FindAllStringSubmatch(c.logs(), -1)[2][2]
	c.waitLog(fmt.Sprintf(`msg=start pid=%s version=%s`, pid, versions[1]))
	l.waitRequests(t, 100)

	d.must("cp", filepath.Join(next, "tcpgrace"), c.name+":/tcpgrace")
	d.must("kill", "-s", "USR2", c.name)
	c.waitLog(fmt.Sprintf(`msg="supervisor upgraded in place" pid=1 version=%s from_version=%s`, versions[1], versions[0]))
	l.waitRequests(t, 100)
	d.must("kill", "-s", "HUP", c.name)
	c.waitLog(fmt.Sprintf(`msg="reload signal[^"]*" pid=%d `, c.serving()))
	l = c.crash(t, l, addr)
	c.appUpgrade(t)
	l.waitRequests(t, 100)
	l.stopLoad(t)

	c.stopDrains(t, addr)
	t.Logf("took %v from dockerd answering", time.Since(begin).Round(time.Millisecond))
}

// execUpgrade runs tcpgrace upgrade in the container, which must exit 0
// with the new instance's pid once it serves, waits until the old one has
// drained and exited 0, and checks that tcpgrace status lists the new one.
func (c *container) execUpgrade(t *testing.T) {
	t.Helper()
	n := len(readyRe.FindAllString(c.logs(), -1))
	out := c.d.must("exec", c.name, "/tcpgrace", "upgrade", "-control", "/tcpgrace.sock")
	var up control.Upgraded
	require.NoError(t, json.Unmarshal([]byte(out), &up), "tcpgrace upgrade prints one JSON line: %s", out)
	require.NotZero(t, up.PID, "it names the new instance: %s", out)
	assert.Regexp(t, fmt.Sprintf(`msg="instance ready" pid=1 instance=%d `, up.PID), c.logs(), "which was ready when the command returned")
	c.waitCount(readyRe, n+1)
	c.waitLog(fmt.Sprintf(`msg="instance exited" pid=1 instance=%d .*phase=draining status="exit status 0"`, up.OldPID))
	st := c.d.must("exec", c.name, "/tcpgrace", "status", "-control", "/tcpgrace.sock", "-human")
	assert.Regexp(t, fmt.Sprintf(`(?m)^%d +%d +serving `, up.PID, up.Generation), st, "tcpgrace status -human lists the serving instance")
}

// stopDrains runs docker stop while a connection is open: new clients are
// refused at once, the open one is still served, and once it closes the
// container exits 0, well within docker's stop timeout.
func (c *container) stopDrains(t *testing.T, addr string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, requestBudget)
	require.NoError(t, err, "a connection held through the stop")
	defer conn.Close()
	r := bufio.NewReader(conn)
	require.NoError(t, echoOnConn(conn, r, "before the stop"), "the held connection is served")
	stopped := make(chan error, 1)
	go func() {
		out, err := c.d.run("stop", c.name)
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		stopped <- err
	}()
	refusedWithin(t, "tcp", addr, 5*time.Second, syscall.ECONNREFUSED)
	require.NoError(t, echoOnConn(conn, r, "during the drain"), "the held connection is served while it drains")
	assert.Equal(t, "true", c.inspect("{{.State.Running}}"), "the container waits for the open connection")
	conn.Close()
	select {
	case err := <-stopped:
		require.NoError(t, err, "docker stop")
	case <-time.After(waitTimeout):
		t.Fatalf("docker stop did not return within %v", waitTimeout)
	}
	assert.Equal(t, "0", c.inspect("{{.State.ExitCode}}"), "the container exits 0: the supervisor's status, not docker's SIGKILL (137)")
	assert.Regexp(t, `msg="supervisor exit" pid=1 status=0`, c.logs(), "the supervisor exited 0 once the drain was over")
}

// serving is the pid, in the container, of the instance that became
// ready last.
func (c *container) serving() int {
	m := readyRe.FindAllStringSubmatch(c.logs(), -1)
	require.NotEmpty(c.d.t, m, "an instance was ready")
	pid, _ := strconv.Atoi(m[len(m)-1][2])
	return pid
}

// hostPID is the pid, as seen from here, of the container's PID 1's child
// that is pid in the container.
func (c *container) hostPID(pid int) int {
	c.d.t.Helper()
	init, err := strconv.Atoi(c.inspect("{{.State.Pid}}"))
	require.NoError(c.d.t, err, "the container's PID 1")
	s := &supervised{t: c.d.t, pid: init, ns: true}
	return s.hostPID(pid)
}

// crash kills the serving instance with SIGKILL: the supervisor starts a
// new one at once while clients wait in the socket's queue. Requests the
// killed process had accepted die with it, whatever a supervisor does: the
// load l is quiet at the kill, and a new load, returned, starts at once.
func (c *container) crash(t *testing.T, l *load, addr string) *load {
	t.Helper()
	l.stopLoad(t)
	victim, ready := c.serving(), len(readyRe.FindAllString(c.logs(), -1))
	require.NoError(t, syscall.Kill(c.hostPID(victim), syscall.SIGKILL), "killing instance %d", victim)
	l = startLoad([]target{{"tcp", addr}}, 2, 1_000_000)
	c.waitLog(fmt.Sprintf(`msg="serving instance died" pid=1 instance=%d .*status="killed by SIGKILL"`, victim))
	c.waitCount(readyRe, ready+1)
	l.waitRequests(t, 100)
	return l
}

// appUpgrade sends SIGUSR1 to the serving instance itself, lineserver,
// which upgrades by its own self-exec: the new generation names itself
// with MAINPID=, the supervisor follows it, and the old one drains and
// exits.
func (c *container) appUpgrade(t *testing.T) {
	t.Helper()
	old := c.serving()
	require.NoError(t, syscall.Kill(c.hostPID(old), syscall.SIGUSR1), "SIGUSR1 to instance %d", old)
	c.waitLog(fmt.Sprintf(`msg="instance has a new main process" pid=1 instance=%d .*main=\d+`, old))
	c.waitLog(fmt.Sprintf(`msg=exit pid=%d`, old))
}

// TestRunAppSelfExec: a server built on tcpgrace upgrades itself under
// tcpgrace run (SIGUSR1 to the app, as examples/container's README
// allows), twenty times in a row: each time the old generation names the
// new one with MAINPID= and exits at once (it has no connection to
// drain), and the supervisor follows the new one, never taking it for a
// stranger and the instance for dead. Regression: the supervisor read the
// process tree while the new generation was being re-parented to it, did
// not find it, ignored the MAINPID= (about one upgrade in seven), then
// stopped the new generation and restarted the app.
func TestRunAppSelfExec(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	tcp := freeAddr(t)
	s := startRun(t, runSpec{flags: []string{"-listen", "tcp://" + tcp}, command: []string{lineserverBin, "-tcp", tcp}})
	followed := regexp.MustCompile(`msg="instance has a new main process" pid=\d+ instance=(\d+) .*main=(\d+)\n`)
	main := s.serving()
	for n := 1; n <= 20; n++ {
		require.NoError(t, syscall.Kill(main, syscall.SIGUSR1), "SIGUSR1 to the app, pid %d", main)
		s.waitCount(followed, n)
		m := followed.FindAllStringSubmatch(s.logs.String(), -1)[n-1]
		require.Equal(t, strconv.Itoa(main), m[1], "upgrade %d: the supervisor follows the serving generation's successor", n)
		main, _ = strconv.Atoi(m[2])
		s.waitLog(fmt.Sprintf(`msg=ready pid=%d `, main))
	}
	require.NoError(t, echoOnce("tcp", tcp, "after twenty"), "the last generation serves")
	assert.NotContains(t, s.logs.String(), "MAINPID names no process", "no MAINPID= was ignored")
	assert.Equal(t, 1, s.count(readyRe), "the supervisor never restarted the app")
	require.NoError(t, s.stop(), "the last generation drains and the supervisor exits 0")
}
