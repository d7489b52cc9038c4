package tests

import (
	"bufio"
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
	t.Parallel() // a waiting test: see parallel tests in main_test.go
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
		resp, err := newHTTPClient(1).Get(base + "/slow?ms=3000") // outlasts an upgrade on a busy machine
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
// alive and never retry (POSTs whose body cannot be replayed, so Go's
// Transport gives up on the first error) see no failed request across
// three upgrades. The old generation keeps answering the requests that
// arrive on its open connections, each with "Connection: close", so the
// next request of that client opens a connection to the new generation.
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
	l := startFuncLoad(workers, 1_000_000, func(w, n int) error {
		pid, err := postPID(client, url, fmt.Sprintf("worker %d request %d", w, n))
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

// TestHTTPDrainAnswersWithConnectionClose: with -handoff=false, a
// request that arrives on a kept-alive connection to the old generation
// after the hand-off is
// answered by the old generation with "Connection: close", which then
// closes the connection; the client's next connection reaches the new
// generation. A raw connection: nothing retries behind the test's back.
func TestHTTPDrainAnswersWithConnectionClose(t *testing.T) {
	s := startExample(t, exampleBin("http"), nil, "-http", "127.0.0.1:0", "-handoff=false", "-idle-grace", "30s", "-drain-timeout", "60s")
	addr := s.addr("http")
	old := s.pid()
	c := dialRawHTTP(t, addr)
	resp, pid, err := c.get("/")
	require.NoError(t, err)
	require.Equal(t, old, pid)
	require.False(t, resp.Close, "before the upgrade the connection is kept alive")

	pid2 := s.startUpgrade()
	waitLog(t, s, fmt.Sprintf(`msg=draining pid=%d `, old))
	resp, pid, err = c.get("/")
	require.NoError(t, err, "a request on the old generation's open connection after the hand-off is answered")
	assert.Equal(t, old, pid, "by the old generation")
	assert.True(t, resp.Close, "with Connection: close")
	assert.True(t, c.closedByServer(), "and the old generation closes the connection after it")
	s.waitExit(old, 0) // long before -idle-grace and -drain-timeout: nothing is left to drain

	c = dialRawHTTP(t, addr)
	resp, pid, err = c.get("/")
	require.NoError(t, err)
	assert.Equal(t, pid2, pid, "the next connection reaches the new generation")
	assert.False(t, resp.Close, "the new generation keeps connections alive")
	c.c.Close() // or the stop would wait -idle-grace for it
	s.stop()
}

// TestHTTPIdleConnectionClosedAfterGrace: with -handoff=false, a
// kept-alive connection that stays idle after the hand-off is closed by the old generation after
// -idle-grace, which then exits 0 without waiting for -drain-timeout.
func TestHTTPIdleConnectionClosedAfterGrace(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	s := startExample(t, exampleBin("http"), nil, "-http", "127.0.0.1:0", "-handoff=false", "-idle-grace", "200ms", "-drain-timeout", "60s")
	old := s.pid()
	c := dialRawHTTP(t, s.addr("http"))
	_, _, err := c.get("/")
	require.NoError(t, err)
	s.startUpgrade()
	assert.True(t, c.closedByServer(), "the idle connection is closed by the old generation")
	s.waitExit(old, 0) // within waitTimeout, far below the 60 s drain timeout
	assert.NotContains(t, s.logs.String(), "drain deadline", "no connection was cut at the deadline")
	s.stop()
}

// TestHTTPFailedUpgradeKeepsServing: a new binary that exits at start
// (a config error) fails the upgrade with its exit status in the log; the
// old generation never stops answering, and a later good upgrade works.
func TestHTTPFailedUpgradeKeepsServing(t *testing.T) {
	s := startExample(t, exampleBin("http"), nil, "-http", "127.0.0.1:0", "-ready-timeout", "2s")
	url := "http://" + s.addr("http") + "/"
	client := newHTTPClient(2)
	l := startFuncLoad(2, 1_000_000, func(w, n int) error {
		_, err := postPID(client, url, fmt.Sprintf("%d-%d", w, n))
		return err
	})
	l.waitRequests(t, 100)
	old := s.pid()
	s.deployBytes([]byte("#!/bin/sh\necho 'config error: no such route' >&2\nexit 3\n"), 0o755)
	s.failUpgrade("exit status 3")
	l.waitRequests(t, 100)
	assert.Equal(t, old, s.pid(), "the old generation still serves")
	s.deploy(exampleBin("http"))
	assert.NotEqual(t, old, s.upgrade(), "a good binary takes over after the failure")
	l.waitRequests(t, 100)
	l.stopLoad(t)
	s.stop()
}

// TestHTTPDrainDeadline: a request still running at -drain-timeout after
// an upgrade is cut there; the old generation logs the deadline and exits
// 0, and the new generation serves meanwhile.
func TestHTTPDrainDeadline(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	s := startExample(t, exampleBin("http"), nil, "-http", "127.0.0.1:0", "-drain-timeout", "500ms")
	base := "http://" + s.addr("http")
	old := s.pid()
	slow := make(chan error, 1)
	go func() {
		_, err := getPID(newHTTPClient(1), base+"/slow?ms=20000")
		slow <- err
	}()
	waitLog(t, s, fmt.Sprintf(`msg="slow request" pid=%d `, old))
	pid := s.startUpgrade()
	s.waitExit(old, 0)
	select {
	case err := <-slow:
		assert.Error(t, err, "the request that outlived the drain deadline is cut")
	case <-time.After(waitTimeout):
		t.Fatal("the slow request was not cut at the drain deadline")
	}
	assert.Regexp(t, fmt.Sprintf(`level=WARN msg="drain: the server's shutdown" pid=%d .*context deadline exceeded`, old), s.logs.String(), "the old generation logs the deadline")
	assert.Regexp(t, fmt.Sprintf(`level=INFO msg=drained pid=%d generation=1 took=[1-9]`, old), s.logs.String(), "and the drain's length, from its beginning")
	got, err := getPID(newHTTPClient(1), base+"/")
	require.NoError(t, err)
	assert.Equal(t, pid, got, "the new generation serves")
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
	return readPID(resp)
}

// readPID reads a 200 response whose body is a pid, and closes it.
func readPID(resp *http.Response) (int, error) {
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

// postPID POSTs body to url with a body that cannot be replayed (no
// GetBody), so the Transport never retries it, and returns the pid in the
// answer.
func postPID(c *http.Client, url, body string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, url, io.NopCloser(strings.NewReader(body)))
	if err != nil {
		return 0, err
	}
	req.ContentLength = int64(len(body))
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	return readPID(resp)
}

// rawHTTP is one client connection that writes requests by hand.
type rawHTTP struct {
	c net.Conn
	r *bufio.Reader
}

func dialRawHTTP(t *testing.T, addr string) *rawHTTP {
	t.Helper()
	c, err := dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &rawHTTP{c: c, r: bufio.NewReader(c)}
}

// get sends GET path and returns the response and the pid it names.
func (h *rawHTTP) get(path string) (*http.Response, int, error) {
	h.c.SetDeadline(time.Now().Add(waitTimeout))
	if _, err := fmt.Fprintf(h.c, "GET %s HTTP/1.1\r\nHost: tcpgrace\r\n\r\n", path); err != nil {
		return nil, 0, err
	}
	resp, err := http.ReadResponse(h.r, nil)
	if err != nil {
		return nil, 0, err
	}
	pid, err := readPID(resp)
	return resp, pid, err
}

// closedByServer waits for the server to close the connection.
func (h *rawHTTP) closedByServer() bool {
	h.c.SetReadDeadline(time.Now().Add(waitTimeout))
	_, err := h.r.ReadByte()
	return err == io.EOF
}
