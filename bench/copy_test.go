package bench

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// copySize is the payload of one BenchmarkFileToConn iteration.
const copySize = 16 << 20

// BenchmarkFileToConn serves a 16 MiB file over an accepted TCP
// connection with io.CopyN, as net/http serves a static file: through a
// plain listener, through the registry's tracked listener, and through a
// wrapper that hides the connection's ReadFrom (what the registry handed
// out before), which forces a copy through a user-space buffer instead of
// sendfile(2).
func BenchmarkFileToConn(b *testing.B) {
	path := filepath.Join(b.TempDir(), "payload")
	if err := os.WriteFile(path, make([]byte, copySize), 0o644); err != nil {
		b.Fatal(err)
	}
	plain := func(b *testing.B) net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		return ln
	}
	tracked := trackedListener
	b.Run("impl=plain", func(b *testing.B) { benchFileToConn(b, plain(b), path, false) })
	b.Run("impl=tracked", func(b *testing.B) { benchFileToConn(b, tracked(b), path, false) })
	b.Run("impl=hidden-readfrom", func(b *testing.B) { benchFileToConn(b, tracked(b), path, true) })
}

func benchFileToConn(b *testing.B, ln net.Listener, path string, hide bool) {
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	conn, err := ln.Accept()
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	var w io.Writer = conn
	if hide {
		w = struct{ net.Conn }{conn}
	}
	go io.Copy(io.Discard, client)
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(copySize)
	for b.Loop() {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyN(w, f, copySize); err != nil {
			b.Fatal(err)
		}
	}
}
