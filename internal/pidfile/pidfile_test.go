//go:build unix

package pidfile

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// nobody is the unprivileged user a helper runs as when the tests run as
// root, for whom a directory's permissions mean something.
const nobody = 65534

// helperEnv makes the re-executed test binary run one operation (see
// TestMain) instead of the tests: "write PATH PID" or "remove PATH PID".
const helperEnv = "PIDFILE_TEST_HELPER"

func TestMain(m *testing.M) {
	if op := os.Getenv(helperEnv); op != "" {
		path, pid := os.Args[1], atoi(os.Args[2])
		var err error
		if op == "write" {
			err = Write(path, pid)
		} else {
			err = Remove(path, pid)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	require.NoError(t, err, "stat %s", path)
	return fi.Sys().(*syscall.Stat_t).Ino
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// TestWriteReplaces: Write renames a new file into place, 0644, whatever
// was there, and leaves no temporary file behind.
func TestWriteReplaces(t *testing.T) {
	for _, old := range []string{"", "999999999\n", "garbage"} {
		t.Run(fmt.Sprintf("old=%q", old), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "app.pid")
			var oldIno uint64
			if old != "" {
				require.NoError(t, os.WriteFile(path, []byte(old), 0o600))
				oldIno = inode(t, path)
			}
			require.NoError(t, Write(path, 4242))
			b, err := os.ReadFile(path)
			require.NoError(t, err, "the pid file exists after Write")
			assert.Equal(t, "4242\n", string(b), "the pid file holds the pid and a newline")
			assert.NotEqual(t, oldIno, inode(t, path), "a new file is renamed into place, never rewritten")
			fi, err := os.Stat(path)
			require.NoError(t, err)
			assert.Equal(t, fs.FileMode(0o644), fi.Mode().Perm(), "readable by all")
			assert.Equal(t, []string{"app.pid"}, names(t, dir), "no temporary file is left")
		})
	}
}

// TestWriteMissingDirectory: the error names the path and says why, and
// the directory is not created.
func TestWriteMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "app.pid")
	err := Write(path, 1)
	require.Error(t, err)
	assert.ErrorIs(t, err, fs.ErrNotExist, "the directory does not exist")
	assert.Contains(t, err.Error(), "writing pid file "+path, "the error names the pid file")
	_, err = os.Stat(filepath.Dir(path))
	assert.ErrorIs(t, err, fs.ErrNotExist, "Write does not create the directory")
}

func TestRead(t *testing.T) {
	for _, c := range []struct {
		name, content string
		want          int
	}{
		{"pid", "123\n", 123},
		{"no newline", "123", 123},
		{"spaces", "  77 \n", 77},
		{"empty", "", 0},
		{"garbage", "abc\n", 0},
		{"two lines", "1\n2\n", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "app.pid")
			require.NoError(t, os.WriteFile(path, []byte(c.content), 0o644))
			assert.Equal(t, c.want, Read(path), "%q", c.content)
		})
	}
	assert.Zero(t, Read(filepath.Join(t.TempDir(), "none")), "no file: no pid")
}

// TestRemove: only a file that names pid is removed; another process's,
// an empty one and a missing one are left as they are, without error.
func TestRemove(t *testing.T) {
	for _, c := range []struct {
		name    string
		content *string
		gone    bool
	}{
		{"ours", ptr("4242\n"), true},
		{"another process's", ptr("1\n"), false},
		{"empty", ptr(""), false},
		{"missing", nil, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "app.pid")
			if c.content != nil {
				require.NoError(t, os.WriteFile(path, []byte(*c.content), 0o644))
			}
			require.NoError(t, Remove(path, 4242))
			b, err := os.ReadFile(path)
			if c.gone {
				assert.ErrorIs(t, err, fs.ErrNotExist, "the file is gone")
				return
			}
			require.NoError(t, err, "the file stays")
			assert.Equal(t, *c.content, string(b), "the file is not touched")
		})
	}
}

func ptr(s string) *string { return &s }

// TestReadOnlyDirectory: in a directory this process may not write (the
// pid file made for the service's user in a root-owned /run), Write
// writes the existing file in place and Remove empties it, so that it
// names no process; a file that names another process is left alone.
func TestReadOnlyDirectory(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.pid")
	require.NoError(t, os.WriteFile(path, []byte("1\n"), 0o644))
	run := helper(t, dir, path)
	ino := inode(t, path)

	require.NoError(t, run("write", 4242), "Write falls back to writing in place")
	assert.Equal(t, "4242\n", string(must(os.ReadFile(path))), "the pid is written")
	assert.Equal(t, ino, inode(t, path), "the same file, written in place")
	assert.Equal(t, []string{"app.pid"}, names(t, dir), "no temporary file is left")

	require.NoError(t, run("remove", 7), "another process's pid: nothing to do")
	assert.Equal(t, "4242\n", string(must(os.ReadFile(path))), "another process's file is not touched")

	require.NoError(t, run("remove", 4242), "Remove falls back to emptying the file")
	assert.Empty(t, string(must(os.ReadFile(path))), "the file is emptied, so that it names no process")
	assert.Equal(t, ino, inode(t, path), "the file stays")
}

// TestReadOnlyDirectoryNoFile: with neither a directory it may write nor
// a file to write in place, Write fails and says both.
func TestReadOnlyDirectoryNoFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.pid")
	run := helper(t, dir, path)
	err := run("write", 4242)
	require.Error(t, err, "nowhere to write")
	assert.Contains(t, err.Error(), "writing pid file "+path, "the error names the pid file")
	assert.Contains(t, err.Error(), "(and in place:", "the error says the fallback failed too")
}

// helper makes dir read-only for the operations run returns, which run
// Write or Remove in a re-executed test binary: as nobody, with dir
// root's and 0755 and path nobody's, when the tests run as root (for
// whom permissions mean nothing); else as this user, with dir 0555.
func helper(t *testing.T, dir, path string) func(op string, pid int) error {
	bin, cred := os.Args[0], (*syscall.Credential)(nil)
	if os.Geteuid() == 0 {
		bin = filepath.Join(t.TempDir(), "pidfile.test")
		require.NoError(t, os.WriteFile(bin, must(os.ReadFile(os.Args[0])), 0o755))
		for _, d := range []string{dir, filepath.Dir(dir), filepath.Dir(bin)} {
			require.NoError(t, os.Chmod(d, 0o755), "others may enter %s, only root may write", d)
		}
		if _, err := os.Stat(path); err == nil {
			require.NoError(t, os.Chown(path, nobody, nobody))
		}
		cred = &syscall.Credential{Uid: nobody, Gid: nobody}
	} else {
		require.NoError(t, os.Chmod(dir, 0o555))
		t.Cleanup(func() { os.Chmod(dir, 0o755) })
	}
	return func(op string, pid int) error {
		cmd := exec.Command(bin, path, strconv.Itoa(pid))
		cmd.Env = append(os.Environ(), helperEnv+"="+op)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w", out, err)
		}
		return nil
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// heldFDs lists this process's fds open on the file at path, or on it
// once unlinked ("path (deleted)").
func heldFDs(t *testing.T, path string) (open, deleted []int) {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	for _, e := range entries {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil {
			continue
		}
		fd, _ := strconv.Atoi(e.Name())
		switch link {
		case path:
			open = append(open, fd)
		case path + " (deleted)":
			deleted = append(deleted, fd)
		}
	}
	return open, deleted
}

// TestWriteHeld: WriteHeld keeps the file it renamed into place open,
// so that the next writer's rename only unlinks it; Close lets it go.
// Write keeps nothing open. A temp name taken (a crashed process's with
// this pid) is left alone, and the file is written all the same.
func TestWriteHeld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.pid")
	first, err := WriteHeld(path, 4242)
	require.NoError(t, err)
	open, _ := heldFDs(t, path)
	assert.Len(t, open, 1, "the file written is held open")

	second, err := WriteHeld(path, 4343)
	require.NoError(t, err)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "4343\n", string(b), "the second writer's pid is in place")
	open, deleted := heldFDs(t, path)
	assert.Len(t, open, 1, "the second file is held open")
	assert.Len(t, deleted, 1, "the first, renamed over, is still held by its writer")
	require.NoError(t, first.Close())
	_, deleted = heldFDs(t, path)
	assert.Empty(t, deleted, "Close lets the first file go")
	require.NoError(t, second.Close())
	require.NoError(t, second.Close(), "a second Close does nothing")
	open, _ = heldFDs(t, path)
	assert.Empty(t, open)

	require.NoError(t, Write(path, 4444))
	open, _ = heldFDs(t, path)
	assert.Empty(t, open, "Write holds nothing")
	assert.Equal(t, []string{"app.pid"}, names(t, dir), "no temporary file is left")

	stale := filepath.Join(dir, ".app.pid.4545.tmp")
	require.NoError(t, os.WriteFile(stale, []byte("a crashed writer's"), 0o600))
	h, err := WriteHeld(path, 4545)
	require.NoError(t, err, "a taken temp name is no error")
	assert.Nil(t, h, "the file was written another way, and nothing is held")
	b, err = os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "4545\n", string(b))
	b, err = os.ReadFile(stale)
	require.NoError(t, err, "the taken temp file is left alone")
	assert.Equal(t, "a crashed writer's", string(b))
}
