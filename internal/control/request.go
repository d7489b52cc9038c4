package control

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// readRequest reads one request line, of at most MaxRequestLen bytes,
// newline included (a request cut off by the end of the stream counts as
// a line); timeout is the read deadline the caller set, for the error.
func readRequest(r io.Reader, timeout time.Duration) (Request, error) {
	buf := make([]byte, 0, 512)
	chunk := make([]byte, 512)
	for {
		n, err := r.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if i := bytes.IndexByte(buf, '\n'); i >= 0 && i < MaxRequestLen {
			return ParseRequest(buf[:i])
		}
		if len(buf) >= MaxRequestLen {
			return Request{}, fmt.Errorf("request longer than %d bytes", MaxRequestLen)
		}
		var ne net.Error
		switch {
		case err == nil:
		case errors.Is(err, io.EOF) && len(buf) > 0:
			return ParseRequest(buf)
		case errors.Is(err, io.EOF):
			return Request{}, errors.New("closed without a request")
		case errors.As(err, &ne) && ne.Timeout():
			return Request{}, fmt.Errorf("no complete request within %v (%d bytes read)", timeout, len(buf))
		default:
			return Request{}, fmt.Errorf("reading the request: %w", err)
		}
	}
}
