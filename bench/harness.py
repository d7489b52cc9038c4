#!/usr/bin/env python3
"""Upgrade a running lineserver under load and print the loss table.

Starts the given lineserver binary (copied into a temporary directory, so
that each upgrade can deploy a new file over it) on a loopback TCP port and
a Unix socket, runs stress.py against both, sends SIGUSR1 every --interval
seconds, --upgrades times, and reports what the clients saw. Exit status 1
if any request failed or any upgrade did not complete.

Usage:
  harness.py --server PATH [--upgrades N] [--interval SECONDS] [--workers N]
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
        time.sleep(0.001)
    return False


def deploy(src, dst):
    """Put a new copy of src at dst as a deploy does: write, then rename over."""
    tmp = dst + ".new"
    shutil.copy2(src, tmp)
    os.rename(tmp, dst)


def alive(pid):
    """True while pid runs; a zombie (exited, not yet reaped) is not alive."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def run(args):
    work = tempfile.mkdtemp(prefix="tcpgrace-harness-")
    binary, pidfile = os.path.join(work, "lineserver"), os.path.join(work, "lineserver.pid")
    sock, port = os.path.join(work, "line.sock"), free_port()
    deploy(args.server, binary)
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen([binary, "-tcp", f"127.0.0.1:{port}", "-unix", sock, "-pidfile", pidfile,
                               "-drain-timeout", "10s"], stdout=log, stderr=log)
    pids, handoffs, problems = [], [], []
    try:
        if not wait_until(lambda: read_pid(pidfile) == server.pid, 10):
            raise SystemExit(f"harness: lineserver did not become ready; see {log.name}")
        pids.append(server.pid)
        duration = args.interval * (args.upgrades + 1) + 1
        stress = os.path.join(HERE, "stress.py")
        common = ["--workers", str(args.workers), "--duration", str(duration)]
        clients = {
            "tcp": subprocess.Popen([sys.executable, stress, "--tcp", f"127.0.0.1:{port}", *common],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True),
            "unix": subprocess.Popen([sys.executable, stress, "--unix", sock, *common],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True),
        }
        for n in range(1, args.upgrades + 1):
            time.sleep(args.interval)
            deploy(args.server, binary)
            old = read_pid(pidfile)
            t0 = time.monotonic()
            os.kill(old, signal.SIGUSR1)
            if not wait_until(lambda: read_pid(pidfile) not in (0, old), 30):
                problems.append(f"upgrade {n}: no new generation within 30s")
                continue
            handoffs.append((n, old, read_pid(pidfile), (time.monotonic() - t0) * 1000))
            pids.append(read_pid(pidfile))
            print(f"harness: upgrade {n}: pid {old} -> {pids[-1]} in {handoffs[-1][3]:.1f} ms",
                  file=sys.stderr, flush=True)
        results = {name: json.loads(p.communicate()[0] or "{}") for name, p in clients.items()}
        for n, old, new, _ in handoffs:
            if not wait_until(lambda: not alive(old), 15):
                problems.append(f"upgrade {n}: old generation {old} still alive")
    finally:
        last = read_pid(pidfile) or server.pid
        os.kill(last, signal.SIGTERM)
        wait_until(lambda: not alive(last), 15)
        server.wait(15)
        log.close()
    return results, handoffs, problems, work


def print_table(results, handoffs, problems):
    kinds = ["ok", "failed", "refused", "reset", "timeout", "closed", "mismatch"]
    print()
    print(f"{'client':<8}" + "".join(f"{k:>10}" for k in kinds) + f"{'req/s':>10}{'p99 ms':>10}")
    for name, r in results.items():
        print(f"{name:<8}" + "".join(f"{r.get(k, '?'):>10}" for k in kinds)
              + f"{r.get('rps', '?'):>10}{r.get('p99_ms', '?'):>10}")
    if handoffs:
        ms = sorted(h[3] for h in handoffs)
        print(f"\nupgrades: {len(handoffs)}   hand-off ms: p50 {ms[len(ms) // 2]:.1f}"
              f"   max {ms[-1]:.1f}   (signal until the new generation's pid file)")
    for p in problems:
        print("PROBLEM:", p)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", required=True, help="path of the lineserver binary to deploy")
    p.add_argument("--upgrades", type=int, default=5, help="number of live upgrades (default 5)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between upgrades (default 1)")
    p.add_argument("--workers", type=int, default=8, help="client threads per socket (default 8)")
    args = p.parse_args()
    results, handoffs, problems, work = run(args)
    print_table(results, handoffs, problems)
    failed = sum(r.get("failed", 1) for r in results.values())
    if failed or problems or len(handoffs) != args.upgrades:
        print(f"\nFAILED: {failed} lost requests; server log kept in {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print("\nzero failed requests across all upgrades")
    return 0


if __name__ == "__main__":
    sys.exit(main())
