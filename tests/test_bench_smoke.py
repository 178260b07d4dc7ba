"""The benchmark runs end to end (`bench/bench.py --quick --baseline HEAD`) and prints its whole table: every
figure straight to the upstreams, through nginx (started by the bench: `scripts/test.sh` installs it), through
the relay, and through the relay of another revision (HEAD, from `git archive`); in the non-stream and
two-worker rows also through the floor (`bench/floor/`, the least a Flask relay does).

Behaviour only: the figures depend on the machine and its load, so no speed is asserted here
(speed is what the benchmark itself reports, with pass/MISS per target).
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.relay_server import ROOT, clean_environ

NUMBER = re.compile(r"\d[\d,]*(\.\d+)?")

# Row name -> the columns that must hold a number. Every side of a compared row has one: straight to the
# upstream, through nginx, through today's relay and through the baseline's (here HEAD, checked out by the bench).
SIDES = ("direct", "nginx", "relay", "baseline")
VERSUS = ("relay vs direct", "relay vs nginx", "relay vs baseline")
ALL = SIDES + VERSUS
RELAYS = ("relay", "baseline")
WITH_FLOOR = (*ALL, "floor", "relay vs floor")  # the non-stream and two-worker rows
WORKERS_CPU = (*RELAYS, "floor", "relay vs baseline", "relay vs floor")
ROWS_WITH_NUMBERS = {
    "non-stream req/s, 16 connections": WITH_FLOOR,
    "non-stream p99 ms, 16 connections": WITH_FLOOR,
    "relay worker CPU per request, µs, 16 connections": WORKERS_CPU,
    "non-stream req/s, 64 connections": WITH_FLOOR,
    "non-stream p99 ms, 64 connections": WITH_FLOOR,
    "relay worker CPU per request, µs, 64 connections": WORKERS_CPU,
    "non-stream req/s, 16 connections, relay vs baseline": (*RELAYS, "relay vs baseline"),
    "non-stream req/s, 64 connections, relay vs baseline": (*RELAYS, "relay vs baseline"),
    "non-stream req/s, 64 connections vs 16": (*SIDES, "floor"),
    "tests/fake_upstream alone, req/s, 16 conn.": ("direct", "relay vs direct"),
    "non-stream req/s, 16 connections, SDK and API headers": WITH_FLOOR,
    "relay worker CPU per request, µs, SDK and API headers": WORKERS_CPU,
    "stream TTFB (first chunk) p50 ms, 100 streams": ALL,
    "per-chunk delay p50 ms, 100 streams": ALL,
    "per-chunk delay p99 ms, 100 streams": ALL,
    "relay worker CPU per stream of 10 chunks, ms": (*RELAYS, "relay vs baseline"),
    "upload MiB/s, 20 MiB body": ALL,
    "download MiB/s, 20 MiB body": ALL,
    "relay peak RSS added by a 20 MiB body, MiB": (*RELAYS, "relay vs baseline"),
    "concurrent streams held, 200 tried": RELAYS,
    "relay peak RSS during 200 streams, MiB": (*RELAYS, "relay vs baseline"),
    "relay worker RSS idle / peak of the run, MiB": RELAYS,
    "WebSocket echoes/s, 100 sockets": ALL,
    "WebSocket round trip p50 ms, 100 sockets": ALL,
    "WebSocket round trip p99 ms, 100 sockets": ALL,
    "non-stream req/s, 64 connections, 2 workers": WITH_FLOOR,
    "non-stream p99 ms, 64 connections, 2 workers": WITH_FLOOR,
    "burst TTFB p50 ms, 100 streams at once, 2 workers": WITH_FLOOR,
    "burst per-chunk delay p99 ms, 2 workers": WITH_FLOOR,
    "relay workers' CPU per request, µs, 64 connections, 2 workers": WORKERS_CPU,
    "relay workers' CPU per burst stream of 10 chunks, ms, 2 workers": WORKERS_CPU,
}
TARGET_ROWS = [
    "non-stream req/s, 16 connections",
    "non-stream req/s, 64 connections",
    "non-stream req/s, 16 connections, relay vs baseline",
    "non-stream req/s, 64 connections vs 16",
    "stream TTFB (first chunk) p50 ms, 100 streams",
    "per-chunk delay p99 ms, 100 streams",
    "upload MiB/s, 20 MiB body",
    "download MiB/s, 20 MiB body",
    "relay peak RSS added by a 20 MiB body, MiB",
    "concurrent streams held, 200 tried",
    "relay peak RSS during 200 streams, MiB",
    "burst TTFB p50 ms, 100 streams at once, 2 workers",
    "burst per-chunk delay p99 ms, 2 workers",
]


def parse_table(output: str) -> dict[str, dict[str, str]]:
    lines = [line for line in output.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header[1:], cells[1:], strict=True))
    return rows


def test_quick_run_prints_every_row_with_figures_and_verdicts():
    run = subprocess.run(
        [sys.executable, "bench/bench.py", "--quick", "--baseline", "HEAD"],
        cwd=ROOT, env=clean_environ(), capture_output=True, text=True, timeout=240,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = parse_table(run.stdout)

    for name, columns in ROWS_WITH_NUMBERS.items():
        assert name in rows, f"row {name!r} missing from:\n{run.stdout}"
        for column in columns:
            assert NUMBER.search(rows[name][column]), f"{name!r}: no figure in {column!r}: {rows[name]}"
    for name in TARGET_ROWS:
        assert rows[name]["target"], f"{name!r} has no target"
        assert rows[name]["result"] in ("pass", "MISS"), rows[name]
    for side in ("nginx", "relay", "baseline"):
        assert "errors" not in rows["non-stream req/s, 16 connections"][side], rows["non-stream req/s, 16 connections"]
    for name in ("non-stream req/s, 16 connections", "non-stream req/s, 64 connections, 2 workers",
                 "burst TTFB p50 ms, 100 streams at once, 2 workers"):
        assert "errors" not in rows[name]["floor"], rows[name]  # the floor relays what the bench sends, as the relay
    assert not rows["upload MiB/s, 20 MiB body"]["floor"]  # measured in the non-stream and two-worker rows only
    for side in RELAYS:
        held = rows["concurrent streams held, 200 tried"][side]
        assert re.fullmatch(r"\d+ open at once, \d+ errors.*", held), held
    assert re.search(r"^baseline: [0-9a-f]{7,} ", run.stdout, re.MULTILINE), run.stdout[:500]  # HEAD, described
    # the machine's speed before each of the 8 sections, and its range: the figures in ms move with it
    assert len(re.findall(r"^measuring .*10 million additions: \d+\.\d\d s\)$", run.stdout, re.MULTILINE)) == 8
    assert re.search(r"additions took \d+\.\d\d to \d+\.\d\d s in the run's 8 readings", run.stdout), run.stdout[-800:]
    assert "session memory, 10,000 sessions" in rows
