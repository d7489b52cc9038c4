package tests

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHTTPSlowRequestSpansUpgrade: a request the old generation is
// working on when the upgrade starts is finished by it, 200 with its pid,
// after the new generation is ready and serves new connections; then the
// old generation exits 0.
func TestHTTPSlowRequestSpansUpgrade(t *testing.T) {
	s := startExample(t, exampleBin("http"), nil, "-http", "127.0.0.1:0", "-drain-timeout", "10s")
	base := "http://" + s.addr("http")
	old := s.pid()

	type result struct {
		status int
		body   string
		err    error
	}
	slow := make(chan result, 1)
	go func() {
		resp, err := newHTTPClient(1).Get(base + "/slow?ms=1500")
		if err != nil {
			slow <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		slow <- result{resp.StatusCode, strings.TrimSpace(string(b)), err}
	}()
	// The old generation logs the request when its handler starts.
	waitLog(t, s, fmt.Sprintf(`msg="slow request" pid=%d `, old))

	pid := s.startUpgrade()
	select {
	case r := <-slow:
		t.Fatalf("the slow request ended before the new generation was ready: %+v", r)
	default:
	}
	// Once the old generation drains, its listener is closed: a new
	// connection can only reach the new generation.
	waitLog(t, s, fmt.Sprintf(`msg=draining pid=%d `, old))
	got, err := getPID(newHTTPClient(1), base+"/")
	require.NoError(t, err, "a new connection during the drain")
	assert.Equal(t, pid, got, "a new connection during the drain is served by the new generation")

	select {
	case r := <-slow:
		require.NoError(t, r.err, "the slow request must not fail")
		assert.Equal(t, http.StatusOK, r.status, "the slow request's status")
		assert.Equal(t, strconv.Itoa(old), r.body, "the slow request is answered by the old generation")
	case <-time.After(waitTimeout):
		t.Fatal("the slow request did not end")
	}
	s.waitExit(old, 0)
	s.stop()
}

// TestHTTPKeepAliveLoadAcrossUpgrades: clients that keep connections
// alive see no failed request across three upgrades. http.Server.Shutdown
// in the old generation closes idle keep-alive connections and ends active
// ones after their response ("Connection: close"); Go's Transport retries
// an idempotent request on a kept-alive connection the server closed, as
// any HTTP/1.1 client must, and its next connection reaches the new
// generation.
func TestHTTPKeepAliveLoadAcrossUpgrades(t *testing.T) {
	s := startExample(t, exampleBin("http"), nil, "-http", "127.0.0.1:0", "-drain-timeout", "10s")
	url := "http://" + s.addr("http") + "/"
	const workers = 4
	client := newHTTPClient(workers)
	var dials atomic.Int64
	tr := client.Transport.(*http.Transport)
	dial := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dial(ctx, network, addr)
	}
	var mu sync.Mutex
	byPID := map[int]int{}
	l := startFuncLoad(workers, 1_000_000, func(int, int) error {
		pid, err := getPID(client, url)
		if err == nil {
			mu.Lock()
			byPID[pid]++
			mu.Unlock()
		}
		return err
	})
	l.waitRequests(t, 200)
	for range 3 {
		s.upgrade() // the old generation exits 0
		l.waitRequests(t, 200)
	}
	l.stopLoad(t)
	client.CloseIdleConnections() // see newHTTPClient: a quick stop
	mu.Lock()
	defer mu.Unlock()
	t.Logf("responses by pid: %v; %d connections dialled", byPID, dials.Load())
	// After each upgrade the old generation has exited before the next
	// 200 requests succeed, so each of the four served some.
	assert.Len(t, byPID, 4, "responses should come from every generation")
	assert.Less(t, dials.Load(), l.ok.Load()/4, "the client should reuse keep-alive connections")
	s.stop()
}

// newHTTPClient keeps up to conns idle connections alive per host, for at
// most a second. The Transport sometimes dials a connection that it then
// parks unused (another one became free first), and http.Server.Shutdown
// waits 5 s for a connection on which no request arrived, since it cannot
// tell it from a slow client (golang/go#22682): the short idle timeout
// keeps such a connection from holding an old generation that long.
func newHTTPClient(conns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = conns
	tr.IdleConnTimeout = time.Second
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// getPID GETs url and returns the pid in its body.
func getPID(c *http.Client, url string) (int, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %s: %q", resp.Status, b)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("body %q is not a pid", b)
	}
	return pid, nil
}

// waitLog waits until the logs of the server's generations contain text.
func waitLog(t *testing.T, s *server, text string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("the log line %q (logs follow)", text), func() bool {
		return strings.Contains(s.logs.String(), text)
	})
}
