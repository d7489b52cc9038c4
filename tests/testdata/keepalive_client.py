"""A keep-alive HTTP client that never retries: Python's http.client.

Each worker keeps one connection and sends GET requests on it back to
back for --duration seconds; http.client reconnects by itself only after
a response that said "Connection: close". Any exception or non-200 answer
is a failure. Prints {"ok": N, "failed": N, "errors": [...]} on stdout.
Loopback only.
"""
import argparse
import http.client
import ipaddress
import json
import sys
import threading
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True, help="HOST:PORT on loopback")
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    host, _, port = args.addr.rpartition(":")
    if not ipaddress.ip_address(host.strip("[]")).is_loopback:
        print(f"{host} is not a loopback address", file=sys.stderr)
        return 2
    lock = threading.Lock()
    counts = {"ok": 0, "failed": 0, "errors": []}
    deadline = time.monotonic() + args.duration

    def worker():
        conn = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=2)
        while time.monotonic() < deadline:
            try:
                conn.request("GET", "/")
                resp = conn.getresponse()
                resp.read()
                err = None if resp.status == 200 else f"status {resp.status}"
            except (OSError, http.client.HTTPException) as e:
                err = repr(e)
                conn.close()
            with lock:
                if err is None:
                    counts["ok"] += 1
                else:
                    counts["failed"] += 1
                    if len(counts["errors"]) < 10:
                        counts["errors"].append(err)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump(counts, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
