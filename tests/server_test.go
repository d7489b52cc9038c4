package tests

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
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

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// waitTimeout bounds every wait for a process to do something.
const waitTimeout = 15 * time.Second

// server is a running example server and all its generations.
type server struct {
	t       *testing.T
	dir     string
	src     string // the built example it deploys
	bin     string // the path it was started from; replaced to deploy
	pidFile string
	first   *exec.Cmd
	logs    *logFile
	mu      sync.Mutex
	pids    []int // every generation seen, oldest first

	running string       // the version the serving generation runs
	pending string       // the version at bin that no generation runs yet, if any
	foreign bool         // bin holds no build of a known version (a script, garbage)
	exited  map[int]bool // generations whose exit status was checked
}

// logFile is the stderr of every generation: a real file, since a pipe
// would stay open in the generations that outlive the first. Processes
// the test starts besides the first (takers) write files of their own,
// added to more; String reads them all, the first's first.
type logFile struct {
	path string
	mu   sync.Mutex
	more []string
}

func (l *logFile) String() string {
	l.mu.Lock()
	paths := append([]string{l.path}, l.more...)
	l.mu.Unlock()
	var all []byte
	for _, p := range paths {
		b, _ := os.ReadFile(p)
		all = append(all, b...)
	}
	return string(all)
}

// add makes String read path too, and returns it.
func (l *logFile) add(path string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.more = append(l.more, path)
	return path
}

// startServer starts lineserver; see startExample.
func startServer(t *testing.T, env []string, args ...string) *server {
	t.Helper()
	return startExample(t, lineserverBin, env, args...)
}

// startExample copies the built example src into a temp dir and starts it
// with args plus "-pidfile PATH" (every example takes it), with env added
// to ours, waiting until it is ready (its pid file names it).
func startExample(t *testing.T, src string, env []string, args ...string) *server {
	t.Helper()
	return launch(t, src, launchOpts{env: env}, args...)
}

// launchOpts are the less common ways to start a server.
type launchOpts struct {
	env     []string            // added to our environment
	shell   string              // if set, run through sh -c with this prefix, e.g. "ulimit -n 30;"
	pidFile string              // if set, use this pid file instead of one in the temp dir
	noWait  bool                // do not wait for the pid file
	extra   []*os.File          // passed as fds 3 and up, as systemd passes sockets
	bin     string              // if set, start from this path, which the test laid out, instead of a copy of src
	cred    *syscall.Credential // if set, run as this user
}

func launch(t *testing.T, src string, o launchOpts, args ...string) *server {
	t.Helper()
	dir := t.TempDir()
	name := filepath.Base(src)
	s := &server{t: t, dir: dir, src: src, bin: filepath.Join(dir, name), pidFile: filepath.Join(dir, name+".pid"),
		logs: &logFile{path: filepath.Join(dir, "stderr.log")}, exited: map[int]bool{}}
	if o.pidFile != "" {
		s.pidFile = o.pidFile
	}
	if o.bin != "" {
		s.bin = o.bin
	} else {
		s.deployCopy(src, 0o755)
	}
	s.running, s.foreign = buildVersion(src), false
	argv := append([]string{s.bin, "-pidfile", s.pidFile}, args...)
	if o.shell != "" {
		needShell(t)
		// exec keeps the pid and the path the server was started from.
		argv = append([]string{"/bin/sh", "-c", o.shell + ` exec "$0" "$@"`}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), o.env...)
	cmd.ExtraFiles = o.extra
	if o.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: o.cred}
	}
	stderr, err := os.Create(s.logs.path)
	require.NoError(t, err)
	defer stderr.Close()
	cmd.Stderr = stderr
	require.NoError(t, startRetryingBusy(cmd), "starting %s", name)
	s.first = cmd
	s.pids = []int{cmd.Process.Pid}
	t.Cleanup(s.kill)
	if !o.noWait {
		s.waitPID(cmd.Process.Pid)
	}
	return s
}

// deploy puts src at the server's path the way a deploy does: a new file
// renamed over the old one. For a built example (any of its versions) it
// deploys the build of another version than the serving generation runs,
// so that the next upgrade can check it runs the new file; the test
// binary (which plays roles) is a build of its own.
func (s *server) deploy(src string) {
	s.t.Helper()
	version, build := s.nextBuild(src)
	s.deployCopy(build, 0o755)
	s.pending, s.foreign = version, version == ""
}

// deployBytes puts data at the server's path as deploy does: a file that
// is no build of ours, so no upgrade may take it for one.
func (s *server) deployBytes(data []byte, mode os.FileMode) {
	s.t.Helper()
	tmp := s.bin + ".new"
	require.NoError(s.t, writeExecutable(tmp, data, mode))
	require.NoError(s.t, os.Chmod(tmp, mode))
	require.NoError(s.t, os.Rename(tmp, s.bin))
	s.pending, s.foreign = "", true
}

// deployCopy puts a copy of the file at src at the server's path as
// deployBytes does, copied by the kernel: a build read into the test
// binary and written out again costs the race detector about 12 ms of CPU
// per megabyte, 90 ms for lineserver, each time a server starts or
// upgrades.
func (s *server) deployCopy(src string, mode os.FileMode) {
	s.t.Helper()
	tmp := s.bin + ".new"
	require.NoError(s.t, copyExecutable(tmp, src, mode))
	require.NoError(s.t, os.Chmod(tmp, mode))
	require.NoError(s.t, os.Rename(tmp, s.bin))
	s.pending, s.foreign = "", true
}

// nextBuild returns what deploying src deploys, and its version ("" for
// a file that is no build of ours): for a built example, the build of
// the first version that the serving generation does not run.
func (s *server) nextBuild(src string) (version, path string) {
	version = buildVersion(src)
	if version == "" || version == roleVersion {
		return version, src
	}
	for _, v := range versions {
		if v != s.running {
			return v, filepath.Join(binDir, v, filepath.Base(src))
		}
	}
	s.t.Fatalf("no build of %s other than %s", src, s.running)
	return "", ""
}

// buildVersion is the version of the file at path: one of versions for a
// built example, roleVersion for the test binary, "" for anything else.
func buildVersion(path string) string {
	if self, err := os.Executable(); err == nil && path == self {
		return roleVersion
	}
	rel, err := filepath.Rel(binDir, path)
	if v, _, ok := strings.Cut(rel, string(filepath.Separator)); err == nil && ok && slices.Contains(versions, v) {
		return v
	}
	return ""
}

// deployNext makes sure the server's path holds a build that no
// generation runs yet, deploying the next build of the server's example
// unless the test deployed one, and returns its version.
func (s *server) deployNext() string {
	s.t.Helper()
	if s.foreign {
		s.t.Fatalf("an upgrade to %s, which holds no build of a known version: deploy a build first", s.bin)
	}
	if s.pending == "" {
		s.deploy(s.src)
	}
	return s.pending
}

// checkRuns checks that generation pid runs the build of version at exe:
// its start line names the version, and /proc/PID/exe, while it still
// runs, names exe itself, not a file since replaced ("exe (deleted)").
func (s *server) checkRuns(pid int, version, exe string) {
	s.t.Helper()
	got := startVersion(s.logs.String(), pid)
	require.Equal(s.t, version, got, "generation %d should run the build just deployed, version %q, and log it at start\nlogs:\n%s", pid, version, s.logs)
	if link, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil {
		want, err := filepath.EvalSymlinks(exe)
		require.NoError(s.t, err)
		require.Equal(s.t, want, link, "generation %d should run the file at %s", pid, exe)
	}
}

// startVersion is the version that generation pid logged at start ("" if
// it logged none).
func startVersion(logs string, pid int) string {
	m := regexp.MustCompile(fmt.Sprintf(`msg=start pid=%d version=(\S+)`, pid)).FindStringSubmatch(logs)
	if m == nil {
		return ""
	}
	return m[1]
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return data
}

// pid is the pid the pid file names now (0 if none).
func (s *server) pid() int {
	b, err := os.ReadFile(s.pidFile)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// waitPID waits until the pid file names pid.
func (s *server) waitPID(pid int) {
	s.t.Helper()
	waitFor(s.t, fmt.Sprintf("pid file to name %d\nlogs:\n%s", pid, s.logs), func() bool { return s.pid() == pid })
}

// addr returns the concrete address of the listener registered as name
// (e.g. "tcp:127.0.0.1:0"), read from the first generation's log.
func (s *server) addr(name string) string {
	s.t.Helper()
	re := regexp.MustCompile(`msg=listening .*listener=` + regexp.QuoteMeta(name) + ` .*addr=(\S+)`)
	var addr string
	waitFor(s.t, "listening log line for "+name, func() bool {
		if m := re.FindStringSubmatch(s.logs.String()); m != nil {
			addr = m[1]
			return true
		}
		return false
	})
	return addr
}

// upgrade deploys the next build (unless the test deployed one), sends
// SIGUSR1 and waits until a new generation runs that build and is ready,
// and the old one has exited with status 0. It returns the new pid.
func (s *server) upgrade() int {
	s.t.Helper()
	old := s.pid()
	pid := s.startUpgrade()
	s.waitExit(old, 0)
	return pid
}

// startUpgrade deploys the next build (unless the test deployed one),
// sends SIGUSR1 and waits until a new generation runs that build and is
// ready, leaving the old one to drain. It returns the new pid.
func (s *server) startUpgrade() int {
	s.t.Helper()
	version := s.deployNext()
	old := s.pid()
	require.NoError(s.t, syscall.Kill(old, syscall.SIGUSR1), "signalling %d", old)
	var pid int
	waitFor(s.t, fmt.Sprintf("a new generation after %d\nlogs:\n%s", old, s.logs), func() bool {
		pid = s.pid()
		return pid != 0 && pid != old
	})
	s.mu.Lock()
	s.pids = append(s.pids, pid)
	s.mu.Unlock()
	s.waitReadyLog(pid)
	s.upgraded(pid, version, s.bin)
	return pid
}

// upgraded checks that the new generation pid runs the build of version
// at exe, which is now the serving one.
func (s *server) upgraded(pid int, version, exe string) {
	s.t.Helper()
	s.checkRuns(pid, version, exe)
	s.running, s.pending = version, ""
}

// waitReadyLog waits for generation pid's "ready" log line: Ready writes
// the pid file first and logs after it has told its parent and closed the
// readiness pipe, so fd counts taken after it are settled.
func (s *server) waitReadyLog(pid int) {
	s.t.Helper()
	line := fmt.Sprintf("msg=ready pid=%d ", pid)
	waitFor(s.t, line, func() bool { return strings.Contains(s.logs.String(), line) })
}

// waitExit waits for generation pid to exit and checks its exit status.
//
// The first generation is our child. Every other one is the child of the
// generation before it, and is re-parented to us (a child subreaper) if
// that one exits first: then we reap it and read its status. A generation
// that exits while its parent still runs (a middle generation whose parent
// drains longer) is reaped by that parent, whose exec.Cmd.Wait takes the
// status and tells nobody. Its own last log line then stands in: every
// example logs "level=INFO msg=exit pid=N" just before main returns 0, and
// only a signal could change the status after it. So such a generation
// passes only for status 0, with that line, and no Go crash report
// anywhere in the logs.
func (s *server) waitExit(pid, status int) {
	s.t.Helper()
	defer func() { s.exited[pid] = true }()
	if s.first != nil && pid == s.first.Process.Pid {
		done := make(chan error, 1)
		go func() { done <- s.first.Wait() }()
		select {
		case err := <-done:
			if status == 0 {
				require.NoError(s.t, err, "first generation %d should exit 0\nlogs:\n%s", pid, s.logs)
			} else {
				require.ErrorContains(s.t, err, fmt.Sprintf("exit status %d", status), "first generation %d's exit status\nlogs:\n%s", pid, s.logs)
			}
		case <-time.After(waitTimeout):
			s.t.Fatalf("first generation %d did not exit\nlogs:\n%s", pid, s.logs)
		}
		return
	}
	ws, err := reap(pid, waitTimeout)
	if errors.Is(err, unix.ECHILD) {
		require.Zero(s.t, status, "generation %d was reaped by its parent: only a clean exit can be told from its logs", pid)
		logs := s.logs.String()
		require.Regexp(s.t, fmt.Sprintf(`level=INFO msg=exit pid=%d(\s|$)`, pid), logs,
			"generation %d, reaped by its parent, should have logged its clean exit\nlogs:\n%s", pid, logs)
		require.NotRegexp(s.t, `(?m)^(panic: |fatal error: )`, logs, "no generation should have crashed")
		return
	}
	require.NoError(s.t, err, "reaping generation %d\nlogs:\n%s", pid, s.logs)
	require.True(s.t, ws.Exited(), "generation %d should exit, not %v\nlogs:\n%s", pid, ws, s.logs)
	require.Equal(s.t, status, ws.ExitStatus(), "exit status of generation %d\nlogs:\n%s", pid, s.logs)
}

// stop sends SIGTERM to the serving generation and waits for its exit.
func (s *server) stop() {
	s.t.Helper()
	pid := s.pid()
	require.NoError(s.t, syscall.Kill(pid, syscall.SIGTERM))
	s.waitExit(pid, 0)
}

// kill ends every generation still alive; it runs at cleanup.
func (s *server) kill() {
	s.mu.Lock()
	pids := append([]int(nil), s.pids...)
	s.mu.Unlock()
	for _, pid := range pids {
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			reap(pid, time.Second)
		}
	}
	if s.t.Failed() {
		s.t.Logf("server logs:\n%s", s.logs)
	}
}

// reap waits up to timeout for pid to exit and reaps it. If pid is not
// our child it waits until the process is gone, and returns ECHILD: its
// parent reaped it. A process that becomes our child while it runs (its
// parent exited first) is reaped by us when it exits.
func reap(pid int, timeout time.Duration) (unix.WaitStatus, error) {
	deadline := time.Now().Add(timeout)
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		switch {
		case err == nil && wpid == pid:
			return ws, nil
		case errors.Is(err, unix.ECHILD) && !processExists(pid):
			return 0, err
		case err != nil && !errors.Is(err, unix.ECHILD) && !errors.Is(err, unix.EINTR):
			return 0, err
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("process %d still running after %v", pid, timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// processExists reports whether pid has a /proc entry: a zombie still has.
func processExists(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// waitFor polls cond every few milliseconds up to waitTimeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fdCount is the number of open fds of process pid.
func fdCount(t *testing.T, pid int) int {
	t.Helper()
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	return len(entries)
}

// fdKinds lists what the open fds of process pid are (a file's path, or
// "socket", "pipe", "anon_inode"), sorted, without fd or inode numbers, so
// that two processes compare equal.
func fdKinds(t *testing.T, pid int) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	channels := unixChannelInodes(t)
	var kinds []string
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		kind, inode, _ := strings.Cut(target, ":[")
		if k, ok := channels[strings.TrimSuffix(inode, "]")]; ok && kind == "socket" {
			kind = k // the mailbox or the hand-off channel, not a listener or a connection
		}
		kinds = append(kinds, kind)
	}
	slices.Sort(kinds)
	return kinds
}

// unixChannelInodes maps the inodes of the Unix datagram and seqpacket
// sockets on this machine (/proc/net/unix, types 0002 and 0005) to what
// they are to a tcpgrace process: the service's mailbox, or the hand-off
// channel between two generations.
func unixChannelInodes(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/net/unix")
	require.NoError(t, err)
	inodes := map[string]string{}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		// Num RefCount Protocol Flags Type St Inode [Path]
		f := strings.Fields(line)
		switch {
		case len(f) < 7:
		case f[4] == "0002":
			inodes[f[6]] = "unix datagram socket"
		case f[4] == "0005":
			inodes[f[6]] = "unix seqpacket socket"
		}
	}
	return inodes
}

// settledFDCount is fdCount once it has not changed for 250 ms: a
// generation closes some fds a moment after its parent exits (its end of
// the hand-off channel, when it reads the parent's end closed).
func settledFDCount(t *testing.T, pid int) int {
	t.Helper()
	n, since := fdCount(t, pid), time.Now()
	deadline := time.Now().Add(waitTimeout)
	for time.Since(since) < 250*time.Millisecond {
		require.False(t, time.Now().After(deadline), "process %d's fd count did not settle within %v", pid, waitTimeout)
		time.Sleep(20 * time.Millisecond)
		if m := fdCount(t, pid); m != n {
			n, since = m, time.Now()
		}
	}
	return n
}

// idleFDKinds waits until process pid holds no sockets but its listeners
// (connections of a finished load may take a moment to close), then
// returns fdKinds.
func idleFDKinds(t *testing.T, pid, listeners int) []string {
	t.Helper()
	var kinds []string
	waitFor(t, fmt.Sprintf("process %d to hold only its %d listening sockets", pid, listeners), func() bool {
		kinds = fdKinds(t, pid)
		return slices.Index(kinds, "socket") >= 0 && len(slices.DeleteFunc(slices.Clone(kinds), func(k string) bool { return k != "socket" })) == listeners
	})
	return kinds
}

// echoOnce connects, sends one line and checks the echo, all within
// requestBudget.
func echoOnce(network, addr, line string) error {
	return echoCtx(context.Background(), network, addr, line)
}

// echoCtx is echoOnce, cut short when ctx ends.
func echoCtx(ctx context.Context, network, addr, line string) error {
	begin := time.Now()
	ctx, cancel := context.WithTimeout(ctx, requestBudget)
	defer cancel()
	fail := func(what string, err error) error {
		return fmt.Errorf("%s after %v: %w", what, time.Since(begin).Round(time.Millisecond), err)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return fail("dial", err)
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	defer context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })()
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return fail("write", err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fail("read", err)
	}
	if got != line+"\n" {
		return fmt.Errorf("sent %q, got %q", line, got)
	}
	return nil
}

// failUpgrade sends SIGUSR1 and waits for the serving generation to log a
// failed (or refused) upgrade whose error contains reason; the generation
// must stay.
func (s *server) failUpgrade(reason string) {
	s.t.Helper()
	pid := s.pid()
	before := len(upgradeNotDoneRe.FindAllStringIndex(s.logs.String(), -1))
	require.NoError(s.t, syscall.Kill(pid, syscall.SIGUSR1))
	var line string
	waitFor(s.t, "a logged upgrade failure\nlogs:\n"+s.logs.String(), func() bool {
		logs := s.logs.String()
		found := upgradeNotDoneRe.FindAllStringIndex(logs, -1)
		if len(found) == before {
			return false
		}
		line, _, _ = strings.Cut(logs[found[len(found)-1][0]:], "\n")
		return true
	})
	require.Contains(s.t, line, reason, "the upgrade error should say why")
	require.Equal(s.t, pid, s.pid(), "a failed upgrade leaves the pid file alone")
	require.NoError(s.t, syscall.Kill(pid, 0), "the serving generation is still alive")
}

// upgradeNotDoneRe finds the log line of an upgrade that failed or was
// refused.
var upgradeNotDoneRe = regexp.MustCompile(`msg="upgrade (failed|refused)"`)

// processAlive is nil if pid runs (and is not a zombie).
func processAlive(pid int) error {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return fmt.Errorf("process %d: %w", pid, err)
	}
	if i := strings.LastIndexByte(string(b), ')'); i > 0 && strings.HasPrefix(string(b[i+1:]), " Z") {
		return fmt.Errorf("process %d is a zombie", pid)
	}
	return nil
}

// deployAs copies what deploying src would deploy to dst (beside the
// server's binary, say) and returns its version; the server's path is
// left alone.
func (s *server) deployAs(src, dst string) string {
	s.t.Helper()
	version, build := s.nextBuild(src)
	require.NoError(s.t, copyExecutable(dst, build, 0o755))
	return version
}

// liveGenerations counts the generations still running.
func (s *server) liveGenerations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, pid := range s.pids {
		if processAlive(pid) == nil {
			n++
		}
	}
	return n
}

// writeExecutable writes data to a new file at path, as os.WriteFile
// does, holding syscall.ForkLock for reading: no process that this test
// binary forks meanwhile (for a parallel test) can inherit the file's
// write fd, which would make every exec of the file fail with ETXTBSY
// until that child had exec'd in turn (golang/go#22315).
func writeExecutable(path string, data []byte, mode os.FileMode) error {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	return os.WriteFile(path, data, mode)
}

// copyExecutable copies the file at src to a new file at path (mode, as
// os.WriteFile takes it) without reading it into memory (copy_file_range),
// holding syscall.ForkLock for reading as writeExecutable does.
func copyExecutable(path, src string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("copying %s to %s: %w", src, path, err)
	}
	return nil
}

// startRetryingBusy starts cmd, trying again for a while on ETXTBSY: a
// binary just copied into place is "busy" while a process forked meanwhile
// by a parallel test still holds the copy's write fd until its own exec
// (golang/go#22315).
func startRetryingBusy(cmd *exec.Cmd) error {
	for i := 0; ; i++ {
		err := cmd.Start()
		if !errors.Is(err, syscall.ETXTBSY) || i == 50 {
			return err
		}
		time.Sleep(10 * time.Millisecond)
		cmd.Process, cmd.ProcessState, cmd.Err = nil, nil, nil
	}
}
