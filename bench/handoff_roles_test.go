package bench

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// The two line servers of BenchmarkHandoffVsTableflip, each a role of
// this binary that TestMain dispatches to: the same echo server built on
// tcpgrace and on cloudflare/tableflip. Both listen on the addresses the
// role's variable lists, write the pid file pidEnv names once ready,
// upgrade on SIGUSR1 to a next process of this binary, which inherits the
// variables, and stop on SIGTERM. Each process appends a line per phase
// of a hand-off to the file stampsEnv names (see stamp).
const (
	tgServerEnv = "TCPGRACE_BENCH_TG_SERVER" // the addresses, comma-separated
	tfServerEnv = "TCPGRACE_BENCH_TF_SERVER" // the addresses, comma-separated
	stampsEnv   = "TCPGRACE_BENCH_STAMPS"    // where each process appends its phases
	exitEnv     = "TCPGRACE_BENCH_EXIT"      // any value: exit 0 at once (forkExecOnce)
)

// The phases a process stamps. A next generation: stampMain first thing
// in its role, stampNew just before New, stampReady when Ready returned.
// The generation that upgrades: stampRequest when its loop got SIGUSR1,
// stampStarted when the next process started (tcpgrace only: fork and
// exec returned), stampNoticed when it learnt that the next one is ready.
const (
	stampMain    = "main"
	stampNew     = "new"
	stampReady   = "ready"
	stampRequest = "request"
	stampStarted = "started"
	stampNoticed = "noticed"
)

// handoffDrain bounds how long an old generation of either server serves
// its open connections after a hand-off.
const handoffDrain = 5 * time.Second

// stamps appends "phase pid unix-ns" lines to the file stampsEnv names,
// each in one write to a file opened O_APPEND, so that the processes of
// a server share it without interleaving.
type stamps struct {
	f   *os.File
	pid int
}

func openStamps() (*stamps, error) {
	f, err := os.OpenFile(os.Getenv(stampsEnv), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	return &stamps{f: f, pid: os.Getpid()}, nil
}

// stamp records that phase happened at t.
func (s *stamps) stamp(phase string, t time.Time) {
	s.f.Write(fmt.Appendf(nil, "%s %d %d\n", phase, s.pid, t.UnixNano()))
}

// echoLines writes every line it reads from c back until c ends.
func echoLines(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		if _, err := c.Write(line); err != nil {
			return
		}
	}
}

// tgServer is the line server on tcpgrace, written as examples/lineserver
// is: NotifySignals first, New, Listen, Ready, and a Server whose loop
// upgrades on SIGUSR1. OnEvent stamps the old generation's phases.
func tgServer(addrs string) int {
	begin := time.Now()
	sigs := tcpgrace.NotifySignals()
	st, err := openStamps()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench tcpgrace server:", err)
		return 1
	}
	st.stamp(stampMain, begin)
	onEvent := func(e tcpgrace.Event) {
		switch e.Kind {
		case tcpgrace.EventUpgradeRequested:
			st.stamp(stampRequest, e.Time)
		case tcpgrace.EventUpgradeStarted:
			st.stamp(stampStarted, e.Time)
		case tcpgrace.EventNextReady:
			st.stamp(stampNoticed, e.Time)
		}
	}
	st.stamp(stampNew, time.Now())
	u, err := tcpgrace.New(tcpgrace.Options{PIDFile: os.Getenv(pidEnv), OnEvent: onEvent})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench tcpgrace server:", err)
		return 1
	}
	var lns []net.Listener
	for i, addr := range strings.Split(addrs, ",") {
		ln, err := u.Listen(fmt.Sprintf("l%d", i), "tcp", addr)
		if err != nil {
			u.Fail(err)
			fmt.Fprintln(os.Stderr, "bench tcpgrace server:", err)
			return 1
		}
		lns = append(lns, ln)
	}
	if err := u.Ready(); err != nil {
		fmt.Fprintln(os.Stderr, "bench tcpgrace server:", err)
		return 1
	}
	st.stamp(stampReady, time.Now())
	srv := &tcpgrace.Server{Upgrader: u, Signals: sigs, DrainTimeout: handoffDrain,
		Handler: func(_ context.Context, c net.Conn) { echoLines(c) }}
	if err := srv.Serve(context.Background(), lns...); err != nil {
		fmt.Fprintln(os.Stderr, "bench tcpgrace server:", err)
		return 1
	}
	return 0
}

// tfServer is the same line server on tableflip, written as its README
// and tcp example are: New, Listen, an accept loop per listener, Ready,
// a goroutine that calls Upgrade on SIGUSR1, and an exit once Exit is
// closed, after the open connections ended (at most handoffDrain). It
// registers the signals tgServer's NotifySignals registers (SIGUSR1,
// SIGTERM, SIGINT, SIGHUP), as a server that does the same needs to:
// Go's runtime takes some 60 µs here to start catching each.
func tfServer(addrs string) int {
	begin := time.Now()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	st, err := openStamps()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench tableflip server:", err)
		return 1
	}
	st.stamp(stampMain, begin)
	st.stamp(stampNew, time.Now())
	upg, err := tableflip.New(tableflip.Options{PIDFile: os.Getenv(pidEnv), UpgradeTimeout: 30 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench tableflip server:", err)
		return 1
	}
	defer upg.Stop()
	var conns sync.WaitGroup
	var lns []net.Listener
	for _, addr := range strings.Split(addrs, ",") {
		ln, err := upg.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench tableflip server:", err)
			return 1
		}
		lns = append(lns, ln)
		go acceptLines(ln, &conns)
	}
	if err := upg.Ready(); err != nil {
		fmt.Fprintln(os.Stderr, "bench tableflip server:", err)
		return 1
	}
	st.stamp(stampReady, time.Now())
	left := make(chan struct{}) // closed once the signal loop is done: stamped, or stopped
	go tfSignals(upg, sigs, st, left)
	<-upg.Exit()
	<-left
	for _, ln := range lns {
		ln.Close()
	}
	return waitConns(&conns, handoffDrain)
}

// tfSignals upgrades upg on SIGUSR1, once its parent, if any, has
// exited, and stops it on SIGTERM; it closes left after a successful
// upgrade (stamped) or a stop.
func tfSignals(upg *tableflip.Upgrader, sigs <-chan os.Signal, st *stamps, left chan<- struct{}) {
	defer close(left)
	for s := range sigs {
		switch s {
		case syscall.SIGTERM, syscall.SIGINT:
			upg.Stop()
			return
		case syscall.SIGHUP:
			continue // nothing to reload, as for tgServer without Server.Reload
		}
		st.stamp(stampRequest, time.Now())
		// tableflip refuses to upgrade until it has seen its parent
		// exit, which it may not have yet if the signal came at once.
		ctx, cancel := context.WithTimeout(context.Background(), handoffDrain)
		err := upg.WaitForParent(ctx)
		cancel()
		if err == nil {
			err = upg.Upgrade()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench tableflip server: upgrade failed:", err)
			continue
		}
		st.stamp(stampNoticed, time.Now())
		return
	}
}

// acceptLines serves each connection ln accepts with echoLines until ln
// is closed.
func acceptLines(ln net.Listener, conns *sync.WaitGroup) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		conns.Go(func() { echoLines(c) })
	}
}

// waitConns waits until every connection ended, at most d; it returns
// the exit status: 0, or 1 if some were still open.
func waitConns(conns *sync.WaitGroup, d time.Duration) int {
	done := make(chan struct{})
	go func() {
		conns.Wait()
		close(done)
	}()
	select {
	case <-done:
		return 0
	case <-time.After(d):
		fmt.Fprintln(os.Stderr, "bench tableflip server: connections still open after", d)
		return 1
	}
}
