package tests

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// httpsServer is examples/http started with -http and -https (and the
// extra args), a self-signed certificate for 127.0.0.1 made for the test
// in its temp dir, and the pool that trusts it.
type httpsServer struct {
	*server
	pool      *x509.CertPool
	cert, key string // the files -cert and -key name
	base      string // http://ADDR
	tlsBase   string // https://ADDR
}

func startHTTPS(t *testing.T, args ...string) *httpsServer {
	t.Helper()
	dir := t.TempDir()
	h := &httpsServer{cert: filepath.Join(dir, "cert.pem"), key: filepath.Join(dir, "key.pem")}
	h.pool = writeSelfSigned(t, h.cert, h.key)
	args = append([]string{"-http", "127.0.0.1:0", "-https", "127.0.0.1:0", "-cert", h.cert, "-key", h.key}, args...)
	h.server = startExample(t, exampleBin("http"), nil, args...)
	h.base, h.tlsBase = "http://"+h.addr("http"), "https://"+h.addr("https")
	return h
}

// client is an HTTPS client that trusts the server's certificate and
// speaks HTTP/2 (h2 true) or only HTTP/1.1, keeping one connection alive
// (see newHTTPClient).
func (h *httpsServer) client(h2 bool) *http.Client {
	c := newHTTPClient(1)
	tr := c.Transport.(*http.Transport)
	tr.TLSClientConfig = &tls.Config{RootCAs: h.pool}
	tr.ForceAttemptHTTP2 = h2
	if !h2 {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{} // no HTTP/2
	}
	return c
}

// getTLSPID GETs url and returns the pid it answers with; the answer
// must have come over TLS in HTTP major version proto.
func getTLSPID(c *http.Client, url string, proto int) (int, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	if resp.TLS == nil || resp.ProtoMajor != proto {
		resp.Body.Close()
		return 0, fmt.Errorf("answered in %s (TLS: %v), want HTTP/%d over TLS", resp.Proto, resp.TLS != nil, proto)
	}
	return readPID(resp)
}

// TestHTTPSClientsAcrossUpgrades: examples/http -https serves two Go
// clients over TLS, one speaking HTTP/1.1 and one HTTP/2 (ALPN), each
// sending a request every 5 ms and never failing one through three
// upgrades: the HTTPS listener is handed over with the others, an old
// generation's HTTP/1.1 connections are drained with "Connection: close"
// and its HTTP/2 ones with Shutdown's GOAWAY. Each client is answered by
// every generation, and every old generation exits 0.
func TestHTTPSClientsAcrossUpgrades(t *testing.T) {
	h := startHTTPS(t, "-drain-timeout", "5s", "-idle-grace", "300ms")
	clients := []*http.Client{h.client(false), h.client(true)}
	var mu sync.Mutex
	seen := []map[int]int{{}, {}} // by client (HTTP/1.1, HTTP/2): answers by pid
	l := startFuncLoad(len(clients), 4_000, func(w, n int) error {
		time.Sleep(5 * time.Millisecond)
		pid, err := getTLSPID(clients[w], h.tlsBase+"/", w+1)
		if err == nil {
			mu.Lock()
			seen[w][pid]++
			mu.Unlock()
		}
		return err
	})
	answeredBy := func(pid int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return seen[0][pid] > 0 && seen[1][pid] > 0
		}
	}
	l.waitRequests(t, 20)
	old := []int{h.pid()}
	for range 3 {
		pid := h.startUpgrade() // old generations drain meanwhile
		waitFor(t, fmt.Sprintf("both clients answered by generation %d\nlogs:\n%s", pid, h.logs), answeredBy(pid))
		old = append(old, pid)
		l.waitRequests(t, 20) // while the old generation drains
	}
	l.waitRequests(t, 20)
	l.stopLoad(t)
	for _, c := range clients {
		c.CloseIdleConnections()
	}
	for _, pid := range old[:3] {
		h.waitExit(pid, 0)
	}
	mu.Lock()
	t.Logf("HTTP/1.1 answers by pid: %v; HTTP/2 answers by pid: %v", seen[0], seen[1])
	for i, proto := range []string{"HTTP/1.1", "HTTP/2"} {
		for _, pid := range old {
			assert.Positive(t, seen[i][pid], "the %s client should be answered by generation %d", proto, pid)
		}
	}
	mu.Unlock()
	h.stop()
}

// httpStats is the answer of examples/http's GET /stats.
type httpStats struct {
	PID        int   `json:"pid"`
	Generation int   `json:"generation"`
	Requests   int64 `json:"requests"`
}

// getStats GETs /stats at base with c and decodes it.
func getStats(t *testing.T, c *http.Client, base string) httpStats {
	t.Helper()
	resp, err := c.Get(base + "/stats")
	require.NoError(t, err, "GET %s/stats", base)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "GET %s/stats", base)
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"), "GET /stats's Content-Type")
	var raw map[string]json.RawMessage
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&raw), "GET /stats answers a JSON object")
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	assert.ElementsMatch(t, []string{"pid", "generation", "requests"}, keys, "GET /stats's fields")
	var st httpStats
	for k, dst := range map[string]any{"pid": &st.PID, "generation": &st.Generation, "requests": &st.Requests} {
		require.NoError(t, json.Unmarshal(raw[k], dst), "GET /stats's %s is an integer: %s", k, raw[k])
	}
	return st
}

// TestHTTPStats: GET /stats answers {"pid","generation","requests"} as
// JSON on -http and -https alike: the serving process's pid and
// generation, and the requests that generation has served on the demo
// endpoints, /stats included and /metrics not. After an upgrade the new
// generation answers with its own pid and generation 2. (Its count starts
// again until the library hands application state over.)
func TestHTTPStats(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	h := startHTTPS(t, "-metrics", "127.0.0.1:0", "-idle-grace", "100ms")
	c, tc := newHTTPClient(1), h.client(true)
	first := getStats(t, c, h.base)
	assert.Equal(t, httpStats{PID: h.pid(), Generation: 1, Requests: first.Requests}, first, "the first generation's /stats")
	assert.Positive(t, first.Requests, "/stats counts itself")
	for _, get := range []func() (int, error){
		func() (int, error) { return getPID(c, h.base+"/") },
		func() (int, error) { return getTLSPID(tc, h.tlsBase+"/", 2) },
	} {
		pid, err := get()
		require.NoError(t, err, "GET /")
		require.Equal(t, first.PID, pid, "GET / answers with the serving pid")
	}
	assert.Equal(t, http.StatusOK, statusOf(t, "http://"+h.addr("metrics")+"/metrics"), "a scrape, which /stats does not count")
	again := getStats(t, tc, h.tlsBase)
	assert.Equal(t, httpStats{PID: first.PID, Generation: 1, Requests: first.Requests + 3}, again,
		"/stats over HTTPS: the same generation, and two GET / and this /stats more")

	pid := h.upgrade()
	next := getStats(t, c, h.base)
	assert.Equal(t, pid, next.PID, "/stats after the upgrade names the new pid")
	assert.Equal(t, 2, next.Generation, "/stats after the upgrade names generation 2")
	assert.Positive(t, next.Requests, "the new generation counts its requests")
	c.CloseIdleConnections()
	tc.CloseIdleConnections()
	h.stop()
}

// runHTTPExample runs examples/http with args until it exits (it must
// within waitTimeout) and returns its exit code and output.
func runHTTPExample(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(exampleBin("http"), append([]string{"-http", "127.0.0.1:0", "-pidfile", filepath.Join(t.TempDir(), "http.pid")}, args...)...)
	cmd.WaitDelay = time.Second
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		defer close(done)
		out, err = cmd.CombinedOutput()
	}()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("examples/http %s did not exit:\n%s", strings.Join(args, " "), out)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err, "running examples/http")
	}
	return code, string(out)
}

// TestHTTPSFlags: -https, -cert and -key come all three or none (a
// usage error, exit 2, naming what is missing); a first generation that
// cannot load the certificate exits 1 naming the file; a next generation
// that cannot load it (the file broken since the last start) fails its
// start with the path in the reason, and the serving generation keeps
// serving HTTPS.
func TestHTTPSFlags(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	for _, tc := range []struct {
		args    []string
		missing string
	}{
		{[]string{"-https", "127.0.0.1:0"}, "-cert and -key"},
		{[]string{"-https", "127.0.0.1:0", "-cert", "c.pem"}, "-key"},
		{[]string{"-cert", "c.pem", "-key", "k.pem"}, "-https"},
	} {
		code, out := runHTTPExample(t, tc.args...)
		assert.Equal(t, 2, code, "examples/http %v: a usage error\n%s", tc.args, out)
		assert.Contains(t, out, "without "+tc.missing, "examples/http %v names what is missing", tc.args)
	}

	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-cert.pem")
	writeSelfSigned(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	code, out := runHTTPExample(t, "-https", "127.0.0.1:0", "-cert", missing, "-key", filepath.Join(dir, "key.pem"))
	assert.Equal(t, 1, code, "a first generation without its certificate exits 1\n%s", out)
	assert.Contains(t, out, missing, "the error names the certificate file")

	h := startHTTPS(t)
	require.NoError(t, os.WriteFile(h.cert, []byte("not a certificate\n"), 0o600))
	h.failUpgrade(h.cert)
	c := h.client(false)
	pid, err := getTLSPID(c, h.tlsBase+"/", 1)
	require.NoError(t, err, "GET / over HTTPS after the failed upgrade")
	assert.Equal(t, h.pid(), pid, "the generation that was serving answers")
	c.CloseIdleConnections()
	h.stop()
}

// TestHTTPSStalledHandshakeDuringDrain: a client that opened a TCP
// connection to the -https address and never sends its TLS hello must not
// hold up the old generation's drain. A request that then arrives on a
// kept-alive HTTPS/1.1 connection is answered at once, with "Connection:
// close", within requestBudget. Regression: RunHTTP's drain asked the
// stalled connection whether it negotiated h2 (tls.Conn.ConnectionState,
// which waits for the handshake) while it held the lock every connection's
// state change takes, so the request waited until the handshake timed out
// (http.Server's ReadHeaderTimeout, 10 s in examples/http), and with a
// short -idle-grace it was then cut as idle, unanswered.
func TestHTTPSStalledHandshakeDuringDrain(t *testing.T) {
	t.Parallel() // a waiting test: see parallel tests in main_test.go
	h := startHTTPS(t, "-idle-grace", "30s", "-drain-timeout", "20s")
	addr := h.addr("https")
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: requestBudget}, "tcp", addr,
		&tls.Config{RootCAs: h.pool, NextProtos: []string{"http/1.1"}})
	require.NoError(t, err, "a TLS connection to -https")
	t.Cleanup(func() { tc.Close() })
	c := &rawHTTP{c: tc, r: bufio.NewReader(tc)}
	_, old, err := c.get("/")
	require.NoError(t, err, "GET / over the kept-alive TLS connection")
	stalled, err := dial("tcp", addr) // says nothing: its handshake waits
	require.NoError(t, err, "a TCP connection to -https")
	t.Cleanup(func() { stalled.Close() })

	h.startUpgrade()
	waitLog(t, h.server, fmt.Sprintf("msg=draining pid=%d ", old))
	// No line says the drain loop has begun; it begins as soon as the old
	// generation's listeners have closed, far within this.
	time.Sleep(200 * time.Millisecond)
	tc.SetDeadline(time.Now().Add(requestBudget))
	_, err = fmt.Fprintf(tc, "GET / HTTP/1.1\r\nHost: tcpgrace\r\n\r\n")
	require.NoError(t, err, "sending GET / during the drain")
	resp, err := http.ReadResponse(c.r, nil)
	require.NoError(t, err, "GET / on the kept-alive TLS connection during the drain is answered within %v", requestBudget)
	assert.True(t, resp.Close, "the drain answers with Connection: close")
	pid, err := readPID(resp)
	require.NoError(t, err)
	assert.Equal(t, old, pid, "the old generation answers on its connection")
	stalled.Close()
	h.waitExit(old, 0)
	h.stop()
}

// resumes makes a new TLS connection (HTTP/1.1, no keep-alive) with the
// session cache of c and reports whether it resumed its session, and
// which pid answered.
func (h *httpsServer) resumes(t *testing.T, c *http.Client) (bool, int) {
	t.Helper()
	resp, err := c.Get(h.tlsBase + "/")
	require.NoError(t, err)
	require.NotNil(t, resp.TLS)
	resumed := resp.TLS.DidResume
	pid, err := readPID(resp)
	require.NoError(t, err)
	return resumed, pid
}

// ticketClient is an HTTPS client of TLS version v that keeps session
// tickets and makes a new connection per request.
func (h *httpsServer) ticketClient(v uint16) *http.Client {
	c := h.client(false)
	tr := c.Transport.(*http.Transport)
	tr.DisableKeepAlives = true
	tr.TLSClientConfig.MinVersion, tr.TLSClientConfig.MaxVersion = v, v
	tr.TLSClientConfig.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	return c
}

// TestTLSSessionResumesAcrossUpgrade: a TLS client (1.3 and 1.2) that got
// a session ticket from one generation of examples/http -https resumes its
// session with the next one after an upgrade, as the session-ticket keys
// go with the sockets; after a cold restart on the same address, with the
// same certificate, it makes a full handshake.
func TestTLSSessionResumesAcrossUpgrade(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS13, tls.VersionTLS12} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			h := startHTTPS(t)
			c := h.ticketClient(v)
			resumed, first := h.resumes(t, c)
			assert.False(t, resumed, "the first connection makes a full handshake")
			resumed, _ = h.resumes(t, c)
			require.True(t, resumed, "a second connection to the same generation resumes")
			next := h.upgrade()
			resumed, pid := h.resumes(t, c)
			assert.Equal(t, next, pid, "the new generation answers")
			assert.NotEqual(t, first, pid)
			assert.True(t, resumed, "the new generation resumes a session the old one issued")
			addr := h.addr("https")
			h.stop()

			cold := startHTTPS(t, "-https", addr, "-cert", h.cert, "-key", h.key) // a new service: new keys
			cold.tlsBase = h.tlsBase
			resumed, _ = cold.resumes(t, c)
			assert.False(t, resumed, "after a cold restart the session cannot resume")
			cold.stop()
		})
	}
}
