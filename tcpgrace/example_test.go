//go:build unix

package tcpgrace_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// ExampleServer_Serve runs one generation of a raw TCP server: register
// the socket by name, declare Ready, then serve. A client connects and
// gets its line back in capitals. Cancelling the context then drains the
// server, as a stop signal does.
//
// A real program passes Signals: tcpgrace.NotifySignals(), called first
// thing in main, and a fixed address such as ":8080". SIGUSR1 then starts
// the next generation, which inherits the same socket under the name
// "upper".
func ExampleServer_Serve() {
	u, err := tcpgrace.New(tcpgrace.Options{})
	if err != nil {
		log.Fatal(err)
	}
	// The socket inherited under this name after an upgrade, or a new one.
	ln, err := u.Listen("upper", "tcp", "127.0.0.1:0")
	if err != nil {
		u.Fail(err) // the parent generation, if any, keeps serving
		log.Fatal(err)
	}
	// Accept only after Ready. ErrReadyIncomplete means serve all the
	// same; after any other error exit, and the parent keeps serving.
	if err := u.Ready(); err != nil && !errors.Is(err, tcpgrace.ErrReadyIncomplete) {
		log.Fatal(err)
	}

	srv := &tcpgrace.Server{Upgrader: u, Handler: upper}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()

	fmt.Print(ask(ln.Addr().String(), "hello"))
	cancel()
	fmt.Println("Serve:", <-served)
	fmt.Println("connections served:", u.Stats().Accepted)
	// Output:
	// HELLO
	// Serve: context canceled
	// connections served: 1
}

// upper is a [tcpgrace.Handler]: it answers one line in capitals and
// closes the connection.
func upper(ctx context.Context, c net.Conn) {
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	fmt.Fprint(c, strings.ToUpper(line))
}

// ask sends one line to addr and returns the answer.
func ask(addr, line string) string {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintln(c, line)
	answer, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		log.Fatal(err)
	}
	return answer
}

// New may be called once per process, and ExampleServer_Serve calls it in
// this test binary, so ExampleServer_Run is compiled but not run, as
// ExampleServer_RunHTTP and the Upgrader examples below; TestRunOwnAcceptLoop runs the same program on
// a cold Upgrader and checks what it prints here.

// ExampleServer_Run runs a server that has its own accept loop, here a
// small one; a grpc.Server fits the same way. Run calls serve in a
// goroutine and calls shutdown when this generation must leave. Cancelling
// the context drains the server, as a stop signal does. For net/http, use
// Server.RunHTTP.
func ExampleServer_Run() {
	u, err := tcpgrace.New(tcpgrace.Options{
		Logger: slog.New(slog.DiscardHandler), // no log at all; nil logs warnings and errors
	})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := u.Listen("upper", "tcp", "127.0.0.1:0")
	if err != nil {
		u.Fail(err)
		log.Fatal(err)
	}
	if err := u.Ready(); err != nil && !errors.Is(err, tcpgrace.ErrReadyIncomplete) {
		log.Fatal(err)
	}

	var conns sync.WaitGroup
	serve := func() error {
		for {
			c, err := ln.Accept()
			if err != nil {
				return err // net.ErrClosed after shutdown or a hand-off: a normal end
			}
			conns.Go(func() { upper(context.Background(), c) })
		}
	}
	shutdown := func(ctx context.Context) error {
		ln.Close() // stop accepting: serve returns
		done := make(chan struct{})
		go func() { conns.Wait(); close(done) }()
		select {
		case <-done:
			return nil
		case <-ctx.Done(): // the drain deadline
			return ctx.Err()
		}
	}

	srv := &tcpgrace.Server{Upgrader: u, DrainTimeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx, serve, shutdown) }()

	fmt.Print(ask(ln.Addr().String(), "hello"))
	cancel()
	err = <-ran
	fmt.Println("Run:", err)                                              // Run: context canceled
	fmt.Println("serve failed:", errors.Is(err, tcpgrace.ErrServeFailed)) // serve failed: false
}

// ExampleServer_RunHTTP is the main of a net/http server that upgrades
// on SIGUSR1 and drains on SIGTERM or SIGINT, with no failed request: the
// drain answers the requests that arrive on kept-alive connections, each
// with "Connection: close". It is compiled, not run (New may be called
// once per process); the README's HTTP program, the same with flags, is
// built and run by the end-to-end tests.
func ExampleServer_RunHTTP() {
	sigs := tcpgrace.NotifySignals() // first thing in main, before New
	u, err := tcpgrace.New(tcpgrace.Options{
		PIDFile:    "/run/web/web.pid",
		ReadyGrace: 5 * time.Second, // roll back if the next generation crashes within 5 s of its Ready
	})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := u.Listen("web", "tcp", ":8080") // inherited after an upgrade
	if err != nil {
		u.Fail(err) // the parent generation, if any, keeps serving
		log.Fatal(err)
	}
	if err := u.Ready(); err != nil && !errors.Is(err, tcpgrace.ErrReadyIncomplete) {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from pid %d\n", os.Getpid())
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	srv := &tcpgrace.Server{Upgrader: u, Signals: sigs, DrainTimeout: 30 * time.Second}
	// RunHTTP returns once this generation has handed over or stopped,
	// and drained.
	if err := srv.RunHTTP(context.Background(), hs, ln); err != nil {
		log.Fatal(err) // hs.Serve failed (ErrServeFailed), or the drain cut connections
	}
}

// ExampleUpgrader_Fail shows a next generation that cannot start: it
// tells its parent why, so that the parent's Upgrade returns an error
// wrapping [tcpgrace.ErrChildFailed] with that reason, and the parent
// goes on serving.
func ExampleUpgrader_Fail() {
	upg, err := tcpgrace.New(tcpgrace.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Close()
	if _, err := os.ReadFile("/etc/example/config.json"); err != nil {
		upg.Fail(err)
		os.Exit(1)
	}
	// ... Listen, Ready and serve as in the example of Server.Serve.
}

// ExampleUpgrader_Upgrade shows how a caller tells the outcomes of an
// upgrade apart.
func ExampleUpgrader_Upgrade() {
	upg, err := tcpgrace.New(tcpgrace.Options{ReadyTimeout: 30 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Close()
	// ... Listen, Ready, serve.

	err = upg.Upgrade(context.Background())
	switch {
	case err == nil:
		<-upg.Exit() // closed already: the next generation serves
	case errors.Is(err, tcpgrace.ErrUpgradeInProgress):
		log.Println("an upgrade is already running")
	case errors.Is(err, tcpgrace.ErrChildFailed), errors.Is(err, tcpgrace.ErrReadyTimeout):
		log.Println("the new generation did not come up; still serving:", err)
	case errors.Is(err, tcpgrace.ErrTooManyGenerations):
		log.Println("older generations still drain; try again later:", err)
	default:
		log.Println("upgrade:", err)
	}
}

// ExampleUpgrader_ListenPacket registers a UDP socket, which an upgrade
// hands on like any listener.
func ExampleUpgrader_ListenPacket() {
	upg, err := tcpgrace.New(tcpgrace.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Close()
	pc, err := upg.ListenPacket("dns", "udp", "127.0.0.1:5353")
	if err != nil {
		log.Fatal(err)
	}
	udp := pc.(*net.UDPConn) // the concrete type, for the UDP-specific calls
	_ = udp
	upg.Ready()
}
