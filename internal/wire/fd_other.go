//go:build !unix

package wire

func checkPipe(fd int) (uint64, error) { return 0, ErrNotSupported }

func probePipe(fd int, ino uint64) (same, noReader bool) { return false, false }

func checkSocket(en *Entry, fill bool) error { return ErrNotSupported }

func readerGone(fd int) bool { return true }

func checkMail(fd int) error { return ErrNotSupported }

func checkHandoff(fd int) error { return ErrNotSupported }

func quickCheck(en Entry) bool { return false }

func closeInherited(fds []int) {}
