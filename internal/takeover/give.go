package takeover

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/tcpgrace/tcpgrace/internal/control"
	"github.com/tcpgrace/tcpgrace/internal/handoff"
)

// Give answers a takeover request on conn, the requester's connection to
// the control socket: it replies with offer and the taker's end of a new
// hand-off channel, then hands files over on that channel in one
// transaction, its item carrying value (a TCPGRACE_FDS value whose fd
// ListenFDsStart+i is files[i]). On nil the taker holds every file and
// Give has closed them; on any error the caller still owns all of them.
// ctx bounds the whole exchange.
func Give(ctx context.Context, conn net.Conn, offer control.TakeoverOffer, value string, files []*os.File) error {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		return fmt.Errorf("tcpgrace: takeover: the control connection is a %T, not a Unix socket", conn)
	}
	ours, theirs, err := handoff.Pair()
	if err != nil {
		return err
	}
	line, err := json.Marshal(control.Reply{V: control.Version, OK: true, Takeover: &offer})
	var f *os.File
	if err == nil {
		f, err = theirs.File()
	}
	if err == nil {
		err = sendWithFile(ctx, uc, append(line, '\n'), f)
		f.Close()
	}
	theirs.Close()
	if err != nil {
		ours.Close()
		return fmt.Errorf("tcpgrace: takeover: sending the channel to the taker: %w", err)
	}
	g, err := handoff.NewGiver(ctx, ours)
	if err != nil {
		return fmt.Errorf("tcpgrace: takeover: the taker's hello: %w", err)
	}
	defer g.Close()
	return g.Offer(ctx, []handoff.Item{{Kind: KindSockets, Data: []byte(value), Files: files}})
}

// Confirm tells the taker on conn that its ready was read: it serves
// from now on.
func Confirm(conn net.Conn) error {
	conn.SetWriteDeadline(time.Now().Add(ReplyTimeout))
	defer conn.SetWriteDeadline(time.Time{})
	_, err := conn.Write([]byte{Confirmed})
	return err
}
