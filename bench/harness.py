#!/usr/bin/env python3
"""Restart a running lineserver under load and print the loss table.

Builds lineserver (once per restart, stamping a new version into each
binary, so every upgrade really runs a new executable), starts it on a
loopback TCP port and a Unix socket, runs stress.py against both, and
restarts it --upgrades times, --interval seconds apart:

  tcpgrace  SIGUSR1: the live upgrade (a new binary renamed over the old
            one first); the new generation's /proc/PID/exe is checked to be
            that new file
  naive     SIGTERM, wait for the exit, start the new binary: the usual
            stop-then-start restart, for contrast (--naive)

For each mode it prints requests, failures by kind, requests/s, the
hand-off time (signal until the new process's pid file names it) and the
latency p99 of requests started during restart windows against steady
state. Exit status 1 if the tcpgrace mode lost any request or a restart did
not complete; the naive mode's losses are expected and only reported.

Usage:
  harness.py [--source PKG | --server PATH] [--upgrades N] [--interval SECONDS]
             [--workers N] [--per-conn K] [--listeners N] [--naive] [--json FILE]
             [--report-at N,N...]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = ["refused", "reset", "timeout", "closed", "mismatch"]
WINDOW_TAIL = 0.2  # seconds after the new process is ready still counted as the restart window


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def wait_until(cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.0005)
    return False


def alive(pid):
    """True while pid runs; a zombie (exited, not yet reaped) is not alive."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def resources(pid):
    """Open fds and resident memory (KiB) of pid."""
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return -1, -1
    return fds, rss


def percentile(values, p):
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100.0 * len(values)))]


class Builds:
    """Produces a new lineserver binary per restart: built from source with
    a version stamp, or copied from a prebuilt path. Every binary is built
    before the load starts: a build (a link at least, a second of both CPUs)
    must not run beside the server while latencies are measured."""

    def __init__(self, work, source, server, count):
        self.dir, self.source, self.server, self.n = os.path.join(work, "builds"), source, server, 0
        os.makedirs(self.dir)
        self.built = []
        for i in range(1, count + 1 if source else 0):
            out = os.path.join(self.dir, f"lineserver-{i}")
            subprocess.run(["go", "build", "-ldflags", f"-X main.version=build-{i}", "-o", out, self.source],
                           check=True)
            self.built.append(out)

    def next(self):
        self.n += 1
        if not self.source:
            return self.server  # deploy() copies it: every restart still gets a new file
        return self.built[(self.n - 1) % len(self.built)]


def deploy(src, dst):
    """Put src at dst as a deploy does: copy beside it, then rename over."""
    shutil.copy2(src, dst + ".new")
    os.rename(dst + ".new", dst)
    st = os.stat(dst)
    return st.st_dev, st.st_ino


def runs_file(pid, ident):
    """True if process pid executes the file identified by ident (dev, ino)."""
    try:
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == ident


class Run:
    """One mode: a server under load, restarted N times."""

    def __init__(self, mode, args, work):
        self.mode, self.args = mode, args
        self.dir = os.path.join(work, mode)
        os.makedirs(self.dir)
        self.binary = os.path.join(self.dir, "lineserver")
        self.pidfile = os.path.join(self.dir, "lineserver.pid")
        self.sock = os.path.join(self.dir, "line.sock")
        self.port = free_port()
        self.extra_ports = [free_port() for _ in range(max(0, args.listeners - 2))]
        self.log = open(os.path.join(self.dir, "server.log"), "w")
        self.procs, self.handoffs, self.windows, self.problems = [], [], [], []
        self.resources = []  # (restart, pid, fds, rss_kib) at the restarts in --report-at
        self.retries = 0  # upgrade signals sent again after a refusal

    def start_server(self):
        cmd = [self.binary, "-tcp", f"127.0.0.1:{self.port}", "-unix", self.sock, "-pidfile", self.pidfile,
               "-drain-timeout", "10s"]
        for port in self.extra_ports:  # idle listeners, handed over like the others
            cmd += ["-tcp", f"127.0.0.1:{port}"]
        p = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        self.procs.append(p)
        return p

    def clients(self):
        # Stopped with SIGTERM after the last restart; the duration is only
        # a bound in case the harness itself dies.
        duration = (self.args.interval + 2) * (self.args.upgrades + 1) + 10
        stress = os.path.join(HERE, "stress.py")
        common = ["--workers", str(self.args.workers), "--duration", str(duration),
                  "--per-conn", str(self.args.per_conn)]
        out = {}
        for name, where in (("tcp", ["--tcp", f"127.0.0.1:{self.port}"]), ("unix", ["--unix", self.sock])):
            trace = os.path.join(self.dir, f"{name}.trace")
            out[name] = (subprocess.Popen([sys.executable, stress, *where, *common, "--trace", trace],
                                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True), trace)
        return out

    def restart(self, n, build, ident):
        """Restarts the server onto build: tcpgrace's upgrade (build is
        deployed already, as ident) or the naive stop-then-start."""
        old = read_pid(self.pidfile)
        if self.mode == "tcpgrace":
            t0 = time.monotonic()
            os.kill(old, signal.SIGUSR1)
            # An upgrade is refused while too many older generations still
            # drain (tcpgrace.ErrTooManyGenerations): ask again.
            for _ in range(5):
                if wait_until(lambda: read_pid(self.pidfile) not in (0, old), 5):
                    break
                self.retries += 1
                os.kill(old, signal.SIGUSR1)
        else:
            t0 = time.monotonic()
            os.kill(old, signal.SIGTERM)
            wait_until(lambda: not alive(old) or self.procs[-1].poll() is not None, 30)
            self.procs[-1].wait(30)
            ident = deploy(build, self.binary)
            self.start_server()
        if not wait_until(lambda: read_pid(self.pidfile) not in (0, old), 30):
            self.problems.append(f"restart {n}: no new process ready within 30s")
            return
        t1 = time.monotonic()
        new = read_pid(self.pidfile)
        if not runs_file(new, ident):
            self.problems.append(f"restart {n}: pid {new} does not run the binary just deployed")
        self.handoffs.append((t1 - t0) * 1000.0)
        self.windows.append((t0, t1 + WINDOW_TAIL))
        if n in self.args.report_at:
            self.resources.append((n, new, *resources(new)))
        print(f"harness: {self.mode} restart {n}: pid {old} -> {new} in {self.handoffs[-1]:.1f} ms",
              file=sys.stderr, flush=True)

    def execute(self, builds):
        deploy(builds.next(), self.binary)
        first = self.start_server()
        try:
            if not wait_until(lambda: read_pid(self.pidfile) == first.pid, 15):
                raise SystemExit(f"harness: lineserver did not become ready; see {self.log.name}")
            clients = self.clients()
            for n in range(1, self.args.upgrades + 1):
                # The deploy (a copy of the binary) halfway between restarts,
                # away from the windows measured around them.
                build = builds.next()
                time.sleep(self.args.interval / 2)
                ident = deploy(build, self.binary) if self.mode == "tcpgrace" else None
                time.sleep(self.args.interval / 2)
                self.restart(n, build, ident)
            time.sleep(min(self.args.interval, 1.0))  # load after the last restart too
            for p, _ in clients.values():
                p.send_signal(signal.SIGTERM)
            results = {name: json.loads(p.communicate()[0] or "{}") for name, (p, _) in clients.items()}
            self.latency_windows({name: trace for name, (_, trace) in clients.items()}, results)
        finally:
            last = read_pid(self.pidfile)
            if last and alive(last):
                os.kill(last, signal.SIGTERM)
                wait_until(lambda: not alive(last), 15)
            for p in self.procs:
                if p.poll() is None:
                    p.wait(15)
            self.log.close()
        return results

    def latency_windows(self, traces, results):
        for name, path in traces.items():
            inside, outside = [], []
            with open(path) as f:
                for line in f:
                    t0, lat, kind = line.split()
                    if kind != "ok":
                        continue
                    t0 = float(t0)
                    (inside if any(a <= t0 <= b for a, b in self.windows) else outside).append(float(lat))
            results[name]["p99_steady_ms"] = round(percentile(outside, 99), 3)
            results[name]["p99_restart_ms"] = round(percentile(inside, 99), 3)
            results[name]["requests_in_restart_windows"] = len(inside)


def table(runs):
    cols = ["ok", "failed", *KINDS, "rps", "p99_steady_ms", "p99_restart_ms"]
    heads = ["ok", "failed", *KINDS, "req/s", "p99 steady", "p99 restart"]
    lines = [f"{'mode':<9}{'client':<7}" + "".join(f"{h:>12}" for h in heads)]
    for run, results in runs:
        for name, r in results.items():
            lines.append(f"{run.mode:<9}{name:<7}" + "".join(f"{r.get(c, '?'):>12}" for c in cols))
    lines.append("")
    lines.append(f"{'mode':<9}{'restarts':>9}{'hand-off p50 ms':>17}{'p99 ms':>9}{'max ms':>9}")
    for run, _ in runs:
        h = run.handoffs
        if h:
            lines.append(f"{run.mode:<9}{len(h):>9}{percentile(h, 50):>17.1f}{percentile(h, 99):>9.1f}{max(h):>9.1f}"
                         + (f"   ({run.retries} upgrade signals repeated after a refusal)" if run.retries else ""))
        for p in run.problems:
            lines.append(f"PROBLEM ({run.mode}): {p}")
    for run, _ in runs:
        if run.resources:
            lines.append("")
            lines.append(f"{'mode':<9}{'restart':>8}{'pid':>9}{'fds':>6}{'RSS KiB':>10}   (the new process, right after it is ready)")
            for n, pid, fds, rss in run.resources:
                lines.append(f"{run.mode:<9}{n:>8}{pid:>9}{fds:>6}{rss:>10}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--source", help="Go package of lineserver to build for every restart, e.g. ./examples/lineserver")
    what.add_argument("--server", help="prebuilt lineserver binary, copied for every restart")
    p.add_argument("--upgrades", type=int, default=5, help="number of restarts per mode (default 5)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between restarts (default 2)")
    p.add_argument("--workers", type=int, default=8, help="client threads per socket (default 8)")
    p.add_argument("--per-conn", type=int, default=1, help="requests per client connection (default 1)")
    p.add_argument("--listeners", type=int, default=2,
                   help="listening sockets of the server: one TCP and one Unix under load, the rest idle TCP (default 2)")
    p.add_argument("--naive", action="store_true", help="also run the stop-then-start restart for contrast")
    p.add_argument("--json", help="write all results to this file as JSON")
    p.add_argument("--report-at", default="1", help="restarts after which to record the new process's fds "
                   "and RSS, comma-separated (default 1)")
    args = p.parse_args()
    try:
        args.report_at = {int(x) for x in args.report_at.split(",") if x}
    except ValueError:
        p.error("--report-at wants comma-separated restart numbers")
    if args.upgrades < 1 or args.interval <= 0 or args.workers < 1 or args.per_conn < 1:
        p.error("--upgrades, --workers and --per-conn must be at least 1, --interval positive")
    work = tempfile.mkdtemp(prefix="tcpgrace-harness-")
    builds = Builds(work, args.source, args.server, args.upgrades + 1)
    runs = []
    for mode in ["tcpgrace"] + (["naive"] if args.naive else []):
        run = Run(mode, args, work)
        runs.append((run, run.execute(builds)))
    print()
    print(table(runs))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({run.mode: {"clients": r, "handoff_ms": run.handoffs, "problems": run.problems,
                                  "resources": run.resources}
                       for run, r in runs}, f, indent=2)
    run, results = runs[0]
    lost = sum(r.get("failed", 1) for r in results.values())
    if lost or run.problems or len(run.handoffs) != args.upgrades:
        print(f"\nFAILED: tcpgrace lost {lost} requests or a restart failed; logs kept in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print(f"\ntcpgrace: zero failed requests across {args.upgrades} live upgrades")
    return 0


if __name__ == "__main__":
    sys.exit(main())
