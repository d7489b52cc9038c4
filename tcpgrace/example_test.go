//go:build unix

package tcpgrace_test

import (
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// Example shows the life of one generation of an HTTP service: register
// the sockets by name, serve, declare Ready, upgrade on SIGUSR1, and drain
// when the next generation has taken over or on SIGTERM.
//
// The first generation binds 127.0.0.1:8080; every later one inherits the
// same kernel socket from its parent under the name "web", so no
// connection is refused during an upgrade.
func Example() {
	// Signals first: a SIGTERM that arrives before Notify would kill the
	// process without a drain.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)

	// New takes the sockets this process inherited; call it once.
	upg, err := tcpgrace.New(tcpgrace.Options{PIDFile: "/run/example/example.pid"})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Close()

	// Listen returns the inherited socket named "web", or binds a new one.
	ln, err := upg.Listen("web", "tcp", "127.0.0.1:8080")
	if err != nil {
		upg.Fail(err) // the parent, if any, keeps serving and logs why
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.Serve(ln)

	// Ready writes the pid file and tells the parent generation to stop
	// accepting and drain.
	if err := upg.Ready(); err != nil {
		log.Fatal(err)
	}

	for {
		select {
		case sig := <-sigs:
			if sig != syscall.SIGUSR1 {
				drain(upg, srv)
				return
			}
			// Upgrade blocks until the next generation is ready or has
			// failed; on failure this generation simply keeps serving.
			if err := upg.Upgrade(context.Background()); err != nil {
				log.Println("upgrade failed, still serving:", err)
			}
		case <-upg.Exit():
			// The next generation serves; our listener is closed already.
			drain(upg, srv)
			return
		}
	}
}

// drain finishes the requests in flight, then lets go of everything.
func drain(upg *tcpgrace.Upgrader, srv *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	if err := upg.Shutdown(ctx); err != nil {
		log.Println("shutdown:", err)
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
	// ... Listen, serve, Ready as in the package example.
}

// ExampleUpgrader_Upgrade shows how a caller tells the outcomes of an
// upgrade apart.
func ExampleUpgrader_Upgrade() {
	upg, err := tcpgrace.New(tcpgrace.Options{ReadyTimeout: 30 * time.Second})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Close()
	// ... Listen, serve, Ready.

	err = upg.Upgrade(context.Background())
	switch {
	case err == nil:
		<-upg.Exit() // closed already: the next generation serves
	case errors.Is(err, tcpgrace.ErrUpgradeInProgress):
		log.Println("an upgrade is already running")
	case errors.Is(err, tcpgrace.ErrChildFailed):
		log.Println("the new executable cannot be started:", err)
	case errors.Is(err, tcpgrace.ErrChildFailed), errors.Is(err, tcpgrace.ErrChildFailed),
		errors.Is(err, tcpgrace.ErrReadyTimeout):
		log.Println("the new generation did not come up; still serving:", err)
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
