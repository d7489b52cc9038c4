package tests

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// A real systemd (PID 1 of fresh PID, mount, UTS, IPC and cgroup
// namespaces, with its own cgroup2 tree, /run and /etc/systemd/system)
// for the tests in systemd_units_test.go. It shares the host's network
// namespace and file system otherwise: the units' servers listen on the
// host's loopback and run binaries from a temp dir.

// systemdBinary is systemd's manager, where Debian and Fedora install it.
const systemdBinary = "/usr/lib/systemd/systemd"

// systemdTarget is the unit the test's systemd boots into: nothing but
// what the test starts runs.
const systemdTarget = "tcpgrace-test.target"

// systemdTimeout bounds the boot, each systemctl call and the power-off.
const systemdTimeout = 20 * time.Second

// bootScript runs as the namespaces' first process: $1 holds the unit
// files, $2 is the terminal that stands in for the console (systemd
// writes nothing to a console that is not a terminal). Mounts made here
// stay in the new mount namespace (unshare makes it private).
var bootScript = `#!/bin/sh
set -e
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /etc/systemd/system
cp "$1"/* /etc/systemd/system/
# Nothing of a real boot may run: its units act on the host's file system
# (systemd-tmpfiles-setup empties /tmp). A unit that needs them fails.
for u in ` + strings.Join(maskedUnits, " ") + `; do ln -s /dev/null /etc/systemd/system/$u; done
umount -l /sys/fs/cgroup 2>/dev/null || true
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup
mount --bind "$2" /dev/console
mount --make-rshared /
# container= tells systemd it runs in a container: at power-off its
# systemd-shutdown then unmounts only this namespace's mounts and leaves the
# host's swaps, loop, MD and DM devices alone.
exec env container=tcpgrace-test ` + systemdBinary + ` --system --log-target=console --log-level=info --unit=` + systemdTarget + `
`

// maskedUnits are masked in the test's systemd: the early-boot units
// that would act on the file system it shares with the host.
var maskedUnits = []string{"sysinit.target", "basic.target", "local-fs.target",
	"systemd-tmpfiles-setup.service", "systemd-tmpfiles-setup-dev.service",
	"systemd-tmpfiles-clean.service", "systemd-tmpfiles-clean.timer",
	"systemd-journald.service", "systemd-journald.socket", "systemd-udevd.service",
	"systemd-udev-trigger.service", "systemd-sysctl.service", "systemd-modules-load.service",
	"systemd-random-seed.service", "systemd-remount-fs.service", "systemd-sysusers.service"}

// systemd is one booted manager.
type systemd struct {
	t       *testing.T
	dir     string // units/, console.log, the services' files
	cgroup  string // the cgroup everything runs in, on the host's cgroup2 mount
	unshare *exec.Cmd
	exited  chan struct{} // closed when unshare has been reaped
	pid     int           // the manager, as seen from here
}

// skipWithoutSystemd skips a test that needs a real systemd, saying what
// is missing.
func skipWithoutSystemd(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: systemd runs as PID 1 of new namespaces")
	}
	if _, err := os.Stat(systemdBinary); err != nil {
		t.Skipf("needs systemd (%s): %v", systemdBinary, err)
	}
	for _, tool := range []string{"unshare", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s(1) (util-linux)", tool)
		}
	}
	if cgroup2Mount() == "" {
		t.Skip("needs a cgroup2 mount (/sys/fs/cgroup or /sys/fs/cgroup/unified)")
	}
}

// cgroup2Mount is where the host's cgroup2 hierarchy is mounted: the
// whole of /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a
// hybrid one.
func cgroup2Mount() string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options... - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields := strings.Fields(pre)
		if ok && len(fields) >= 5 && strings.HasPrefix(post, "cgroup2 ") {
			return fields[4]
		}
	}
	return ""
}

// bootSystemd starts a systemd whose /etc/systemd/system holds units
// (file name -> contents, "@DIR@" replaced by the test's dir), and waits
// until it has reached its target. Everything it started is gone, and its
// cgroups removed, when the test ends.
func bootSystemd(t *testing.T, dir string, units map[string]string) *systemd {
	t.Helper()
	skipWithoutSystemd(t)
	s := &systemd{t: t, dir: dir, exited: make(chan struct{})}
	unitDir := filepath.Join(dir, "units")
	require.NoError(t, os.MkdirAll(unitDir, 0o755), "the unit dir")
	units[systemdTarget] = "[Unit]\nDescription=tcpgrace test\nDefaultDependencies=no\n"
	for name, text := range units {
		// Default dependencies pull in a real boot (sysinit.target),
		// whose units act on the host: masked, but refused here first.
		require.Contains(t, text, "DefaultDependencies=no", "unit %s must not pull in a real boot", name)
		text = strings.ReplaceAll(text, "@DIR@", dir)
		require.NoError(t, os.WriteFile(filepath.Join(unitDir, name), []byte(text), 0o644), "writing %s", name)
	}
	script := filepath.Join(dir, "boot.sh")
	require.NoError(t, os.WriteFile(script, []byte(bootScript), 0o755), "the boot script")
	console := s.console()

	s.cgroup = filepath.Join(cgroup2Mount(), fmt.Sprintf("tcpgrace-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
	require.NoError(t, os.Mkdir(s.cgroup, 0o755), "a cgroup of our own")
	t.Cleanup(s.cleanup) // registered before anything runs in it
	cg, err := os.Open(s.cgroup)
	require.NoError(t, err, "opening the cgroup")
	defer cg.Close()
	s.unshare = exec.Command("unshare", "--pid", "--fork", "--kill-child", "--mount", "--uts", "--ipc", "--cgroup", "--mount-proc",
		script, unitDir, console)
	out, err := os.Create(s.path("unshare.log"))
	require.NoError(t, err, "unshare's log")
	defer out.Close()
	s.unshare.Stdout, s.unshare.Stderr = out, out
	// If the test binary dies without its cleanups (a go test -timeout
	// panic), unshare is killed, and it kills the namespaces' PID 1.
	s.unshare.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd()), Pdeathsig: syscall.SIGKILL}
	require.NoError(t, s.unshare.Start(), "starting unshare")
	go func() {
		s.unshare.Wait()
		close(s.exited)
	}()
	s.waitFor("systemd to start", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", s.unshare.Process.Pid, s.unshare.Process.Pid))
		if err == nil && len(strings.Fields(string(b))) == 1 {
			s.pid = namespaceInit(t, s.unshare.Process.Pid)
			return processComm(s.pid) == "systemd"
		}
		return false
	})
	s.waitFor(systemdTarget+" to be reached", func() bool {
		out, _ := s.systemctl("is-active", systemdTarget)
		return out == "active"
	})
	return s
}

// console opens a pseudo-terminal whose output goes to console.log,
// and returns the path of its terminal side.
func (s *systemd) console() string {
	s.t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	require.NoError(s.t, err, "opening a pseudo-terminal")
	require.NoError(s.t, unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0), "unlocking the pseudo-terminal")
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	require.NoError(s.t, err, "the pseudo-terminal's number")
	log, err := os.Create(s.path("console.log"))
	require.NoError(s.t, err, "the console log")
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			log.Write(buf[:n])
			switch {
			case errors.Is(err, os.ErrClosed):
				return
			case err != nil:
				// EIO while no terminal side is open: before systemd opens
				// it, and after it hangs the console up at start.
				time.Sleep(10 * time.Millisecond)
			}
		}
	}()
	s.t.Cleanup(func() { // after the manager is gone: registered first, run last
		ptmx.Close()
		<-copied
		log.Close()
	})
	return fmt.Sprintf("/dev/pts/%d", n)
}

// path is name in the test's dir.
func (s *systemd) path(name string) string { return filepath.Join(s.dir, name) }

// processComm is the command name of pid, "" if it is gone.
func processComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// waitFor polls cond until it holds, failing the test after
// systemdTimeout or when the manager is gone. There is no event to wait
// for from outside the namespaces: unit states are polled.
func (s *systemd) waitFor(what string, cond func() bool) {
	s.t.Helper()
	deadline := time.Now().Add(systemdTimeout)
	for !cond() {
		select {
		case <-s.exited:
			s.t.Fatalf("systemd exited while waiting for %s\n%s", what, s.logs())
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("timed out after %v waiting for %s\n%s", systemdTimeout, what, s.logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// systemctl runs systemctl inside the namespaces and returns its output,
// trimmed.
func (s *systemd) systemctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), systemdTimeout)
	defer cancel()
	argv := append([]string{"-t", fmt.Sprint(s.pid), "-m", "-p", "-u", "-i", "-C", "systemctl"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", argv...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// mustSystemctl is systemctl that fails the test on an error.
func (s *systemd) mustSystemctl(args ...string) string {
	s.t.Helper()
	out, err := s.systemctl(args...)
	require.NoError(s.t, err, "systemctl %s: %s\n%s", strings.Join(args, " "), out, s.logs())
	return out
}

// show is one property of unit.
func (s *systemd) show(unit, prop string) string {
	s.t.Helper()
	return s.mustSystemctl("show", "--value", "-p", prop, unit)
}

// waitShow waits until unit's prop satisfies ok.
func (s *systemd) waitShow(unit, prop, what string, ok func(string) bool) string {
	s.t.Helper()
	var v string
	s.waitFor(fmt.Sprintf("%s's %s: %s", unit, prop, what), func() bool {
		v = s.show(unit, prop)
		return ok(v)
	})
	return v
}

// unitPIDs are the processes left in unit's cgroup, as seen from here;
// none once the unit is stopped (its cgroup is then removed).
func (s *systemd) unitPIDs(unit string) []string {
	b, err := os.ReadFile(filepath.Join(s.cgroup, "system.slice", unit, "cgroup.procs"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	require.NoError(s.t, err, "reading %s's cgroup", unit)
	return strings.Fields(string(b))
}

// logs is what the manager and the services wrote, for a failure report.
func (s *systemd) logs() string {
	var b strings.Builder
	for _, name := range []string{"unshare.log", "console.log", "service.log"} {
		data, _ := os.ReadFile(s.path(name))
		fmt.Fprintf(&b, "--- %s ---\n%s", name, data)
	}
	return b.String()
}

// cleanup powers the manager off, kills whatever is left in the cgroup
// if that takes too long, and removes every cgroup the test made.
func (s *systemd) cleanup() {
	if s.unshare != nil && s.unshare.Process != nil && s.pid != 0 {
		s.systemctl("poweroff", "--no-block")
		select {
		case <-s.exited:
		case <-time.After(systemdTimeout):
			s.t.Errorf("systemd did not power off within %v; killing the cgroup", systemdTimeout)
		}
	}
	if s.unshare != nil && s.unshare.Process != nil {
		os.WriteFile(filepath.Join(s.cgroup, "cgroup.kill"), []byte("1"), 0)
		select {
		case <-s.exited:
		case <-time.After(systemdTimeout):
			s.t.Errorf("unshare still runs after its cgroup was killed")
		}
	}
	var dirs []string
	filepath.WalkDir(s.cgroup, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	slices.Reverse(dirs) // children first
	for _, d := range dirs {
		var err error
		for range 100 { // a cgroup is busy for a moment after its last process is reaped
			if err = os.Remove(d); err == nil || errors.Is(err, fs.ErrNotExist) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.t.Errorf("removing cgroup %s: %v", d, err)
		}
	}
	if s.t.Failed() {
		s.t.Logf("systemd logs:\n%s", s.logs())
	}
}
