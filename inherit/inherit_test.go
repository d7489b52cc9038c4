//go:build linux

package inherit_test

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/tcpgrace/tcpgrace/inherit"
	"github.com/tcpgrace/tcpgrace/internal/wire"
)

// childEnv makes the test binary the child: it takes what it was handed
// with the public API and reports on stdout.
const childEnv = "INHERIT_PUBLIC_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(child())
	}
	os.Exit(m.Run())
}

// child claims "web", serves one connection on it, says ready, and checks
// what the rest of the API says.
func child() int {
	files, err := inherit.Take()
	if err != nil {
		fmt.Println("take:", err)
		return 1
	}
	if _, err := inherit.Take(); !errors.Is(err, inherit.ErrTaken) {
		fmt.Println("second take:", err)
		return 1
	}
	if _, err := files.Listener("web", "tcp", "127.0.0.1:1"); err == nil {
		fmt.Println("a mismatched address was accepted")
		return 1
	} else {
		fmt.Println("mismatch:", err)
	}
	ln, err := files.Listener("web", "tcp", os.Getenv("WEB_ADDR"))
	if err != nil || ln == nil {
		fmt.Println("listener:", ln, err)
		return 1
	}
	none, err := files.Listener("other", "tcp", "127.0.0.1:0")
	fmt.Println("not inherited:", none, err)
	fmt.Println("generation:", files.Generation())
	fmt.Println("close:", files.Close()) // "spare" is unclaimed: closed
	if err := files.Ready(); err != nil {
		fmt.Println("ready:", err)
		return 1
	}
	c, err := ln.Accept()
	if err != nil {
		fmt.Println("accept:", err)
		return 1
	}
	c.Write([]byte("hello from the child\n"))
	c.Close()
	return 0
}

// TestTakeServesInherited hands a child a listener and a spare socket the
// way a tcpgrace parent does, and checks that the public API claims the
// one, closes the other, says ready and serves.
func TestTakeServesInherited(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	spare, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer spare.Close()
	lf, err := ln.(*net.TCPListener).File()
	require.NoError(t, err)
	sf, err := spare.(*net.TCPListener).File()
	require.NoError(t, err)
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()

	env := &wire.Env{Generation: 3, ReadyFD: 3, Entries: []wire.Entry{
		{Name: "web", FD: 4, Network: "tcp", Address: ln.Addr().String()},
		{Name: "spare", FD: 5, Network: "tcp", Address: spare.Addr().String()},
	}}
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), childEnv+"=1", "WEB_ADDR="+ln.Addr().String(),
		wire.EnvFDs+"="+env.Encode(os.Getpid()))
	cmd.ExtraFiles = []*os.File{w, lf, sf}
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	w.Close()
	lf.Close()
	sf.Close()

	word := make([]byte, 1)
	r.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = r.Read(word)
	require.NoError(t, err, "the child's word on the readiness pipe; child said:\n%s", &out)
	assert.Equal(t, "R", string(word), "the child says ready")
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	line, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	require.NoError(t, err)
	assert.Equal(t, "hello from the child\n", line, "the child serves the inherited listener")
	require.NoError(t, cmd.Wait(), "child:\n%s", &out)

	report := out.String()
	assert.Contains(t, report, `"web" was inherited as tcp `+ln.Addr().String()+", asked for as tcp 127.0.0.1:1",
		"a mismatch names the socket, what it was inherited as and what was asked for")
	assert.Contains(t, report, "not inherited: <nil> <nil>", "a name not inherited is (nil, nil)")
	assert.Contains(t, report, "generation: 3")
	assert.Contains(t, report, "close: <nil>")
}
