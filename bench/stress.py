#!/usr/bin/env python3
"""Loss-checking load client for line-echo servers (Python 3 standard library only).

Every request sends one unique line and expects exactly that line back.
Every outcome is counted separately: ok, refused, reset, timeout, closed
(the connection ended before the reply) and mismatch (a wrong reply).

Usage:
  stress.py (--tcp HOST:PORT | --unix PATH) [--workers N] [--duration SECONDS]
            [--max-requests N] [--per-conn K] [--timeout SECONDS] [--trace FILE]

A progress line goes to stderr every second; a JSON summary goes to stdout,
also when SIGTERM or SIGINT ends the run early.
The exit status is 1 if any request failed, 2 on bad usage, 0 otherwise.
Only loopback addresses (127.0.0.0/8, ::1) and Unix sockets are accepted.
"""

import argparse
import ipaddress
import json
import signal
import socket
import sys
import threading
import time

FAILURE_KINDS = ("refused", "reset", "timeout", "closed", "mismatch")


class Stats:
    """Counts and latencies shared by all workers."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {"ok": 0, **{k: 0 for k in FAILURE_KINDS}}
        self.latencies = []
        self.issued = 0
        self.trace = None  # (start, latency, kind) per request when --trace is given

    def take(self, limit):
        """Reserve one request; False once limit requests were issued."""
        with self.lock:
            if self.issued >= limit:
                return False
            self.issued += 1
            return True

    def record(self, kind, latency=None, start=None):
        with self.lock:
            self.counts[kind] += 1
            if latency is not None:
                self.latencies.append(latency)
            if self.trace is not None and start is not None:
                self.trace.append((start, latency if latency is not None else -1.0, kind))

    def failed(self):
        with self.lock:
            return sum(self.counts[k] for k in FAILURE_KINDS)


def loopback_tcp(spec):
    """Parse HOST:PORT and refuse anything that is not loopback."""
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--tcp {spec!r}: want HOST:PORT")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ValueError(f"--tcp {spec!r}: {e}") from None
    for family, _, _, _, sockaddr in infos:
        if not ipaddress.ip_address(sockaddr[0]).is_loopback:
            raise ValueError(f"--tcp {spec!r}: {sockaddr[0]} is not a loopback address; "
                             "this client only targets 127.0.0.0/8 or ::1")
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


def classify(exc):
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, FileNotFoundError):
        return "refused"  # the Unix socket file is gone: nobody to connect to
    return "reset"


def read_line(sock, buf):
    """Read up to and including the next newline; None if the peer closed first."""
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    line, _, rest = buf.partition(b"\n")
    return line + b"\n", rest


def worker(wid, args, target, stats, stop):
    seq = 0
    while not stop.is_set():
        try:
            sock = socket.socket(target[0], socket.SOCK_STREAM)
        except OSError:
            stats.record("reset")
            continue
        sock.settimeout(args.timeout)
        buf = b""
        try:
            if not stats.take(args.max_requests):
                return
            t0 = time.monotonic()
            try:
                sock.connect(target[1])
            except OSError as e:
                stats.record(classify(e), start=t0)
                continue
            for i in range(args.per_conn):
                if i > 0 and (stop.is_set() or not stats.take(args.max_requests)):
                    return
                if i > 0:
                    t0 = time.monotonic()
                seq += 1
                line = f"w{wid}-{seq}-{time.monotonic_ns()}\n".encode()
                try:
                    sock.sendall(line)
                    got, buf = read_line(sock, buf)
                except OSError as e:
                    stats.record(classify(e), start=t0)
                    break
                if got is None:
                    stats.record("closed", start=t0)
                    break
                if got != line:
                    stats.record("mismatch", start=t0)
                    break
                stats.record("ok", time.monotonic() - t0, start=t0)
        finally:
            sock.close()


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    k = min(len(sorted_values) - 1, int(p / 100.0 * len(sorted_values)))
    return sorted_values[k] * 1000.0


def summary(stats, elapsed):
    with stats.lock:
        lat = sorted(stats.latencies)
        counts = dict(stats.counts)
    failed = sum(counts[k] for k in FAILURE_KINDS)
    return {
        **counts,
        "failed": failed,
        "requests": counts["ok"] + failed,
        "seconds": round(elapsed, 3),
        "rps": round(counts["ok"] / elapsed, 1) if elapsed > 0 else 0.0,
        "p50_ms": round(percentile(lat, 50), 3),
        "p99_ms": round(percentile(lat, 99), 3),
        "p999_ms": round(percentile(lat, 99.9), 3),
        "max_ms": round(lat[-1] * 1000.0, 3) if lat else 0.0,
    }


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="loopback TCP address of the server")
    where.add_argument("--unix", metavar="PATH", help="Unix socket path of the server")
    p.add_argument("--workers", type=int, default=8, metavar="N",
                   help="concurrent client threads (default 8)")
    p.add_argument("--duration", type=float, default=10.0, metavar="SECONDS",
                   help="stop after this many seconds (default 10)")
    p.add_argument("--max-requests", type=int, default=1_000_000, metavar="N",
                   help="stop after this many requests in all (default 1000000)")
    p.add_argument("--per-conn", type=int, default=1, metavar="K",
                   help="requests per connection: 1 opens a new connection per request (default 1)")
    p.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                   help="per-operation socket timeout (default 5)")
    p.add_argument("--trace", metavar="FILE",
                   help="also write one line per request: start (CLOCK_MONOTONIC seconds), "
                        "latency ms (-1 if failed), outcome")
    args = p.parse_args(argv)
    for name in ("workers", "max_requests", "per_conn"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.duration <= 0 or args.timeout <= 0:
        p.error("--duration and --timeout must be positive")
    return p, args


def main(argv=None):
    p, args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.tcp:
        try:
            target = loopback_tcp(args.tcp)
        except ValueError as e:
            p.error(str(e))
    else:
        target = (socket.AF_UNIX, args.unix)
    stats, stop = Stats(), threading.Event()
    if args.trace:
        stats.trace = []
    threads = [threading.Thread(target=worker, args=(w, args, target, stats, stop), daemon=True)
               for w in range(args.workers)]
    ended = threading.Event()  # set by SIGTERM or SIGINT: stop now and report
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: ended.set())
    start = time.monotonic()
    for t in threads:
        t.start()
    deadline = start + args.duration
    last = (start, 0)
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline and not ended.is_set():
        ended.wait(min(1.0, max(0.0, deadline - time.monotonic())))
        now = time.monotonic()
        with stats.lock:
            ok = stats.counts["ok"]
        print(f"stress: {now - start:6.1f}s {(ok - last[1]) / max(now - last[0], 1e-9):9.0f} req/s "
              f"ok={ok} failed={stats.failed()}", file=sys.stderr, flush=True)
        last = (now, ok)
    stop.set()
    for t in threads:
        t.join(args.timeout + 1.0)
    result = summary(stats, time.monotonic() - start)
    if args.trace:
        with stats.lock, open(args.trace, "w") as f:
            for t0, lat, kind in stats.trace:
                f.write(f"{t0:.6f} {lat * 1000.0 if lat >= 0 else -1:.3f} {kind}\n")
    print(json.dumps(result), flush=True)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
