//go:build !unix

package tcpgrace

import (
	"errors"
	"os"
)

var errMailFull = errors.New("tcpgrace: mailbox full")

func newMailPair() (in, out *os.File, err error) { return nil, nil, ErrNotSupported }

func sendDatagram(out *os.File, b []byte) error { return ErrNotSupported }

func dupFile(f *os.File, name string) (*os.File, error) { return nil, ErrNotSupported }
