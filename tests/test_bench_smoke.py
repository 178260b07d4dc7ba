"""The benchmark runs end to end (`bench/bench.py --quick`) and prints its whole table.

Behaviour only: the figures depend on the machine and its load, so no speed is asserted here
(speed is what the benchmark itself reports, with pass/MISS per target).
"""

from __future__ import annotations

import re
import subprocess
import sys

from tests.relay_server import ROOT, clean_environ

NUMBER = re.compile(r"\d[\d,]*(\.\d+)?")

# Row name -> the columns that must hold a number.
ROWS_WITH_NUMBERS = {
    "non-stream req/s, 16 connections": ("direct", "relay", "relay vs direct"),
    "non-stream p99 ms, 16 connections": ("direct", "relay", "relay vs direct"),
    "non-stream req/s, 64 connections": ("direct", "relay", "relay vs direct"),
    "non-stream p99 ms, 64 connections": ("direct", "relay", "relay vs direct"),
    "tests/fake_upstream alone, req/s, 16 conn.": ("direct", "relay vs direct"),
    "stream TTFB (first chunk) p50 ms, 100 streams": ("direct", "relay", "relay vs direct"),
    "per-chunk delay p50 ms, 100 streams": ("direct", "relay", "relay vs direct"),
    "per-chunk delay p99 ms, 100 streams": ("direct", "relay", "relay vs direct"),
    "upload MiB/s, 20 MiB body": ("direct", "relay", "relay vs direct"),
    "download MiB/s, 20 MiB body": ("direct", "relay", "relay vs direct"),
    "relay peak RSS added by a 20 MiB body, MiB": ("relay",),
    "concurrent streams held, 200 tried": ("relay",),
    "relay peak RSS during 200 streams, MiB": ("relay",),
    "relay worker RSS idle / peak of the run, MiB": ("relay",),
    "WebSocket echoes/s, 100 sockets": ("direct", "relay", "relay vs direct"),
    "WebSocket round trip p50 ms, 100 sockets": ("direct", "relay", "relay vs direct"),
    "WebSocket round trip p99 ms, 100 sockets": ("direct", "relay", "relay vs direct"),
}
TARGET_ROWS = [
    "non-stream req/s, 16 connections",
    "non-stream req/s, 64 connections",
    "stream TTFB (first chunk) p50 ms, 100 streams",
    "per-chunk delay p99 ms, 100 streams",
    "upload MiB/s, 20 MiB body",
    "download MiB/s, 20 MiB body",
    "relay peak RSS added by a 20 MiB body, MiB",
    "concurrent streams held, 200 tried",
    "relay peak RSS during 200 streams, MiB",
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
        [sys.executable, "bench/bench.py", "--quick"],
        cwd=ROOT, env=clean_environ(), capture_output=True, text=True, timeout=170,
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
    assert "errors" not in rows["non-stream req/s, 16 connections"]["relay"]
    held = rows["concurrent streams held, 200 tried"]["relay"]
    assert re.fullmatch(r"\d+ open at once, \d+ errors.*", held), held
    assert "session memory, 10,000 sessions" in rows
