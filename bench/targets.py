#!/usr/bin/env python3
"""Prints issue 25's performance targets from one `make bench` run.

Reads the output of `go test -bench` over ./bench (BenchmarkHandoffVsTableflip,
BenchmarkUpgradeManyAgainstOne or else BenchmarkUpgrade,
BenchmarkAcceptTrackedAgainstPlain or else BenchmarkAcceptQueued) and, if
given, the JSON that harness.py --json wrote, and prints each figure, its
ratio (to tableflip in the same run, to one listener, to a plain listener,
to steady state) and whether the target is met. Medians over the -count
runs.

    python3 bench/targets.py BENCH_OUTPUT [HARNESS_JSON]
"""

import json
import re
import statistics
import sys
from collections import defaultdict

LINE = re.compile(r"^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$")


def parse(path):
    """Benchmark name -> metric unit -> list of values, one per -count run."""
    runs = defaultdict(lambda: defaultdict(list))
    with open(path) as f:
        for line in f:
            m = LINE.match(line.strip())
            if not m:
                continue
            fields = m.group(2).split()
            for value, unit in zip(fields[0::2], fields[1::2]):
                try:
                    runs[m.group(1)][unit].append(float(value))
                except ValueError:
                    pass
    return runs


def med(runs, name, unit):
    values = runs.get(name, {}).get(unit)
    return statistics.median(values) if values else None


def verdict(ok):
    if ok is None:
        return "not measured"
    return "met" if ok else "missed"


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    runs = parse(sys.argv[1])
    rows = []

    def ms(v):
        return "-" if v is None else f"{v / 1e6:.2f} ms"

    for n in (1, 256):
        name = f"BenchmarkHandoffVsTableflip/listeners={n}/lib=tcpgrace"
        tg, tf = med(runs, name, "ns/op"), med(runs, name, "tableflip-ns/op")
        ratio = med(runs, name, "ratio-to-tableflip")
        rows.append((f"hand-off median, {n} listener{'s' if n > 1 else ''}",
                     f"tcpgrace {ms(tg)}, tableflip {ms(tf)}",
                     "-" if ratio is None else f"{ratio:.3f}x tableflip",
                     verdict(None if ratio is None else ratio <= 1.0)))
    for n in (1, 256):
        name = f"BenchmarkHandoffVsTableflip/listeners={n}/lib=tcpgrace"
        old, new = med(runs, name, "lib-old-ns/op"), med(runs, name, "new-to-ready-ns/op")
        rows.append((f"library's own part, {n} listener{'s' if n > 1 else ''}",
                     f"old process {ms(old)}, next process New to Ready {ms(new)}", "",
                     "no target" if n > 1 else verdict(None if old is None or new is None else old <= 1e6 and new <= 1e6)))
    one = med(runs, "BenchmarkHandoffVsTableflip/listeners=1/lib=tcpgrace", "ns/op")
    many = med(runs, "BenchmarkHandoffVsTableflip/listeners=256/lib=tcpgrace", "ns/op")
    tf1 = med(runs, "BenchmarkHandoffVsTableflip/listeners=1/lib=tcpgrace", "tableflip-ns/op")
    tf256 = med(runs, "BenchmarkHandoffVsTableflip/listeners=256/lib=tcpgrace", "tableflip-ns/op")
    if one and many:
        rows.append(("256 listeners against 1, hand-off", f"{ms(many)} against {ms(one)}",
                     f"{many / one:.2f}x (tableflip {tf256 / tf1:.2f}x)" if tf1 and tf256 else f"{many / one:.2f}x",
                     verdict(many / one <= 1.5)))
    pair = "BenchmarkUpgradeManyAgainstOne"
    ratio = med(runs, pair, "ratio-to-1")
    if ratio is not None:
        # Both sides in the same minutes, alternated (see its doc comment).
        rows.append(("256 listeners against 1, Upgrade call", f"{ms(med(runs, pair, 'ns/op'))} against "
                     f"{ms(med(runs, pair, 'one-ns/op'))}, alternated", f"{ratio:.2f}x", verdict(ratio <= 1.5)))
    else:
        up1 = med(runs, "BenchmarkUpgrade/listeners=1", "ns/op")
        up256 = med(runs, "BenchmarkUpgrade/listeners=256", "ns/op")
        if up1 and up256:
            rows.append(("256 listeners against 1, Upgrade call", f"{ms(up256)} against {ms(up1)}",
                         f"{up256 / up1:.2f}x", verdict(up256 / up1 <= 1.5)))
    pair = "BenchmarkAcceptTrackedAgainstPlain"
    ratio = med(runs, pair, "ratio-to-plain")
    if ratio is not None:
        # Both in the same moments, alternated round by round.
        rows.append(("accepts, tracked against plain", f"{med(runs, pair, 'conns/s'):,.0f} against "
                     f"{med(runs, pair, 'plain-conns/s'):,.0f} conns/s, alternated",
                     f"{ratio:.3f}x", verdict(ratio >= 0.98)))
    else:
        plain = med(runs, "BenchmarkAcceptQueued/impl=plain", "conns/s")
        tracked = med(runs, "BenchmarkAcceptQueued/impl=tracked", "conns/s")
        if plain and tracked:
            rows.append(("accepts, tracked against plain", f"{tracked:,.0f} against {plain:,.0f} conns/s",
                         f"{tracked / plain:.3f}x", verdict(tracked / plain >= 0.98)))
    if len(sys.argv) == 3:
        with open(sys.argv[2]) as f:
            clients = json.load(f)["tcpgrace"]["clients"]
        for name, r in sorted(clients.items()):
            steady, restart = r.get("p99_steady_ms"), r.get("p99_restart_ms")
            if steady and restart:
                rows.append((f"p99 in upgrade windows, {name}", f"{restart:.2f} against {steady:.2f} ms steady",
                             f"{restart / steady:.2f}x", verdict(restart / steady <= 1.1)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
