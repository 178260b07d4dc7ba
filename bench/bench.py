"""The relay's benchmark: one run, one table, the relay beside a direct connection to the same upstream.

    python bench/bench.py            # the full run, about a minute and a half
    python bench/bench.py --quick    # a smoke run, about 15 seconds

It starts the fake upstream (`tests/fake_upstream.py`) and the canned upstream
(`bench/canned_upstream.py`, for the non-stream rows) as their own processes,
and the relay the way users run it (`gunicorn app:app` with the project's
gunicorn.conf.py, one gevent worker), all on 127.0.0.1. Non-stream load comes
from `wrk`; streams and bulk transfers from the clients in `bench/clients.py`.
Memory is the relay worker's peak RSS (`VmHWM` in /proc), reset between rows.
The README's "Benchmark" section explains each row.
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
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `tests` and `bench` importable
    sys.path.insert(0, str(ROOT))

from bench import clients  # noqa: E402
from tests.relay_server import RelayServer, clean_environ  # noqa: E402

WRK_SCRIPT = ROOT / "bench" / "wrk_chat.lua"
MiB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    """How long and how big each row is."""

    wrk_seconds: float
    stream_rounds: int  # rounds of 100 streams each way (direct, relay, direct...)
    stream_chunks: int
    stream_delay: float
    hold_streams: int
    hold_chunks: int
    hold_delay: float
    body_bytes: int
    transfer_repeats: int  # the best of this many uploads and downloads each way
    ws_echoes: int  # round trips per WebSocket, 100 WebSockets at once, in each of two rounds each way


FULL = Plan(wrk_seconds=8, stream_rounds=2, stream_chunks=40, stream_delay=0.05,
            hold_streams=1000, hold_chunks=10, hold_delay=1.0, body_bytes=200 * MiB, transfer_repeats=3,
            ws_echoes=200)
QUICK = Plan(wrk_seconds=1, stream_rounds=1, stream_chunks=10, stream_delay=0.05,
             hold_streams=200, hold_chunks=5, hold_delay=0.5, body_bytes=20 * MiB, transfer_repeats=1,
             ws_echoes=20)


@dataclass
class Row:
    name: str
    direct: str = ""
    relay: str = ""
    versus: str = ""  # relay compared with direct
    target: str = ""
    verdict: str = ""  # "pass", "MISS" or "" for rows without a target


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


def wrk(url: str, connections: int, seconds: float) -> WrkResult:
    """POST small chat completions with `connections` keep-alive connections for `seconds`."""
    command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
               "-s", str(WRK_SCRIPT), url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("WRK_RESULT "))
    data = json.loads(line.removeprefix("WRK_RESULT "))
    errors = sum(data[key] for key in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(data["requests"] / (data["duration_us"] / 1e6), data["p99_us"] / 1000, errors)


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


def non_stream_rows(plan: Plan, canned: str, fake: str, relay: str) -> list[Row]:
    rows = []
    relay_rps = {}
    for connections in (16, 64):
        wrk(relay + "/canned/v1/chat/completions", connections, 1)  # warm the relay's upstream pool
        direct = wrk(canned + "/v1/chat/completions", connections, plan.wrk_seconds)
        relayed = wrk(relay + "/canned/v1/chat/completions", connections, plan.wrk_seconds)
        share = relayed.rps / direct.rps
        relay_rps[connections] = relayed.rps
        rows.append(Row(f"non-stream req/s, {connections} connections", with_errors(fmt(direct.rps), direct.errors),
                        with_errors(fmt(relayed.rps), relayed.errors), f"{share:.1%}", ">= 8% of direct",
                        verdict(share >= 0.08 and relayed.errors == 0)))
        rows.append(Row(f"non-stream p99 ms, {connections} connections", fmt(direct.p99_ms, 1),
                        fmt(relayed.p99_ms, 1), f"{relayed.p99_ms - direct.p99_ms:+,.1f} ms"))
    # For reference: the fake upstream alone, which the canned upstream replaces as the direct baseline.
    alone = wrk(fake + "/v1/chat/completions", 16, plan.wrk_seconds)
    rows.append(Row("  tests/fake_upstream alone, req/s, 16 conn.", with_errors(fmt(alone.rps), alone.errors),
                    versus=f"{relay_rps[16] / alone.rps:.1%}", target="(reference, no target)"))
    return rows


def stream_rows(plan: Plan, fake: str, relay: str) -> list[Row]:
    """100 streams open at all times; the first chunk's wait, then the delay of every later chunk.

    Direct and relay rounds alternate, so that load from elsewhere on the machine falls on both.
    """
    ports = {"direct": port_of(fake), "relay": port_of(relay)}
    results: dict[str, list[clients.StreamResult]] = {"direct": [], "relay": []}
    for port in ports.values():
        run_async(clients.burst_streams(port, "/v1/chat/completions", 100, 1, 0, timeout=30))  # warm the pool
    for _ in range(plan.stream_rounds):
        for side, port in ports.items():
            results[side] += run_async(clients.steady_streams(
                port, "/v1/chat/completions", 100, 1, plan.stream_chunks, plan.stream_delay, timeout=60))
    errors = {side: sum(1 for r in found if r.error) for side, found in results.items()}
    good = {side: [r for r in found if not r.error] for side, found in results.items()}
    firsts = {side: [r.first_event_ns / 1e6 for r in found] for side, found in good.items()}
    chunks = {side: [d / 1e6 for r in found for d in r.chunk_delays_ns[1:]] for side, found in good.items()}
    if not (chunks["direct"] and chunks["relay"]):
        return [Row("stream rows: no stream completed", with_errors("", errors["direct"]),
                    with_errors("", errors["relay"]))]
    first = (statistics.median(firsts["direct"]), statistics.median(firsts["relay"]))
    p50 = (percentile(chunks["direct"], 50), percentile(chunks["relay"], 50))
    p99 = (percentile(chunks["direct"], 99), percentile(chunks["relay"], 99))
    clean = not any(errors.values())
    return [
        Row("stream TTFB (first chunk) p50 ms, 100 streams", with_errors(fmt(first[0], 1), errors["direct"]),
            with_errors(fmt(first[1], 1), errors["relay"]), f"{first[1] - first[0]:+.1f} ms", "added < 20 ms",
            verdict(first[1] - first[0] < 20 and clean)),
        Row("per-chunk delay p50 ms, 100 streams", fmt(p50[0], 2), fmt(p50[1], 2), f"{p50[1] - p50[0]:+.2f} ms"),
        Row("per-chunk delay p99 ms, 100 streams", fmt(p99[0], 2), fmt(p99[1], 2), f"{p99[1] - p99[0]:+.2f} ms",
            "added < 10 ms", verdict(p99[1] - p99[0] < 10 and clean)),
        Row(f"  ({len(results['relay'])} streams of {plan.stream_chunks} chunks {plan.stream_delay * 1000:.0f} ms "
            f"apart each way, {len(chunks['relay']):,} later chunks relayed)"),
    ]


def transfer_rows(plan: Plan, canned: str, fake: str, relay: str, memory: WorkerMemory) -> list[Row]:
    """The best of a few alternated transfers each way; the relay worker's peak RSS during each.

    Uploads go to the canned upstream (it skips bodies as they arrive), downloads come from the fake.
    """
    size = plan.body_bytes
    paths = {"direct": (canned, "/v1/upload", fake, "/v1/download"),
             "relay": (relay, "/canned/v1/upload", relay, "/v1/download")}
    best = {(side, direction): 0.0 for side in paths for direction in ("upload", "download")}
    growth_kb = 0
    for _ in range(plan.transfer_repeats):
        for side, (up_url, up_path, down_url, down_path) in paths.items():
            rss = memory.rss_kb()
            memory.reset_peak()
            seconds, answer = clients.upload(port_of(up_url), up_path, size, timeout=120)
            if answer.get("object") != "chat.completion":  # the canned answer comes once the whole body arrived
                raise RuntimeError(f"{side} upload got an unexpected answer: {answer}")
            best[side, "upload"] = max(best[side, "upload"], size / seconds / MiB)
            if side == "relay":
                growth_kb = max(growth_kb, memory.peak_kb() - rss)
            rss = memory.rss_kb()
            memory.reset_peak()
            seconds, received = clients.download(port_of(down_url), f"{down_path}?size={size}", timeout=120)
            if received != size:
                raise RuntimeError(f"{side} download got {received} of {size} bytes")
            best[side, "download"] = max(best[side, "download"], size / seconds / MiB)
            if side == "relay":
                growth_kb = max(growth_kb, memory.peak_kb() - rss)
    label = f"{size // MiB} MiB"
    rows = []
    for direction in ("upload", "download"):
        direct, relayed = best["direct", direction], best["relay", direction]
        rows.append(Row(f"{direction} MiB/s, {label} body", fmt(direct), fmt(relayed), f"{relayed / direct:.0%}",
                        ">= 80% of direct", verdict(relayed >= 0.8 * direct)))
    rows.append(Row(f"relay peak RSS added by a {label} body, MiB", relay=fmt(growth_kb / 1024, 1),
                    target="< 30 MiB", verdict=verdict(growth_kb < 30 * 1024)))
    return rows


def hold_rows(plan: Plan, relay: str, memory: WorkerMemory) -> list[Row]:
    count = plan.hold_streams
    memory.reset_peak()
    timeout = plan.hold_chunks * plan.hold_delay + 60
    results = run_async(clients.burst_streams(port_of(relay), "/v1/chat/completions", count, plan.hold_chunks,
                                              plan.hold_delay, timeout))
    errors = [r.error for r in results if r.error]
    held = clients.max_open(results)
    peak_mib = memory.peak_kb() / 1024
    detail = f"{held:,} open at once, {len(errors)} errors"
    if errors:
        detail += f" (first: {errors[0]})"
    return [
        Row(f"concurrent streams held, {count:,} tried", relay=detail, target=f"{count:,}, 0 errors",
            verdict=verdict(held == count and not errors)),
        Row(f"relay peak RSS during {count:,} streams, MiB", relay=fmt(peak_mib, 1), target="< 150 MiB",
            verdict=verdict(peak_mib < 150)),
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


def websocket_rows(plan: Plan, fake_ws: str, relay: str) -> list[Row]:
    """100 WebSockets at once echoing small messages, straight to the fake WebSocket upstream and through the
    relay (route `ws`), rounds alternating so that load from elsewhere falls on both."""
    urls = {"direct": fake_ws.replace("http://", "ws://") + "/v1/echo",
            "relay": relay.replace("http://", "ws://") + "/ws/v1/echo"}
    rates: dict[str, list[float]] = {"direct": [], "relay": []}
    times: dict[str, list[float]] = {"direct": [], "relay": []}
    errors = {"direct": 0, "relay": 0}
    for _ in range(2):
        for side, url in urls.items():
            rate, found, failed = run_async(websocket_echoes(url, 100, plan.ws_echoes))
            rates[side].append(rate)
            times[side] += found
            errors[side] += failed
    if not (times["direct"] and times["relay"]):
        return [Row("WebSocket rows: no echo came back", with_errors("", errors["direct"]),
                    with_errors("", errors["relay"]))]
    rate = (statistics.median(rates["direct"]), statistics.median(rates["relay"]))
    p50 = (percentile(times["direct"], 50), percentile(times["relay"], 50))
    p99 = (percentile(times["direct"], 99), percentile(times["relay"], 99))
    return [
        Row("WebSocket echoes/s, 100 sockets", with_errors(fmt(rate[0]), errors["direct"]),
            with_errors(fmt(rate[1]), errors["relay"]), f"{rate[1] / rate[0]:.0%}"),
        Row("WebSocket round trip p50 ms, 100 sockets", fmt(p50[0], 2), fmt(p50[1], 2), f"{p50[1] - p50[0]:+.2f} ms"),
        Row("WebSocket round trip p99 ms, 100 sockets", fmt(p99[0], 2), fmt(p99[1], 2), f"{p99[1] - p99[0]:+.2f} ms"),
        Row(f"  (2 rounds of 100 sockets x {plan.ws_echoes} echoes of 128 bytes each way; an echo is 2 messages)"),
    ]


def session_memory_rows() -> list[Row]:
    """The session store's memory for 10,000 sessions, from bench/session_memory.py when it exists."""
    try:
        from bench import session_memory
    except ImportError:
        return [Row("session memory, 10,000 sessions", relay="(bench/session_memory.py not present)")]
    figures = session_memory.measure()  # the session store's own measurement (10,000 sessions by default)
    sizes = {key: value for key, value in figures.items() if key.endswith("_mib")} or figures
    return [Row("session memory, 10,000 sessions", relay=", ".join(f"{k} {v}" for k, v in sizes.items()))]


# -- output ---------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    header = Row("measure", "direct", "relay", "relay vs direct", "target", "result")
    table = [header, *rows]
    widths = [max(len(getattr(row, col)) for row in table) for col in ("name", "direct", "relay", "versus", "target")]
    for index, row in enumerate(table):
        cells = [row.name.ljust(widths[0]), row.direct.rjust(widths[1]), row.relay.rjust(widths[2]),
                 row.versus.rjust(widths[3]), row.target.ljust(widths[4]), row.verdict.ljust(6)]
        print("| " + " | ".join(cells) + " |")
        if index == 0:
            print("|" + "|".join("-" * (len(cell) + 2) for cell in cells) + "|")


def conditions() -> str:
    load = os.getloadavg()
    return (f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start; "
            f"Python {sys.version.split()[0]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the relay against a direct connection.")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (small counts, 1 s per load row)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if shutil.which("wrk") is None:
        parser.error("wrk is needed for the non-stream rows (Debian: apt-get install wrk)")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # thousands of sockets, inherited by the servers
    print(f"conditions: {conditions()}", flush=True)
    started = time.monotonic()
    rows: list[Row] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        log_dir = Path(tmp)
        fake = start_upstream(stack, "tests.fake_upstream", log_dir)
        canned = start_upstream(stack, "bench.canned_upstream", log_dir)
        fake_ws = start_upstream(stack, "tests.fake_websocket", log_dir)
        relay = RelayServer({"UPSTREAM_URL": fake, "ROUTES": f"canned={canned},ws={fake_ws}"}, log_dir / "relay.log")
        stack.callback(relay.stop)
        relay.start()
        memory = WorkerMemory(relay.worker_pids()[0])
        idle_mib = memory.rss_kb() / 1024
        sections = [
            ("non-stream", lambda: non_stream_rows(plan, canned, fake, relay.url)),
            ("streams", lambda: stream_rows(plan, fake, relay.url)),
            ("transfers", lambda: transfer_rows(plan, canned, fake, relay.url, memory)),
            ("concurrent streams", lambda: hold_rows(plan, relay.url, memory)),
            ("WebSockets", lambda: websocket_rows(plan, fake_ws, relay.url)),
        ]
        for name, measure in sections:
            print(f"measuring {name}...", flush=True)
            rows += measure()
        memory.peak_kb()
        rows.append(Row("relay worker RSS idle / peak of the run, MiB",
                        relay=f"{idle_mib:.1f} / {memory.overall_peak_kb / 1024:.1f}"))
    print("measuring session memory...", flush=True)
    rows += session_memory_rows()
    print()
    print_table(rows)
    print(f"\n{len(rows)} rows in {time.monotonic() - started:.0f} s; direct = straight to the upstream "
          "(the canned upstream for non-stream rows, the fake upstream for the rest); relay = one gevent worker.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
