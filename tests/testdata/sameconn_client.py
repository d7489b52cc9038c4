"""Keep-alive HTTP clients that must keep their one TCP connection each:
Python's http.client, never retrying.

Each worker opens one connection and sends GET / on it back to back
until the file --stop exists (or --max-seconds pass). It prints a JSON
line {"worker": W, "pid": P} each time the pid in the answers changes,
flushed, so that the caller can follow which generation answers whom.
At the end it prints {"ok": N, "failed": N, "conns": [per worker: the
local ports its requests used], "pids": [per worker: the pids in the
order they answered], "errors": [...]}. Any exception or non-200
answer is a failure; http.client reconnects by itself after a
"Connection: close", which shows as a second local port. Loopback only.
"""
import argparse
import http.client
import ipaddress
import json
import os
import sys
import threading
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True, help="HOST:PORT on loopback")
    ap.add_argument("--stop", required=True, help="stop once this file exists")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    args = ap.parse_args()
    host, _, port = args.addr.rpartition(":")
    if not ipaddress.ip_address(host.strip("[]")).is_loopback:
        print(f"{host} is not a loopback address", file=sys.stderr)
        return 2
    lock = threading.Lock()
    out = {"ok": 0, "failed": 0, "errors": [],
           "conns": [[] for _ in range(args.workers)], "pids": [[] for _ in range(args.workers)]}
    deadline = time.monotonic() + args.max_seconds

    def worker(w):
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=5)
        ports, pids = out["conns"][w], out["pids"][w]
        while time.monotonic() < deadline and not os.path.exists(args.stop):
            try:
                conn.request("GET", "/")
                local = conn.sock.getsockname()[1]
                resp = conn.getresponse()
                body = resp.read()
                err = None if resp.status == 200 else f"status {resp.status}"
            except (OSError, http.client.HTTPException) as e:
                err, body = repr(e), b""
                conn.close()
            with lock:
                if err is not None:
                    out["failed"] += 1
                    if len(out["errors"]) < 10:
                        out["errors"].append(err)
                    continue
                out["ok"] += 1
                if not ports or ports[-1] != local:
                    ports.append(local)
                pid = int(body)
                if not pids or pids[-1] != pid:
                    pids.append(pid)
                    print(json.dumps({"worker": w, "pid": pid}), flush=True)
        conn.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
