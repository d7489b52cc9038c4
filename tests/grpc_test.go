package tests

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The hand-written service of examples/grpc.
const (
	grpcEcho  = "/tcpgrace.example.Demo/Echo"
	grpcCount = "/tcpgrace.example.Demo/Count"
)

var grpcCountDesc = grpc.StreamDesc{StreamName: "Count", ServerStreams: true}

// TestGRPCStreamSpansUpgrade: a server stream started before an upgrade
// gets every message from the old generation, which exits 0 once the
// stream has ended; unary calls before, during and after the upgrade
// succeed, reaching the new generation once the old one drains (GOAWAY on
// the old connection, a new connection for the same ClientConn).
func TestGRPCStreamSpansUpgrade(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	const messages = 20
	s := startExample(t, exampleBin("grpc"), nil,
		"-grpc", "127.0.0.1:0", "-stream-interval", "100ms", "-drain-timeout", "10s")
	addr := s.addr("grpc")
	conn := dialGRPC(t, addr)
	old := s.pid()
	pid, err := grpcEchoPID(conn, "before")
	require.NoError(t, err, "a unary call before the upgrade")
	require.Equal(t, old, pid, "the first generation answers before the upgrade")

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := conn.NewStream(ctx, &grpcCountDesc, grpcCount)
	require.NoError(t, err)
	require.NoError(t, stream.SendMsg(wrapperspb.Int32(messages)))
	require.NoError(t, stream.CloseSend())
	var received atomic.Int64
	first := make(chan struct{})
	streamDone := make(chan error, 1)
	go func() {
		streamDone <- recvCount(stream, old, messages, &received, first)
	}()
	select {
	case <-first: // the old generation is serving the stream
	case err := <-streamDone:
		t.Fatalf("the stream ended before its first message: %v", err)
	case <-time.After(waitTimeout):
		t.Fatal("no first message on the stream")
	}

	newPID := s.startUpgrade()
	waitLog(t, s, fmt.Sprintf(`msg=draining pid=%d `, old))
	assert.Less(t, received.Load(), int64(messages), "the stream should still run when the old generation starts draining")
	// The old listener is closed now: a new connection reaches the new
	// generation while the old one still streams.
	pid, err = grpcEchoPID(dialGRPC(t, addr), "during")
	require.NoError(t, err, "a unary call on a new connection during the drain")
	assert.Equal(t, newPID, pid, "a new connection during the drain reaches the new generation")

	select {
	case err := <-streamDone:
		require.NoError(t, err, "the stream that spans the upgrade")
	case <-time.After(waitTimeout):
		t.Fatal("the stream did not end")
	}
	assert.Equal(t, int64(messages), received.Load(), "every message of the stream arrives")
	s.waitExit(old, 0)

	pid, err = grpcEchoPID(conn, "after")
	require.NoError(t, err, "a unary call on the first ClientConn after the upgrade")
	assert.Equal(t, newPID, pid, "the first ClientConn reconnects to the new generation")
	s.stop()
}

// dialGRPC makes a ClientConn to addr, closed at the end of the test.
func dialGRPC(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	return conn
}

// grpcEchoPID calls Echo and returns the pid that answered.
func grpcEchoPID(conn *grpc.ClientConn, text string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out := new(wrapperspb.StringValue)
	if err := conn.Invoke(ctx, grpcEcho, wrapperspb.String(text), out); err != nil {
		return 0, err
	}
	pid, rest, _ := strings.Cut(out.GetValue(), " ")
	n, err := strconv.Atoi(pid)
	if err != nil || rest != text {
		return 0, fmt.Errorf("sent %q, got %q", text, out.GetValue())
	}
	return n, nil
}

// recvCount reads a Count stream to its end and checks that it holds
// want messages "PID SEQ" in order, all from pid. It counts them in
// received and closes first after the first one.
func recvCount(stream grpc.ClientStream, pid, want int, received *atomic.Int64, first chan<- struct{}) error {
	for seq := 0; ; seq++ {
		msg := new(wrapperspb.StringValue)
		err := stream.RecvMsg(msg)
		if err == io.EOF {
			if seq != want {
				return fmt.Errorf("stream ended after %d messages, want %d", seq, want)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("after %d messages: %w", seq, err)
		}
		if wantMsg := fmt.Sprintf("%d %d", pid, seq); msg.GetValue() != wantMsg {
			return fmt.Errorf("message %d is %q, want %q", seq, msg.GetValue(), wantMsg)
		}
		if received.Add(1) == 1 {
			close(first)
		}
	}
}

// TestGRPCFailedUpgradeKeepsServing: a new binary that exits at start
// fails the upgrade with its exit status in the log; unary calls on one
// ClientConn keep succeeding, from the old generation, and a later good
// upgrade works.
func TestGRPCFailedUpgradeKeepsServing(t *testing.T) {
	s := startExample(t, exampleBin("grpc"), nil, "-grpc", "127.0.0.1:0", "-ready-timeout", "2s")
	conn := dialGRPC(t, s.addr("grpc"))
	old := s.pid()
	l := startFuncLoad(2, 1_000_000, func(w, n int) error {
		_, err := grpcEchoPID(conn, fmt.Sprintf("%d-%d", w, n))
		return err
	})
	l.waitRequests(t, 100)
	s.deployBytes([]byte("#!/bin/sh\necho 'config error: no such service' >&2\nexit 3\n"), 0o755)
	s.failUpgrade("exit status 3")
	l.waitRequests(t, 100)
	pid, err := grpcEchoPID(conn, "after the failure")
	require.NoError(t, err)
	assert.Equal(t, old, pid, "the old generation still answers")
	s.deploy(exampleBin("grpc"))
	assert.NotEqual(t, old, s.upgrade(), "a good binary takes over after the failure")
	l.waitRequests(t, 100)
	l.stopLoad(t)
	s.stop()
}

// TestGRPCDrainDeadline: a stream still running at -drain-timeout after
// an upgrade is cancelled there (Stop after GracefulStop); the old
// generation logs it and exits 0, and the new generation answers.
func TestGRPCDrainDeadline(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	s := startExample(t, exampleBin("grpc"), nil, "-grpc", "127.0.0.1:0", "-stream-interval", "100ms", "-drain-timeout", "500ms")
	conn := dialGRPC(t, s.addr("grpc"))
	old := s.pid()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	stream, err := conn.NewStream(ctx, &grpcCountDesc, grpcCount)
	require.NoError(t, err)
	require.NoError(t, stream.SendMsg(wrapperspb.Int32(1000))) // 100 s of messages
	require.NoError(t, stream.CloseSend())
	var received atomic.Int64
	first := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- recvCount(stream, old, 1000, &received, first) }()
	<-first
	pid := s.startUpgrade()
	s.waitExit(old, 0)
	select {
	case err := <-done:
		assert.Error(t, err, "the stream that outlived the drain deadline is cancelled")
	case <-time.After(waitTimeout):
		t.Fatal("the stream was not cancelled at the drain deadline")
	}
	assert.Less(t, received.Load(), int64(1000))
	assert.Contains(t, s.logs.String(), fmt.Sprintf("level=WARN msg=\"drain deadline: cancelling the calls in flight\" pid=%d\n", old))
	got, err := grpcEchoPID(dialGRPC(t, s.addr("grpc")), "after")
	require.NoError(t, err)
	assert.Equal(t, pid, got, "the new generation answers")
	s.stop()
}
