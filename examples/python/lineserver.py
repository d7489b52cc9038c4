#!/usr/bin/env python3
"""lineserver.py: the line echo server of examples/lineserver, in Python.

Standard library only, and no tcpgrace code: it speaks systemd's two small
protocols, so it runs under `tcpgrace run` and under systemd socket
activation alike.

  * Sockets: LISTEN_FDS sockets from fd 3 onwards, meant for this process
    when LISTEN_PID is its pid, named in LISTEN_FDNAMES (sd_listen_fds(3)).
  * Readiness: READY=1 to the datagram socket in NOTIFY_SOCKET once it
    serves, STOPPING=1 when it begins to drain, STATUS= along the way
    (sd_notify(3)).

Each line a stream connection sends is sent back; each datagram is sent
back to its sender. SIGTERM or SIGINT: stop accepting, finish the open
connections (up to --drain-timeout seconds), exit 0. SIGHUP is logged.

    tcpgrace run -listen tcp://127.0.0.1:8080 -- python3 lineserver.py
"""

import argparse
import os
import selectors
import signal
import socket
import sys
import threading
import time

LISTEN_FDS_START = 3

# How many connections (or datagrams) one turn takes from one socket. Each
# turn of the loop serves every ready socket once, a batch each, so a busy
# socket cannot starve the others: draining one queue while it is not empty
# would never end under steady load.
BATCH = 4


def log(msg, **kv):
    """One line per event on stderr, key=value as Go's log/slog writes."""
    kv = {"level": "INFO", "msg": msg, "pid": os.getpid(), **kv}
    line = " ".join(f"{k}={quote(str(v))}" for k, v in kv.items())
    sys.stderr.write(line + "\n")  # one write: the supervisor and others share this stderr
    sys.stderr.flush()


def quote(v):
    return f'"{v}"' if not v or any(c in v for c in ' ="') else v


def listen_fds():
    """The sockets this process was handed, as (name, socket) pairs."""
    pid, count = os.environ.get("LISTEN_PID"), os.environ.get("LISTEN_FDS")
    names = os.environ.get("LISTEN_FDNAMES", "")
    for var in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)  # not for the processes this one starts
    if pid != str(os.getpid()) or not count:
        return []
    n = int(count)
    names = names.split(":") if names else []
    names += ["unknown"] * (n - len(names))
    socks = []
    for i in range(n):
        fd = LISTEN_FDS_START + i
        os.set_inheritable(fd, False)
        s = socket.socket(fileno=fd)  # family and type are read off the socket
        # Non-blocking for the select loop. The flag belongs to the socket,
        # which every instance holding it shares: each instance must set the
        # mode it needs, and this one does not mind what the others set.
        s.setblocking(False)
        socks.append((names[i], s))
    return socks


def notify(*lines):
    """Send one sd_notify message without waiting; nothing without NOTIFY_SOCKET."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # an abstract socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.setblocking(False)  # a manager that reads nothing must not hold us up
        try:
            s.sendto("\n".join(lines).encode(), addr)
        except OSError as e:  # its queue is full, or it is gone: the message is lost
            log("sd_notify failed", level="WARN", err=e)


class Server:
    def __init__(self, socks, drain_timeout):
        self.socks = socks
        self.drain_timeout = drain_timeout
        self.stopping = False
        self.active = 0
        self.idle = threading.Condition()

    def on_signal(self, signum, _frame):
        if signum == signal.SIGHUP:
            log("SIGHUP: nothing to reload")
            return
        self.stopping = True

    def serve(self):
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())  # a signal wakes select at once
        sel = selectors.DefaultSelector()
        sel.register(wake_r, selectors.EVENT_READ)
        for _, s in self.socks:
            sel.register(s, selectors.EVENT_READ)
        notify("READY=1", f"STATUS=serving {len(self.socks)} sockets")
        log("ready", sockets=",".join(name for name, _ in self.socks))
        while not self.stopping:
            # select() is level-triggered: a socket with more waiting than
            # one batch is ready again on the next turn, and every other
            # ready socket has had its batch in between.
            for key, _ in sel.select():
                if key.fileobj is wake_r:
                    try:
                        wake_r.recv(64)
                    except BlockingIOError:
                        pass
                elif key.fileobj.type == socket.SOCK_STREAM:
                    self.accept(key.fileobj)
                else:
                    self.datagrams(key.fileobj)
        self.drain(sel)

    def accept(self, ln):
        for _ in range(BATCH):
            try:
                conn, _ = ln.accept()
            except (BlockingIOError, InterruptedError):
                return  # another instance took it, or the queue is empty
            conn.setblocking(True)
            with self.idle:
                self.active += 1
            threading.Thread(target=self.echo, args=(conn,), daemon=True).start()

    def echo(self, conn):
        try:
            with conn, conn.makefile("rb") as lines:
                for line in lines:
                    if not line.endswith(b"\n"):
                        break  # a partial last line is not answered
                    conn.sendall(line)
        except OSError:
            pass
        finally:
            with self.idle:
                self.active -= 1
                self.idle.notify_all()

    def datagrams(self, pc):
        for _ in range(BATCH):
            try:
                data, peer = pc.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            try:
                pc.sendto(data, peer)
            except OSError:
                pass

    def drain(self, sel):
        # Closing our copies does not close the sockets: the supervisor and
        # the next instance hold them, and what waits in their queues is
        # theirs to accept. Never shutdown(), which would stop them all.
        for _, s in self.socks:
            sel.unregister(s)
            s.close()
        with self.idle:
            notify("STOPPING=1", f"STATUS=draining {self.active} connections")
            log("draining", connections=self.active)
            deadline = time.monotonic() + self.drain_timeout
            while self.active and time.monotonic() < deadline:
                self.idle.wait(deadline - time.monotonic())
            left = self.active
        log("exit", cut=left)


def main():
    # Handlers first: a SIGTERM before them would kill the process.
    server = Server([], 30.0)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, server.on_signal)
    p = argparse.ArgumentParser(description="line echo server over inherited sockets")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="seconds open connections may take to finish")
    args = p.parse_args()
    server.drain_timeout = args.drain_timeout
    server.socks = listen_fds()
    log("start", version="python", sockets=len(server.socks))
    if not server.socks:
        print("lineserver.py: no sockets: LISTEN_FDS is unset or meant for another process", file=sys.stderr)
        return 1
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
