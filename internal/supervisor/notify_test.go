//go:build linux

package supervisor

import (
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

func TestParseNote(t *testing.T) {
	assert.Equal(t, map[string]string{"READY": "1", "STATUS": "a=b c", "MAINPID": "42"},
		parseNote("READY=1\nSTATUS=a=b c\n\nnonsense\n=x\nMAINPID=42\n"))
	assert.Empty(t, parseNote(""))
}

// TestNotifySocketCredentials: every message carries its sender's pid
// (SO_PASSCRED), and fds sent along are closed, not leaked.
func TestNotifySocketCredentials(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	n, err := newNotifySocket(slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	defer n.close()
	info, err := os.Stat(n.dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), info.Mode().Perm(), "only the supervisor's user enters the directory")
	notes := make(chan note, 4)
	n.start(notes)

	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"})
	require.NoError(t, err)
	defer c.Close()
	to := &net.UnixAddr{Name: n.path, Net: "unixgram"}
	_, err = c.WriteToUnix([]byte("READY=1\nSTATUS=up\n"), to)
	require.NoError(t, err)
	select {
	case m := <-notes:
		assert.Equal(t, os.Getpid(), m.pid, "the kernel vouches for the sender")
		assert.Equal(t, "1", m.fields["READY"])
		assert.Equal(t, "up", m.fields["STATUS"])
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
	}

	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	_, _, err = c.WriteMsgUnix([]byte("FDSTORE=1\n"), unix.UnixRights(int(r.Fd())), to)
	require.NoError(t, err)
	m := <-notes
	assert.Equal(t, "1", m.fields["FDSTORE"])

	// A message that stays queued while the reader is stopped is read by
	// the next reader (a self-upgrade's next image).
	n.stop(notes, func(note) { t.Error("nothing was sent") })
	_, err = c.WriteToUnix([]byte("STATUS=queued\n"), to)
	require.NoError(t, err)
	n.start(notes)
	assert.Equal(t, "queued", (<-notes).fields["STATUS"])
	n.stop(notes, func(note) {})
}

func TestHandOverVersion(t *testing.T) {
	h := handOver{V: stateVersion, Version: "v1", Sockets: []handedSocket{{Listen: Listen{Name: "tcp", Network: "tcp", Address: ":80"}, FD: 7}},
		Instances: []handedProcess{{PID: 10, Main: 10, Gen: 3, Phase: "serving"}}, NextGen: 3}
	b, err := json.Marshal(h)
	require.NoError(t, err)
	got, err := decodeHandOver(string(b))
	require.NoError(t, err)
	assert.Equal(t, h, *got)

	h.V = stateVersion + 1
	b, _ = json.Marshal(h)
	_, err = decodeHandOver(string(b))
	assert.ErrorContains(t, err, "hand-over version 2, this build reads 1")
	_, err = decodeHandOver("{")
	assert.ErrorContains(t, err, stateEnv)
}
