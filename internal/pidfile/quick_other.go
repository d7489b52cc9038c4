//go:build !unix

package pidfile

// writeQuick does nothing here: WriteHeld's portable path writes the
// file.
func writeQuick(path string, pid int) (h *Held, done bool, err error) { return nil, false, nil }

func closeFD(fd int) error { return nil }
