package tests

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tcpgrace/tcpgrace/tcpgrace"
)

// serverRoleEnv makes the test binary play a small server written against
// the library's public API, for what no example does: a reload hook that
// takes its time, a UDP echo whose replies come late. It is checked in
// init, before TestMain builds anything, and is passed on to every next
// generation with the rest of the environment.
//
//	reload  lineserver's TCP echo (Server.Serve) with a reload hook that
//	        logs "reload hook: begin", takes -reload-delay, logs "reload
//	        hook: end"; two runs at once log an error
//	take-exit3  takes the sockets over from -takeover PATH (New) and
//	        exits 3 before it is ready
//	take-stall  takes them over and never becomes ready
//	take-late   takes them over and calls Ready -reload-delay later; it
//	        exits 4 if Ready fails
//	udp     a UDP echo on -udp (Server.Wait for the signals): it logs
//	        "udp read" per datagram and answers "PID DATA" -reply-delay
//	        later, with -hold-replies not before this generation leaves;
//	        it finishes its replies before it shuts down
//
// Both log "start" (with the version roleVersion) and "exit" as the
// examples do, take -pidfile, -control and -drain-timeout, and exit 0 after a
// drain. With -sigusr2 they upgrade on SIGUSR2 (registered with
// NotifySignals) instead of SIGUSR1.
const serverRoleEnv = "TCPGRACE_E2E_SERVER"

func init() {
	if role := os.Getenv(serverRoleEnv); role != "" {
		os.Exit(runServerRole(role, os.Args[1:]))
	}
}

// roleConfig is a role server's command line.
type roleConfig struct {
	pidFile, tcp, udp        string
	control, takeover        string
	reloadDelay, replyDelay  time.Duration
	drainTimeout             time.Duration
	holdReplies, sigusr2     bool
	readyTimeout, readyGrace time.Duration
}

func parseRoleFlags(args []string) (*roleConfig, error) {
	var c roleConfig
	fs := flag.NewFlagSet("role", flag.ContinueOnError)
	fs.StringVar(&c.pidFile, "pidfile", "", "")
	fs.StringVar(&c.tcp, "tcp", "", "")
	fs.StringVar(&c.udp, "udp", "", "")
	fs.StringVar(&c.control, "control", "", "")
	fs.StringVar(&c.takeover, "takeover", "", "")
	fs.DurationVar(&c.reloadDelay, "reload-delay", 0, "")
	fs.DurationVar(&c.replyDelay, "reply-delay", 0, "")
	fs.DurationVar(&c.drainTimeout, "drain-timeout", 10*time.Second, "")
	fs.DurationVar(&c.readyTimeout, "ready-timeout", 0, "")
	fs.DurationVar(&c.readyGrace, "ready-grace", 0, "")
	fs.BoolVar(&c.holdReplies, "hold-replies", false, "")
	fs.BoolVar(&c.sigusr2, "sigusr2", false, "")
	return &c, fs.Parse(args)
}

func runServerRole(role string, args []string) int {
	base := slog.New(slog.NewTextHandler(os.Stderr, nil))
	log := base.With("pid", os.Getpid())
	cfg, err := parseRoleFlags(args) // before NotifySignals: it decides what to register
	if err != nil {
		log.Error("flags", "err", err)
		return 2
	}
	var extra []os.Signal
	if cfg.sigusr2 {
		extra = []os.Signal{syscall.SIGUSR2}
	}
	sigs := tcpgrace.NotifySignals(extra...) // first, as every example does
	log.Info("start", "version", roleVersion, "role", role)
	u, err := tcpgrace.New(tcpgrace.Options{PIDFile: cfg.pidFile, Control: cfg.control, Logger: base,
		ReadyTimeout: cfg.readyTimeout, ReadyGrace: cfg.readyGrace, Takeover: cfg.takeover})
	if err != nil {
		log.Error("start", "err", err)
		return 1
	}
	switch role {
	case "reload":
		err = serveReloadRole(u, sigs, cfg, log)
	case "udp":
		err = serveUDPRole(u, sigs, cfg, log)
	case "take-exit3":
		log.Info("took over; exiting 3")
		return 3
	case "take-stall":
		log.Info("took over; stalling")
		time.Sleep(time.Hour)
		return 1
	case "take-late":
		time.Sleep(cfg.reloadDelay) // past the old generation's ready timeout
		if err := u.Ready(); err != nil {
			log.Error("ready", "err", err)
			return 4
		}
		return 0
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		log.Error("role", "err", err)
		return 1
	}
	log.Info("exit")
	return 0
}

// serveReloadRole is the reload role: see serverRoleEnv.
func serveReloadRole(u *tcpgrace.Upgrader, sigs <-chan os.Signal, cfg *roleConfig, log *slog.Logger) error {
	ln, err := u.Listen("tcp:"+cfg.tcp, "tcp", cfg.tcp)
	if err != nil {
		u.Fail(err)
		return err
	}
	if err := u.Ready(); err != nil {
		return err
	}
	var running atomic.Int32
	reload := func() error {
		if running.Add(1) > 1 {
			log.Error("reload hook: two runs at once")
		}
		defer running.Add(-1)
		log.Info("reload hook: begin")
		time.Sleep(cfg.reloadDelay) // stands for reading a configuration
		log.Info("reload hook: end")
		return nil
	}
	srv := &tcpgrace.Server{Upgrader: u, Handler: echoLines, Signals: sigs, Reload: reload, DrainTimeout: cfg.drainTimeout}
	if cfg.sigusr2 {
		srv.UpgradeSignals = []os.Signal{syscall.SIGUSR2}
	}
	if err := srv.Serve(context.Background(), ln); err != nil {
		log.Warn("drained", "err", err)
	}
	return nil
}

// echoLines is lineserver's handler: every line back until the peer
// closes.
func echoLines(_ context.Context, c net.Conn) {
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

// serveUDPRole is the udp role: see serverRoleEnv. It reads until this
// generation leaves (a hand-off or a stop signal), then lets the replies
// already underway finish before it shuts down.
func serveUDPRole(u *tcpgrace.Upgrader, sigs <-chan os.Signal, cfg *roleConfig, log *slog.Logger) error {
	pc, err := u.ListenPacket("udp:"+cfg.udp, "udp4", cfg.udp)
	if err != nil {
		u.Fail(err)
		return err
	}
	udp := pc.(*net.UDPConn) // ListenPacket's result is a *net.UDPConn
	if err := u.Ready(); err != nil {
		return err
	}
	leaving := make(chan struct{}) // the drain began: no reply waits any longer
	var replies sync.WaitGroup
	serve := func() error {
		readUDP(u, udp, cfg, log, leaving, &replies)
		return nil // reading ends only when this generation leaves
	}
	shutdown := func(context.Context) error {
		close(leaving)
		udp.SetReadDeadline(time.Now()) // a stop: no more reading (after a hand-off it has stopped already)
		replies.Wait()
		return nil
	}
	srv := &tcpgrace.Server{Upgrader: u, Signals: sigs, DrainTimeout: cfg.drainTimeout}
	return srv.Run(context.Background(), serve, shutdown)
}

// readUDP answers every datagram in a goroutine of its own until reading
// fails, which is the end once this generation leaves.
func readUDP(u *tcpgrace.Upgrader, udp *net.UDPConn, cfg *roleConfig, log *slog.Logger, leaving <-chan struct{}, replies *sync.WaitGroup) {
	buf := make([]byte, 1500)
	for {
		n, from, err := udp.ReadFrom(buf)
		if err != nil {
			select {
			case <-u.Exit():
				log.Info("udp: stopped reading", "err", err)
			case <-leaving:
				log.Info("udp: stopped reading", "err", err)
			default:
				log.Error("udp read", "err", err)
			}
			return
		}
		data := string(buf[:n])
		log.Info("udp read", "data", data)
		replies.Add(1)
		go func() {
			defer replies.Done()
			time.Sleep(cfg.replyDelay) // stands for the work behind the answer
			if cfg.holdReplies {
				select {
				case <-u.Exit():
				case <-leaving:
				}
			}
			if _, err := udp.WriteTo(fmt.Appendf(nil, "%d %s", os.Getpid(), data), from); err != nil {
				log.Error("udp reply failed", "data", data, "err", err)
				return
			}
			log.Info("udp replied", "data", data)
		}()
	}
}
