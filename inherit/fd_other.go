//go:build !unix

package inherit

func checkPipe(fd int) error { return ErrNotSupported }

func checkSocket(en *Entry, fill bool) error { return ErrNotSupported }
