//go:build !unix

package handoff

import (
	"os"
	"time"
)

// Conn is one end of a hand-off channel; without Unix sockets there is
// none.
type Conn struct{}

// Pair fails with ErrNotSupported.
func Pair() (*Conn, *Conn, error) { return nil, nil, ErrNotSupported }

// NewConn fails with ErrNotSupported.
func NewConn(f *os.File) (*Conn, error) { return nil, ErrNotSupported }

// File fails with ErrNotSupported.
func (c *Conn) File() (*os.File, error) { return nil, ErrNotSupported }

// Close does nothing.
func (c *Conn) Close() error { return nil }

func (c *Conn) setDeadline(t time.Time) error                  { return ErrNotSupported }
func (c *Conn) send(h Header, payload []byte, fds []int) error { return ErrNotSupported }
func (c *Conn) sendNow(h Header, payload []byte) error         { return ErrNotSupported }
func (c *Conn) recv() (frame, error)                           { return frame{}, ErrNotSupported }
func fdOf(f *os.File) (int, error)                             { return -1, ErrNotSupported }
func closeFD(fd int)                                           {}
