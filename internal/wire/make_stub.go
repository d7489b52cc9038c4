//go:build !unix

package wire

// maker is unused here: checkSocket fails first.
type maker struct{}

func (maker) make(en Entry) (socket, error) { return socket{}, ErrNotSupported }

func (maker) close() {}
