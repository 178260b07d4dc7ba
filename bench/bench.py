"""The relay's benchmark: one run, one table, the relay beside a direct connection and beside nginx.

    python bench/bench.py                      # the full run, about six minutes
    python bench/bench.py --quick              # a smoke run, about 30 seconds
    python bench/bench.py --baseline main      # also an older revision of the relay, measured in the same run
    python bench/bench.py --usage              # relay keys and METRICS=1: usage read from every answer

It starts the fake upstream (`tests/fake_upstream.py`), the canned upstream
(`bench/canned_upstream.py`, for the non-stream rows) and the fake WebSocket upstream as their own
processes; nginx (`bench/nginx.py`, 2 workers, no buffering) in front of the same upstreams as the
reference proxy; and the relay the way users run it (`gunicorn app:app` with the project's
gunicorn.conf.py, one gevent worker), all on 127.0.0.1. The non-stream and two-worker rows also measure
the floor (`bench/floor/`): the least a Flask relay does, under gunicorn's own gevent worker, so that those
figures can be read against what the stack costs on its own. With `--baseline REV` the relay of that git
revision (a `git archive` copy in a temporary folder, run with the same Python) is measured beside
today's, every round alternating, so that before and after share the machine's load. Non-stream load
comes from `wrk`; streams and bulk transfers from the clients in `bench/clients.py`. Memory is a relay
worker's peak RSS (`VmHWM` in /proc), reset between rows. The README's "Benchmark" section explains
each row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `tests` and `bench` importable
    sys.path.insert(0, str(ROOT))

from bench import clients  # noqa: E402
from bench import nginx as nginx_proxy  # noqa: E402
from tests.relay_server import RelayServer, clean_environ, cpu_seconds, stop_all  # noqa: E402

WRK_SCRIPT = ROOT / "bench" / "wrk_chat.lua"
MiB = 1024 * 1024
CHAT = "/v1/chat/completions"
FLOOR = ROOT / "bench" / "floor"  # the least a Flask relay does (its app.py): what the stack costs on its own
Pids = dict[str, list[int]]  # side: the pids of its relay workers whose CPU time is read


@dataclass(frozen=True)
class Plan:
    """How long and how big each row is."""

    wrk_seconds: float
    wrk_rounds: int  # rounds of wrk runs, every side in turn
    stream_rounds: int  # rounds of 100 streams each way (direct, nginx, relay...)
    burst_rounds: int  # rounds of 100 streams started at once each way: a round's figure moves a lot
    stream_chunks: int
    stream_delay: float
    hold_streams: int
    hold_chunks: int
    hold_delay: float
    body_bytes: int
    transfer_repeats: int  # the best of this many uploads and downloads each way
    ws_echoes: int  # round trips per WebSocket, 100 WebSockets at once, in each of two rounds each way


FULL = Plan(wrk_seconds=2, wrk_rounds=6, stream_rounds=2, burst_rounds=6, stream_chunks=40, stream_delay=0.05,
            hold_streams=1000, hold_chunks=10, hold_delay=1.0, body_bytes=200 * MiB, transfer_repeats=3,
            ws_echoes=200)
QUICK = Plan(wrk_seconds=1, wrk_rounds=1, stream_rounds=1, burst_rounds=1, stream_chunks=10, stream_delay=0.05,
             hold_streams=200, hold_chunks=5, hold_delay=0.5, body_bytes=20 * MiB, transfer_repeats=1,
             ws_echoes=20)

# The table's figure columns: what each side is, and what the relay is compared with.
SIDES = ("direct", "nginx", "floor", "relay", "baseline")
REFERENCES = ("direct", "nginx", "floor", "baseline")


@dataclass
class Row:
    name: str
    cells: dict[str, str] = field(default_factory=dict)  # side -> figure
    versus: dict[str, str] = field(default_factory=dict)  # reference -> the relay compared with it
    target: str = ""
    verdict: str = ""  # "pass", "MISS" or "" for rows without a target


def compare(name: str, values: dict[str, float], unit: str, digits: int = 0, errors: dict[str, int] | None = None,
            target: str = "", ok: Callable[[dict[str, float]], bool] | None = None) -> Row:
    """A row of figures with the relay compared with each other side: a share for a rate (`unit` "/s"), a
    difference for anything else (ms, MiB). `ok` decides the verdict from the figures (errors fail it)."""
    errors = errors or {}
    cells = {side: with_errors(fmt(value, digits), errors.get(side, 0)) for side, value in values.items()}
    versus = {}
    relay = values.get("relay")
    for ref in REFERENCES:
        if relay is None or ref not in values or not values[ref]:
            continue
        if unit == "/s":
            versus[ref] = f"x{relay / values[ref]:.2f}" if ref == "baseline" else f"{relay / values[ref]:.1%}"
        else:
            versus[ref] = f"{relay - values[ref]:+,.{max(digits, 1)}f} {unit}"
    verdict_text = "" if ok is None else verdict(ok(values) and not any(errors.values()))
    return Row(name, cells, versus, target, verdict_text)


# -- processes ------------------------------------------------------------------


def start_upstream(stack: ExitStack, module: str, log_dir: Path) -> str:
    """Run `python -m <module> --port 0` in its own process; returns its URL once it listens."""
    log = open(log_dir / f"{module.rsplit('.', 1)[-1]}.log", "wb")  # noqa: SIM115 (closed by the stack)
    stack.callback(log.close)
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0"],
        cwd=ROOT, env=clean_environ(), stdout=subprocess.PIPE, stderr=log, start_new_session=True,
    )
    stack.callback(_stop, proc)
    ready, _, _ = select.select([proc.stdout], [], [], 20)
    line = proc.stdout.readline().strip() if ready else b""  # the server prints its port once bound
    if not line.isdigit():
        raise RuntimeError(f"{module} did not start: {line!r} (log: {log.name})")
    return f"http://127.0.0.1:{int(line)}"


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# -- memory of the relay worker -------------------------------------------------


class WorkerMemory:
    """Reads the relay worker's RSS and peak RSS from /proc, and resets the peak between rows."""

    def __init__(self, pid: int):
        self.pid = pid
        self.overall_peak_kb = 0

    def _status_kb(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"no {field} for pid {self.pid}")

    def rss_kb(self) -> int:
        return self._status_kb("VmRSS")

    def peak_kb(self) -> int:
        peak = self._status_kb("VmHWM")
        self.overall_peak_kb = max(self.overall_peak_kb, peak)
        return peak

    def reset_peak(self) -> None:
        """Start a new peak from the current RSS (`5` to clear_refs; the overall peak is kept)."""
        self.peak_kb()
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")


# -- measurements ---------------------------------------------------------------


@dataclass
class WrkResult:
    rps: float
    p99_ms: float
    errors: int
    requests: int
    cpu_us: float | None = None  # the side's worker's CPU time per request, when its pid is known


def wrk(url: str, connections: int, seconds: float, sdk_headers: bool = False) -> WrkResult:
    """POST small chat completions with `connections` keep-alive connections for `seconds`; with `sdk_headers`,
    each carries the headers of the official openai-python SDK (bench/wrk_chat.lua)."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
               "-s", str(WRK_SCRIPT), url]
    env = os.environ | {"WRK_SDK_HEADERS": "1" if sdk_headers else "0"}
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True, env=env).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRK_RESULT "))
    data = json.loads(line.removeprefix("WRK_RESULT "))
    errors = sum(data[key] for key in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(data["requests"] / (data["duration_us"] / 1e6), data["p99_us"] / 1000, errors, data["requests"])


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(pct / 100 * len(ordered)) - 1))]


def run_async(coro):
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# -- the rows -------------------------------------------------------------------


def fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "pass" if ok else "MISS"


def with_errors(text: str, errors: int) -> str:
    return f"{text} ({errors} errors)" if errors else text


@dataclass
class WrkRounds:
    """Every wrk run of `wrk_rounds`, by side and by connection count, in the order of the rounds."""

    runs: dict[tuple[str, int], list[WrkResult]]

    def at(self, connections: int) -> dict[str, list[WrkResult]]:
        """Each side's runs at `connections`."""
        return {side: runs for (side, count), runs in self.runs.items() if count == connections}

    def rps(self, connections: int) -> dict[str, float]:
        return {side: statistics.mean(r.rps for r in runs) for side, runs in self.at(connections).items()}

    def p99(self, connections: int) -> dict[str, float]:
        return {side: statistics.median(r.p99_ms for r in runs) for side, runs in self.at(connections).items()}

    def errors(self, connections: int) -> dict[str, int]:
        return {side: sum(r.errors for r in runs) for side, runs in self.at(connections).items()}

    def cpu_us(self, connections: int) -> dict[str, float]:
        """The median over runs of the worker's CPU µs per request, for the sides whose worker was watched."""
        return {side: statistics.median(r.cpu_us for r in runs)
                for side, runs in self.at(connections).items() if runs and runs[0].cpu_us is not None}

    def paired_share(self, more: int, fewer: int) -> dict[str, float]:
        """Per side, the median over rounds of req/s at `more` connections over req/s at `fewer` in the same
        round: the machine's drift between rounds (it moved a side's rate by 10% here) cancels out."""
        fewer_runs = self.at(fewer)
        return {side: statistics.median(a.rps / b.rps for a, b in zip(runs, fewer_runs[side], strict=True))
                for side, runs in self.at(more).items()}


def worker_cpu(pids: Pids, side: str) -> float:
    """The CPU seconds so far of `side`'s watched workers, together (0 for a side without any)."""
    return sum(cpu_seconds(pid) for pid in pids.get(side, ()))


def wrk_rounds(plan: Plan, urls: dict[str, str], counts: tuple[int, ...], pids: Pids | None = None,
               rounds: int | None = None, sdk_headers: bool = False) -> WrkRounds:
    """`plan.wrk_rounds` rounds (unless given); in each, every side in turn runs wrk at each connection count
    back to back (the counts' order alternating from round to round). The CPU time of the workers in `pids`
    (side: its pids) is read around each of their runs."""
    for side, url in urls.items():
        if side != "direct":
            wrk(url, max(counts), 1, sdk_headers)  # warm the proxy's upstream pool
    runs: dict[tuple[str, int], list[WrkResult]] = {(side, c): [] for side in urls for c in counts}
    pids = pids or {}
    for index in range(plan.wrk_rounds if rounds is None else rounds):
        for side, url in urls.items():
            for connections in counts if index % 2 == 0 else counts[::-1]:
                before = worker_cpu(pids, side)
                result = wrk(url, connections, plan.wrk_seconds, sdk_headers)
                if side in pids:
                    result.cpu_us = (worker_cpu(pids, side) - before) / max(1, result.requests) * 1e6
                runs[side, connections].append(result)
    return WrkRounds(runs)


def non_stream_rows(plan: Plan, canned: str, fake: str, proxies: dict[str, str], pids: Pids) -> list[Row]:
    """Small chat completions from wrk, keep-alive: the canned upstream directly and through each proxy; the
    CPU time per request of the workers in `pids` (the relays', the floor's)."""
    urls = {"direct": canned + CHAT} | {side: url + "/canned" + CHAT for side, url in proxies.items()}
    found = wrk_rounds(plan, urls, (16, 64), pids)
    rows = []
    for connections in (16, 64):
        rows.append(compare(f"non-stream req/s, {connections} connections", found.rps(connections), "/s",
                            errors=found.errors(connections), target=">= 8% of direct",
                            ok=lambda v: v["relay"] >= 0.08 * v["direct"]))
        rows.append(compare(f"non-stream p99 ms, {connections} connections", found.p99(connections), "ms", 1))
        rows.append(compare(f"  relay worker CPU per request, µs, {connections} connections",
                            found.cpu_us(connections), "µs"))
    if "baseline" in proxies:  # issue 13's target 1: a third less CPU per request
        for connections in (16, 64):
            row = compare(f"  non-stream req/s, {connections} connections, relay vs baseline",
                          {side: found.rps(connections)[side] for side in ("relay", "baseline")}, "/s",
                          target="x1.5 baseline", ok=lambda v: v["relay"] >= 1.5 * v["baseline"])
            rows.append(row)
    # Issue 13's target 2: concurrency costs nothing (in one worker, 64 connections as fast as 16).
    shares = found.paired_share(64, 16)
    rows.append(Row("  non-stream req/s, 64 connections vs 16",
                    {side: f"{shares[side]:.0%}" for side in urls},
                    target=">= 100% (relay)", verdict=verdict(shares["relay"] >= 1.0)))
    # For reference: the fake upstream alone, which the canned upstream replaces as the direct baseline.
    alone = wrk(fake + CHAT, 16, plan.wrk_seconds)
    rows.append(Row("  tests/fake_upstream alone, req/s, 16 conn.",
                    {"direct": with_errors(fmt(alone.rps), alone.errors)},
                    {"direct": f"{found.rps(16)['relay'] / alone.rps:.1%}"}, target="(reference, no target)"))
    return rows


def real_head_rows(plan: Plan, canned: str, proxies: dict[str, str], pids: Pids) -> list[Row]:
    """The non-stream load with the heads of real traffic: each request with the openai-python SDK's 17 headers
    (where the rows above send 4), each answer with the OpenAI API's 23 (the canned upstream's `/api-headers/`
    answer, where the rows above get 3). Half the rounds of the rows above, 16 connections."""
    path = "/api-headers" + CHAT
    urls = {"direct": canned + path} | {side: url + "/canned" + path for side, url in proxies.items()}
    found = wrk_rounds(plan, urls, (16,), pids, rounds=max(1, plan.wrk_rounds // 2), sdk_headers=True)
    return [
        compare("non-stream req/s, 16 connections, SDK and API headers", found.rps(16), "/s", errors=found.errors(16)),
        compare("  relay worker CPU per request, µs, SDK and API headers", found.cpu_us(16), "µs"),
    ]


def stream_figures(results: dict[str, list[clients.StreamResult]]) -> tuple[dict[str, int], dict[str, list[float]],
                                                                             dict[str, list[float]]]:
    """Per side: errors, every first chunk's wait (ms) and every later chunk's delay (ms)."""
    errors = {side: sum(1 for r in found if r.error) for side, found in results.items()}
    good = {side: [r for r in found if not r.error] for side, found in results.items()}
    firsts = {side: [r.first_event_ns / 1e6 for r in found] for side, found in good.items()}
    chunks = {side: [d / 1e6 for r in found for d in r.chunk_delays_ns[1:]] for side, found in good.items()}
    return errors, firsts, chunks


def per_stream_ms(spent: dict[str, float], firsts: dict[str, list[float]]) -> dict[str, float]:
    """Per watched side, its workers' CPU ms (`spent`, seconds) per stream completed."""
    return {side: seconds * 1000 / max(1, len(firsts[side])) for side, seconds in spent.items()}


def stream_rows(plan: Plan, fake: str, proxies: dict[str, str], pids: Pids) -> list[Row]:
    """100 streams open at all times; the first chunk's wait, then the delay of every later chunk, and the
    relay worker's (`pids`) CPU time per stream.

    The sides' rounds alternate, so that load from elsewhere on the machine falls on all of them.
    """
    errors, firsts, chunks, spent = stream_rounds(plan, fake, proxies, lambda port: clients.steady_streams(
        port, CHAT, 100, 1, plan.stream_chunks, plan.stream_delay, timeout=60), pids=pids)
    if not all(chunks.values()):
        return [Row("stream rows: no stream completed", {side: with_errors("", n) for side, n in errors.items()})]
    return [
        compare("stream TTFB (first chunk) p50 ms, 100 streams", {s: statistics.median(v) for s, v in firsts.items()},
                "ms", 1, errors, "added < 20 ms", lambda v: v["relay"] - v["direct"] < 20),
        compare("per-chunk delay p50 ms, 100 streams", {s: percentile(v, 50) for s, v in chunks.items()}, "ms", 2),
        compare("per-chunk delay p99 ms, 100 streams", {s: percentile(v, 99) for s, v in chunks.items()}, "ms", 2,
                errors, "added < 10 ms", lambda v: v["relay"] - v["direct"] < 10),
        compare(f"relay worker CPU per stream of {plan.stream_chunks} chunks, ms",
                per_stream_ms(spent, firsts), "ms", 2),
        Row(f"  ({len(firsts['relay'])} streams of {plan.stream_chunks} chunks {plan.stream_delay * 1000:.0f} ms "
            f"apart each way, {len(chunks['relay']):,} later chunks relayed)"),
    ]


def stream_rounds(plan: Plan, fake: str, proxies: dict[str, str], streams, rounds: int | None = None,
                  pids: Pids | None = None):
    """Each side's streams (`streams(port)`, a coroutine) in alternating rounds (`plan.stream_rounds` unless
    given), after warming the pools; the figures of `stream_figures`, and the CPU seconds that each worker
    in `pids` (side: its pids) spent in its side's rounds."""
    ports = {"direct": port_of(fake)} | {side: port_of(url) for side, url in proxies.items()}
    results: dict[str, list[clients.StreamResult]] = {side: [] for side in ports}
    pids = pids or {}
    spent = dict.fromkeys(pids, 0.0)
    for port in ports.values():
        run_async(clients.burst_streams(port, CHAT, 100, 1, 0, timeout=30))  # warm the pools
    for _ in range(plan.stream_rounds if rounds is None else rounds):
        for side, port in ports.items():
            before = worker_cpu(pids, side)
            results[side] += run_async(streams(port))
            if side in spent:
                spent[side] += worker_cpu(pids, side) - before
            time.sleep(0.2)  # let the last closes settle before the next side's round
    return (*stream_figures(results), spent)


def two_worker_rows(plan: Plan, canned: str, fake: str, proxies: dict[str, str], pids: Pids) -> list[Row]:
    """The relays and the floor with 2 workers (nginx has 2): non-stream req/s on the same cores as nginx, and
    100 streams started at the same moment (issue 13's target 4), every side's rounds alternating; the CPU time
    of both workers of each (`pids`) per request and per burst stream, what the burst's first chunks wait for."""
    urls = {"direct": canned + CHAT} | {side: url + "/canned" + CHAT for side, url in proxies.items()}
    found = wrk_rounds(plan, urls, (64,), pids)
    rows = [compare("non-stream req/s, 64 connections, 2 workers", found.rps(64), "/s", errors=found.errors(64)),
            compare("non-stream p99 ms, 64 connections, 2 workers", found.p99(64), "ms", 1),
            compare("  relay workers' CPU per request, µs, 64 connections, 2 workers", found.cpu_us(64), "µs")]
    errors, firsts, chunks, spent = stream_rounds(plan, fake, proxies, lambda port: clients.burst_streams(
        port, CHAT, 100, plan.stream_chunks, plan.stream_delay, timeout=60), plan.burst_rounds, pids)
    if not all(chunks.values()):
        return rows + [Row("burst rows: no stream completed", {s: with_errors("", n) for s, n in errors.items()})]
    return rows + [
        compare("burst TTFB p50 ms, 100 streams at once, 2 workers",
                {s: statistics.median(v) for s, v in firsts.items()}, "ms", 1, errors, "added <= 20 ms",
                lambda v: v["relay"] - v["direct"] <= 20),
        compare("burst per-chunk delay p99 ms, 2 workers", {s: percentile(v, 99) for s, v in chunks.items()}, "ms", 2,
                errors, "added <= 10 ms", lambda v: v["relay"] - v["direct"] <= 10),
        compare(f"  relay workers' CPU per burst stream of {plan.stream_chunks} chunks, ms, 2 workers",
                per_stream_ms(spent, firsts), "ms", 2),
        Row(f"  ({plan.burst_rounds} x 100 streams started together each way, {plan.stream_chunks} chunks "
            f"{plan.stream_delay * 1000:.0f} ms apart)"),
    ]


def transfer_rows(plan: Plan, canned: str, fake: str, proxies: dict[str, str],
                  memories: dict[str, WorkerMemory]) -> list[Row]:
    """The best of a few alternated transfers each way; each relay worker's peak RSS during each.

    Uploads go to the canned upstream (it skips bodies as they arrive), downloads come from the fake.
    """
    size = plan.body_bytes
    paths = {"direct": (canned, "/v1/upload", fake, "/v1/download")} | {
        side: (url, "/canned/v1/upload", url, "/v1/download") for side, url in proxies.items()}
    best = {(side, direction): 0.0 for side in paths for direction in ("upload", "download")}
    growth_kb = dict.fromkeys(memories, 0)
    for _ in range(plan.transfer_repeats):
        for side, (up_url, up_path, down_url, down_path) in paths.items():
            memory = memories.get(side)
            rss = memory.rss_kb() if memory else 0
            if memory:
                memory.reset_peak()
            seconds, answer = clients.upload(port_of(up_url), up_path, size, timeout=120)
            if answer.get("object") != "chat.completion":  # the canned answer comes once the whole body arrived
                raise RuntimeError(f"{side} upload got an unexpected answer: {answer}")
            best[side, "upload"] = max(best[side, "upload"], size / seconds / MiB)
            if memory:
                growth_kb[side] = max(growth_kb[side], memory.peak_kb() - rss)
                rss = memory.rss_kb()
                memory.reset_peak()
            seconds, received = clients.download(port_of(down_url), f"{down_path}?size={size}", timeout=120)
            if received != size:
                raise RuntimeError(f"{side} download got {received} of {size} bytes")
            best[side, "download"] = max(best[side, "download"], size / seconds / MiB)
            if memory:
                growth_kb[side] = max(growth_kb[side], memory.peak_kb() - rss)
    label = f"{size // MiB} MiB"
    rows = [compare(f"{direction} MiB/s, {label} body", {side: best[side, direction] for side in paths}, "/s",
                    target=">= 80% of direct", ok=lambda v: v["relay"] >= 0.8 * v["direct"])
            for direction in ("upload", "download")]
    rows.append(compare(f"relay peak RSS added by a {label} body, MiB",
                        {side: kb / 1024 for side, kb in growth_kb.items()}, "MiB", 1,
                        target="< 30 MiB", ok=lambda v: v["relay"] < 30))
    return rows


def hold_rows(plan: Plan, relays: dict[str, RelayServer], memories: dict[str, WorkerMemory]) -> list[Row]:
    """`hold_streams` streams started at once through each relay in turn (one worker): held, and peak RSS."""
    count = plan.hold_streams
    held: dict[str, str] = {}
    peaks: dict[str, float] = {}
    clean = True
    for side, relay in relays.items():
        memories[side].reset_peak()
        timeout = plan.hold_chunks * plan.hold_delay + 60
        results = run_async(clients.burst_streams(port_of(relay.url), CHAT, count, plan.hold_chunks,
                                                  plan.hold_delay, timeout))
        errors = [r.error for r in results if r.error]
        most = clients.max_open(results)
        peaks[side] = memories[side].peak_kb() / 1024
        held[side] = f"{most:,} open at once, {len(errors)} errors" + (f" (first: {errors[0]})" if errors else "")
        if side == "relay":
            clean = most == count and not errors
    return [
        Row(f"concurrent streams held, {count:,} tried", held, target=f"{count:,}, 0 errors", verdict=verdict(clean)),
        compare(f"relay peak RSS during {count:,} streams, MiB", peaks, "MiB", 1, target="< 150 MiB",
                ok=lambda v: v["relay"] < 150),
    ]


async def websocket_echoes(url: str, sockets: int, echoes: int) -> tuple[float, list[float], int]:
    """`sockets` WebSockets at once, each sending a small message and awaiting its echo `echoes` times in a row:
    (round trips per second, every round trip in ms, errors)."""
    from websockets.asyncio.client import connect

    times: list[float] = []
    errors = 0

    async def one(index: int) -> None:
        nonlocal errors
        try:
            async with connect(url, compression=None, ping_interval=None, open_timeout=30) as ws:
                message = f"{index:04d}".encode() * 32  # 128 bytes, a small Realtime event's size
                for _ in range(echoes):
                    sent = time.perf_counter_ns()
                    await ws.send(message)
                    if await asyncio.wait_for(ws.recv(), 30) != message:
                        raise ValueError("wrong echo")
                    times.append((time.perf_counter_ns() - sent) / 1e6)
        except Exception:
            errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(index) for index in range(sockets)))
    return len(times) / (time.perf_counter() - started), times, errors


def websocket_rows(plan: Plan, fake_ws: str, proxies: dict[str, str]) -> list[Row]:
    """100 WebSockets at once echoing small messages, straight to the fake WebSocket upstream and through each
    proxy (route `ws`), rounds alternating so that load from elsewhere falls on all of them."""
    urls = {"direct": fake_ws.replace("http://", "ws://") + "/v1/echo"} | {
        side: url.replace("http://", "ws://") + "/ws/v1/echo" for side, url in proxies.items()}
    rates: dict[str, list[float]] = {side: [] for side in urls}
    times: dict[str, list[float]] = {side: [] for side in urls}
    errors = dict.fromkeys(urls, 0)
    for _ in range(2):
        for side, url in urls.items():
            rate, found, failed = run_async(websocket_echoes(url, 100, plan.ws_echoes))
            rates[side].append(rate)
            times[side] += found
            errors[side] += failed
    if not all(times.values()):
        return [Row("WebSocket rows: no echo came back", {side: with_errors("", n) for side, n in errors.items()})]
    return [
        compare("WebSocket echoes/s, 100 sockets", {s: statistics.median(v) for s, v in rates.items()}, "/s",
                errors=errors),
        compare("WebSocket round trip p50 ms, 100 sockets", {s: percentile(v, 50) for s, v in times.items()}, "ms", 2),
        compare("WebSocket round trip p99 ms, 100 sockets", {s: percentile(v, 99) for s, v in times.items()}, "ms", 2),
        Row(f"  (2 rounds of 100 sockets x {plan.ws_echoes} echoes of 128 bytes each way; an echo is 2 messages)"),
    ]


def session_memory_rows() -> list[Row]:
    """The session store's memory for 10,000 sessions, from bench/session_memory.py when it exists."""
    try:
        from bench import session_memory
    except ImportError:
        return [Row("session memory, 10,000 sessions", {"relay": "(bench/session_memory.py not present)"})]
    figures = session_memory.measure()  # the session store's own measurement (10,000 sessions by default)
    sizes = {key: value for key, value in figures.items() if key.endswith("_mib")} or figures
    return [Row("session memory, 10,000 sessions", {"relay": ", ".join(f"{k} {v}" for k, v in sizes.items())})]


# -- output ---------------------------------------------------------------------


def print_table(rows: list[Row], baseline: bool) -> None:
    sides = [side for side in SIDES if baseline or side != "baseline"]
    refs = [ref for ref in REFERENCES if baseline or ref != "baseline"]
    header = ["measure", *sides, *(f"relay vs {ref}" for ref in refs), "target", "result"]
    table = [header] + [[row.name, *(row.cells.get(side, "") for side in sides),
                         *(row.versus.get(ref, "") for ref in refs), row.target, row.verdict] for row in rows]
    widths = [max(len(line[col]) for line in table) for col in range(len(header))]
    left = {0, len(header) - 2, len(header) - 1}  # names, targets and verdicts read left to right
    for index, line in enumerate(table):
        cells = [cell.ljust(width) if col in left else cell.rjust(width)
                 for col, (cell, width) in enumerate(zip(line, widths, strict=True))]
        print("| " + " | ".join(cells) + " |")
        if index == 0:
            print("|" + "|".join("-" * (len(cell) + 2) for cell in cells) + "|")


def conditions() -> str:
    load = os.getloadavg()
    return (f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start; "
            f"Python {sys.version.split()[0]}")


class MachineSpeed:
    """How fast this machine runs Python, read before each section: the figures in ms and µs move with it, and
    on this VM it moved from 0.7 to 2.4 s (a loop of 10 million additions) within an hour."""

    def __init__(self):
        self.readings: list[float] = []

    def read(self) -> str:
        started = time.perf_counter()
        total = 0
        for number in range(10_000_000):
            total += number
        self.readings.append(time.perf_counter() - started)
        return f"a Python loop of 10 million additions: {self.readings[-1]:.2f} s"

    def summary(self) -> str:
        return (f"a Python loop of 10 million additions took {min(self.readings):.2f} to {max(self.readings):.2f} s "
                f"in the run's {len(self.readings)} readings (one before each section)")


# -- the relays -----------------------------------------------------------------


def checkout(revision: str, folder: Path) -> str:
    """The project at `revision`, written into `folder` by `git archive` (this work tree is left alone); returns
    the revision's short hash and subject."""
    commit = subprocess.run(["git", "rev-parse", "--verify", f"{revision}^{{commit}}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    folder.mkdir(parents=True)
    archive = subprocess.Popen(["git", "archive", commit], cwd=ROOT, stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(folder)], stdin=archive.stdout, check=True)
    archive.stdout.close()
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {commit} failed")
    return subprocess.run(["git", "log", "-1", "--format=%h %s", commit], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


def start_relays(stack: ExitStack, roots: dict[str, Path], env: dict[str, str], log_dir: Path,
                 workers: int) -> dict[str, RelayServer]:
    """Each root's app (today's relay; with --baseline the older one; the floor), each with `workers` gevent workers."""
    relays = {}
    for side, root in roots.items():
        relay = RelayServer(env | {"WEB_CONCURRENCY": str(workers)}, log_dir / f"{side}-{workers}w.log", root=root)
        stack.callback(relay.stop)
        relays[side] = relay.start()
    return relays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the relay against a direct connection and nginx.")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (small counts, 1 s per load row)")
    parser.add_argument("--baseline", metavar="REV",
                        help="also measure the relay of this git revision (e.g. main, HEAD~3), in the same rounds")
    parser.add_argument("--usage", action="store_true",
                        help="count usage: the bench's key becomes a labelled relay key, and METRICS=1")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if shutil.which("wrk") is None:
        parser.error("wrk is needed for the non-stream rows (Debian: apt-get install wrk)")
    if nginx_proxy.binary() is None:
        parser.error("nginx is needed for the reference rows (Debian: apt-get install nginx-light)")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # thousands of sockets, inherited by the servers
    speed = MachineSpeed()
    print(f"conditions: {conditions()}; usage counting {'on' if args.usage else 'off'}", flush=True)
    started = time.monotonic()
    rows: list[Row] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        log_dir = Path(tmp)
        roots = {"relay": ROOT}
        if args.baseline:
            described = checkout(args.baseline, log_dir / "baseline")
            roots["baseline"] = log_dir / "baseline"
            print(f"baseline: {described}", flush=True)
        fake = start_upstream(stack, "tests.fake_upstream", log_dir)
        canned = start_upstream(stack, "bench.canned_upstream", log_dir)
        fake_ws = start_upstream(stack, "tests.fake_websocket", log_dir)
        nginx = nginx_proxy.Nginx(log_dir / "nginx", port_of(fake), port_of(canned), port_of(fake_ws))
        stack.callback(nginx.stop)
        nginx.start()
        env = {"UPSTREAM_URL": fake, "ROUTES": f"canned={canned},ws={fake_ws}"}
        if args.usage:  # the clients' key, as a relay key: every answer's usage is read and counted
            env |= {"RELAY_KEYS": f"bench:{clients.BENCH_KEY}", "METRICS": "1"}
        relays = start_relays(stack, roots, env, log_dir, workers=1)
        memories = {side: WorkerMemory(relay.worker_pids()[0]) for side, relay in relays.items()}
        idle_mib = {side: memory.rss_kb() / 1024 for side, memory in memories.items()}
        proxies = {"nginx": nginx.url} | {side: relay.url for side, relay in relays.items()}
        pids = {side: [memory.pid] for side, memory in memories.items()}
        floor = start_relays(stack, {"floor": FLOOR}, env, log_dir, workers=1)["floor"]  # the non-stream rows only
        floor_proxies = proxies | {"floor": floor.url}
        floor_pids = pids | {"floor": floor.workers_started(1)}
        sections = [
            ("non-stream", lambda: non_stream_rows(plan, canned, fake, floor_proxies, floor_pids)),
            ("non-stream with real heads", lambda: real_head_rows(plan, canned, floor_proxies, floor_pids)),
            ("streams", lambda: stream_rows(plan, fake, proxies, pids)),
            ("transfers", lambda: transfer_rows(plan, canned, fake, proxies, memories)),
            ("concurrent streams", lambda: hold_rows(plan, relays, memories)),
            ("WebSockets", lambda: websocket_rows(plan, fake_ws, proxies)),
        ]
        for name, measure in sections:
            print(f"measuring {name}... ({speed.read()})", flush=True)
            rows += measure()
        for memory in memories.values():
            memory.peak_kb()
        rows.append(Row("relay worker RSS idle / peak of the run, MiB", {
            side: f"{idle_mib[side]:.1f} / {memory.overall_peak_kb / 1024:.1f}" for side, memory in memories.items()}))
        stop_all([*relays.values(), floor])
        print(f"measuring with 2 workers... ({speed.read()})", flush=True)
        with ExitStack() as two:
            doubled = start_relays(two, {"floor": FLOOR} | roots, env, log_dir, workers=2)
            workers = {side: relay.workers_started(2) for side, relay in doubled.items()}
            if any(len(pids) < 2 for pids in workers.values()):
                raise RuntimeError(f"a relay did not start its 2 workers: {workers}")
            rows += two_worker_rows(plan, canned, fake, {"nginx": nginx.url} | {s: r.url for s, r in doubled.items()},
                                    workers)
    print(f"measuring session memory... ({speed.read()})", flush=True)
    rows += session_memory_rows()
    print()
    print_table(rows, baseline="baseline" in roots)
    print(f"\n{len(rows)} rows in {time.monotonic() - started:.0f} s; direct = straight to the upstream "
          "(the canned upstream for non-stream rows, the fake upstream for the rest); nginx = 2 workers; "
          "relay = one gevent worker (2 in the rows that say so); floor = the least a Flask relay does "
          "(bench/floor/), gevent workers as the relay, in the non-stream and 2-worker rows"
          + (f"; baseline = {described}, run the same way." if args.baseline else ".")
          + f" Machine speed: {speed.summary()}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
