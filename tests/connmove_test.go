package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// moveWorker is one client connection's record: the pids that answered
// it, in order, how many TCP connections it used and what failed.
type moveWorker struct {
	name string

	mu     sync.Mutex
	pids   []int
	conns  int
	ok     int
	failed []string
}

func (w *moveWorker) answered(pid int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ok++
	if len(w.pids) == 0 || w.pids[len(w.pids)-1] != pid {
		w.pids = append(w.pids, pid)
	}
}

func (w *moveWorker) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failed = append(w.failed, err.Error())
}

// dial opens the worker's one connection; nil (the failure recorded) if
// it cannot.
func (w *moveWorker) dial(network, addr string) (net.Conn, *bufio.Reader) {
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		w.fail(err)
		return nil, nil
	}
	w.mu.Lock()
	w.conns = 1
	w.mu.Unlock()
	return c, bufio.NewReader(c)
}

func (w *moveWorker) last() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.pids) == 0 {
		return 0
	}
	return w.pids[len(w.pids)-1]
}

// goKeepAlive runs a net/http client with one connection at most,
// counting its dials, until stop.
func goKeepAlive(w *moveWorker, url string, stop <-chan struct{}) {
	tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		w.mu.Lock()
		w.conns++
		w.mu.Unlock()
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for !stopped(stop) {
		pid, err := getPID(c, url)
		if err != nil {
			w.fail(err)
			return
		}
		w.answered(pid)
	}
}

// rawKeepAlive sends requests on one raw connection until stop: three
// pipelined in one write (pipelined), or each split in two writes 2 ms
// apart (split). No client logic can hide a lost byte: a response missing
// or the connection closed fails the worker.
func rawKeepAlive(w *moveWorker, addr string, pipelined bool, stop <-chan struct{}) {
	c, r := w.dial("tcp", addr)
	if c == nil {
		return
	}
	defer c.Close()
	const req = "GET / HTTP/1.1\r\nHost: tcpgrace\r\n\r\n"
	for !stopped(stop) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		n, err := 1, error(nil)
		if pipelined {
			n = 3
			_, err = io.WriteString(c, strings.Repeat(req, n))
		} else if _, err = io.WriteString(c, req[:20]); err == nil {
			time.Sleep(2 * time.Millisecond)
			_, err = io.WriteString(c, req[20:])
		}
		for i := 0; i < n && err == nil; i++ {
			err = readRawPID(w, r)
		}
		if err != nil {
			w.fail(err)
			return
		}
	}
}

// readRawPID reads one response, which must keep the connection open.
func readRawPID(w *moveWorker, r *bufio.Reader) error {
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return err
	}
	if resp.Close {
		resp.Body.Close()
		return fmt.Errorf("answered with Connection: close")
	}
	pid, err := readPID(resp)
	if err == nil {
		w.answered(pid)
	}
	return err
}

func stopped(stop <-chan struct{}) bool {
	select {
	case <-stop:
		return true
	default:
		return false
	}
}

// pythonResult is the last line of testdata/sameconn_client.py.
type pythonResult struct {
	OK     int      `json:"ok"`
	Failed int      `json:"failed"`
	Errors []string `json:"errors"`
	Conns  [][]int  `json:"conns"`
	PIDs   [][]int  `json:"pids"`
}

// startPython runs testdata/sameconn_client.py with workers that report
// to ws as they see new pids; the returned function stops it and
// returns its result.
func startPython(t *testing.T, addr string, ws []*moveWorker) func() pythonResult {
	py := needPython(t)
	stopFile := filepath.Join(t.TempDir(), "stop")
	cmd := exec.Command(py, filepath.Join("testdata", "sameconn_client.py"), "--addr", addr, "--stop", stopFile,
		"--workers", fmt.Sprint(len(ws)), "--max-seconds", "120")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	done := make(chan pythonResult, 1)
	go func() {
		var res pythonResult
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var seen struct{ Worker, PID int }
			if strings.Contains(sc.Text(), `"worker"`) && json.Unmarshal(sc.Bytes(), &seen) == nil {
				ws[seen.Worker].answered(seen.PID)
				continue
			}
			json.Unmarshal(sc.Bytes(), &res)
		}
		done <- res
	}()
	return func() pythonResult {
		require.NoError(t, os.WriteFile(stopFile, nil, 0o644))
		select {
		case res := <-done:
			require.NoError(t, cmd.Wait(), "the Python client should exit 0")
			return res
		case <-time.After(waitTimeout):
			require.FailNow(t, "the Python client should stop once told")
			return pythonResult{}
		}
	}
}

// TestKeepAliveConnectionsMoveAcrossUpgrades: through 10 upgrades of
// examples/http, keep-alive clients that never retry keep one TCP
// connection each and are answered by each new generation in turn, with 0
// errors: Go net/http clients, Python http.client clients, raw clients
// that pipeline three requests per write and raw clients that split each
// request across two packets, all sending back to back, so that requests
// are on the wire at the moment of each move. GET /stats then counts
// every request since the first start.
func TestKeepAliveConnectionsMoveAcrossUpgrades(t *testing.T) {
	s := startExample(t, exampleBin("http"), nil, "-http", "127.0.0.1:0", "-drain-timeout", "20s")
	addr := s.addr("http")
	var ws, py []*moveWorker
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, kind := range []string{"go", "go", "pipelined", "pipelined", "split", "split"} {
		w := &moveWorker{name: fmt.Sprintf("%s %d", kind, len(ws))}
		ws = append(ws, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if kind == "go" {
				goKeepAlive(w, "http://"+addr+"/", stop)
			} else {
				rawKeepAlive(w, addr, kind == "pipelined", stop)
			}
		}()
	}
	for i := range 2 {
		py = append(py, &moveWorker{name: fmt.Sprintf("python %d", i)})
	}
	stopPython := startPython(t, addr, py)
	all := append(append([]*moveWorker(nil), ws...), py...)
	gens := []int{s.pid()}
	for i := 0; ; i++ {
		waitFor(t, fmt.Sprintf("every client answered by generation %d (pid %d)", i+1, gens[i]), func() bool {
			for _, w := range all {
				if w.last() != gens[i] && len(w.failed) == 0 {
					return false
				}
			}
			return true
		})
		if i == 10 {
			break
		}
		gens = append(gens, s.upgrade()) // the old generation exits 0
	}
	close(stop)
	wg.Wait()
	res := stopPython()
	total := res.OK
	for _, w := range ws {
		assert.Empty(t, w.failed, "%s: no request may fail", w.name)
		assert.Equal(t, 1, w.conns, "%s: one TCP connection throughout", w.name)
		assert.Equal(t, gens, w.pids, "%s: answered by each generation in turn", w.name)
		total += w.ok
	}
	assert.Zero(t, res.Failed, "Python: no request may fail: %v", res.Errors)
	for i, w := range py {
		assert.Len(t, res.Conns[i], 1, "%s: one TCP connection throughout", w.name)
		assert.Equal(t, gens, res.PIDs[i], "%s: answered by each generation in turn", w.name)
	}
	checkStatsTotal(t, "http://"+addr+"/stats", total)
	s.stop()
}

// checkStatsTotal polls GET /stats until it counts total requests plus
// the /stats requests themselves: the last generation adds what the one
// before it counted once that one's drain has ended.
func checkStatsTotal(t *testing.T, url string, total int) {
	t.Helper()
	var got struct{ Requests int }
	asked := 0
	waitFor(t, fmt.Sprintf("GET /stats to count %d requests", total), func() bool {
		asked++
		resp, err := http.Get(url)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&got) == nil && got.Requests == total+asked
	})
}

// lineClient sends lines back to back on one connection until stop, each
// split in two writes 1 ms apart, and checks every echo.
func lineClient(w *moveWorker, network, addr string, stop <-chan struct{}) {
	c, r := w.dial(network, addr)
	if c == nil {
		return
	}
	defer c.Close()
	for n := 0; !stopped(stop); n++ {
		line := fmt.Sprintf("%s line %d\n", w.name, n)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		_, err := io.WriteString(c, line[:5])
		if err == nil {
			time.Sleep(time.Millisecond)
			_, err = io.WriteString(c, line[5:])
		}
		var got string
		if err == nil {
			got, err = r.ReadString('\n')
		}
		if err == nil && got != line {
			err = fmt.Errorf("sent %q, got %q", line, got)
		}
		if err != nil {
			w.fail(err)
			return
		}
		w.answered(0)
	}
}

// TestLineServerConnectionsMove: lineserver's busy persistent connections,
// TCP and Unix, each sending lines split across two packets back to back,
// move to the next generation between two lines (a line read in part
// goes with its connection) through 3 upgrades: every echo comes back
// right on the one connection each client keeps, and each old generation
// exits 0 long before its 30 s drain timeout, having moved them all.
func TestLineServerConnectionsMove(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "lines.sock")
	s := startServer(t, nil, "-tcp", "127.0.0.1:0", "-unix", sock, "-drain-timeout", "30s")
	tcp := s.addr("tcp:127.0.0.1:0")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ws []*moveWorker
	for i, target := range [][2]string{{"tcp", tcp}, {"tcp", tcp}, {"unix", sock}, {"unix", sock}} {
		w := &moveWorker{name: fmt.Sprintf("%s-%d", target[0], i)}
		ws = append(ws, w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			lineClient(w, target[0], target[1], stop)
		}()
	}
	echoes := func(n int) {
		t.Helper()
		target := make([]int, len(ws))
		for i, w := range ws {
			w.mu.Lock()
			target[i] = w.ok + n
			w.mu.Unlock()
		}
		waitFor(t, fmt.Sprintf("%d more echoes on every connection", n), func() bool {
			for i, w := range ws {
				w.mu.Lock()
				ok, failed := w.ok, len(w.failed)
				w.mu.Unlock()
				if ok < target[i] && failed == 0 {
					return false
				}
			}
			return true
		})
	}
	echoes(20)
	for range 3 {
		old := s.pid()
		begin := time.Now()
		s.upgrade() // waits until the old generation exited 0: within waitTimeout, far below 30 s
		t.Logf("generation %d exited %v after the upgrade signal", old, time.Since(begin).Round(time.Millisecond))
		waitLog(t, s, fmt.Sprintf("msg=drained pid=%d ", old))
		m := regexp.MustCompile(fmt.Sprintf(`msg=drained pid=%d .*took=(\S+) .* moved=(\d+)`, old)).FindStringSubmatch(s.logs.String())
		require.NotNil(t, m, "the drained line of %d says how long and how many moved", old)
		assert.Equal(t, fmt.Sprint(len(ws)), m[2], "every connection moved")
		took, err := time.ParseDuration(m[1])
		require.NoError(t, err)
		assert.Less(t, took, 2*time.Second, "the old generation's drain is over within 2 s, its drain timeout 30 s")
		echoes(20)
	}
	close(stop)
	wg.Wait()
	for _, w := range ws {
		assert.Empty(t, w.failed, "%s: every line echoed", w.name)
		assert.Equal(t, 1, w.conns, "%s: one connection throughout", w.name)
	}
	s.stop()
}
