"""The benchmark's own clients: event streams on asyncio (uvloop), bulk transfers on plain sockets.

They speak HTTP/1.1 on raw sockets so that they add as little as possible to what
they measure, and they measure a direct connection to the fake upstream and the
relay the same way. Every stream is bounded by a timeout; every loop by a count.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from dataclasses import dataclass, field

from tests.fake_upstream import PATTERN

SENT_NS = re.compile(rb'"sent_ns": "?(\d+)')
BENCH_KEY = "sk-bench-not-a-real-key"  # a client's key in pass-through mode; the relay key with --usage
STREAM_BODY = json.dumps(
    {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "count to ten"}]}
).encode()


@dataclass
class StreamResult:
    error: str = ""
    first_event_ns: int = 0  # request sent -> first chat chunk received
    opened_at: float = 0.0  # monotonic time of the first chunk
    closed_at: float = 0.0  # monotonic time of `data: [DONE]`
    chunk_delays_ns: list[int] = field(default_factory=list)  # arrival minus the upstream's sent_ns, per chunk


class Dechunker:
    """Decodes a chunked body incrementally (trailers are not expected)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.left = 0  # data bytes left in the current chunk
        self.crlf = False  # a chunk's closing CRLF is still to skip
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out = bytearray()
        while not self.done:
            if self.left:
                take = min(self.left, len(self.buffer))
                out += self.buffer[:take]
                del self.buffer[:take]
                self.left -= take
                if self.left:
                    break
                self.crlf = True
            if self.crlf:
                if len(self.buffer) < 2:
                    break
                del self.buffer[:2]
                self.crlf = False
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                break
            size = int(bytes(self.buffer[:line_end]).split(b";")[0], 16)
            del self.buffer[: line_end + 2]
            self.left = size
            self.done = size == 0
        return bytes(out)


def _stream_request(port: int, path: str, chunks: int, delay: float) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {BENCH_KEY}\r\nx-fake-chunks: {chunks}\r\nx-fake-delay: {delay}\r\n"
        f"x-fake-reply: {'word ' * chunks}\r\nContent-Length: {len(STREAM_BODY)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + STREAM_BODY


async def one_stream(port: int, path: str, chunks: int, delay: float, timeout: float) -> StreamResult:
    """One chat completion stream; every chunk's delay is its arrival time minus the fake's `sent_ns`."""
    result = StreamResult()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic_ns()
            writer.write(_stream_request(port, path, chunks, delay))
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status = head.split(" ", 2)[1]
            if status != "200":
                result.error = f"status {status}"
                return result
            dechunker = Dechunker() if "transfer-encoding: chunked" in head.lower() else None
            events = bytearray()
            for _ in range(100_000):
                data = await reader.read(65536)
                now = time.monotonic_ns()
                if not data:
                    break
                events += dechunker.feed(data) if dechunker else data
                while (end := events.find(b"\n\n")) >= 0:
                    event = bytes(events[:end])
                    del events[: end + 2]
                    if match := SENT_NS.search(event):
                        if not result.chunk_delays_ns:
                            result.first_event_ns = now - started
                            result.opened_at = now / 1e9
                        result.chunk_delays_ns.append(now - int(match[1]))
                    elif event == b"data: [DONE]":
                        result.closed_at = now / 1e9
                if dechunker and dechunker.done:
                    break
            if not result.closed_at:
                result.error = "stream ended without [DONE]"
            elif len(result.chunk_delays_ns) != chunks:
                result.error = f"{len(result.chunk_delays_ns)} chunks of {chunks}"
    except TimeoutError:
        result.error = "timeout"
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as exc:
        result.error = type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
    return result


async def steady_streams(
    port: int, path: str, concurrency: int, rounds: int, chunks: int, delay: float, timeout: float
) -> list[StreamResult]:
    """`concurrency` streams open at all times, their starts spread evenly over one stream's length."""
    period = chunks * delay

    async def client(index: int) -> list[StreamResult]:
        await asyncio.sleep(period * index / concurrency)
        return [await one_stream(port, path, chunks, delay, timeout) for _ in range(rounds)]

    per_client = await asyncio.gather(*(client(i) for i in range(concurrency)))
    return [result for results in per_client for result in results]


async def burst_streams(
    port: int, path: str, count: int, chunks: int, delay: float, timeout: float
) -> list[StreamResult]:
    """`count` streams started at once, long enough to be all open together."""
    return list(await asyncio.gather(*(one_stream(port, path, chunks, delay, timeout) for _ in range(count))))


def max_open(results: list[StreamResult]) -> int:
    """The most streams that were open (first chunk received, [DONE] not yet) at the same moment."""
    edges = sorted(
        [(r.opened_at, 1) for r in results if r.opened_at and r.closed_at]
        + [(r.closed_at, -1) for r in results if r.opened_at and r.closed_at],
        key=lambda edge: (edge[0], edge[1]),
    )
    most = current = 0
    for _, step in edges:
        current += step
        most = max(most, current)
    return most


# -- bulk transfers -------------------------------------------------------------


def _read_head(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    data = b""
    for _ in range(1000):
        if b"\r\n\r\n" in data:
            break
        piece = sock.recv(65536)
        if not piece:
            raise ConnectionError("connection closed before the response head")
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return lines[0].split(" ", 2)[1], headers, rest


def upload(port: int, path: str, size: int, timeout: float) -> tuple[float, dict]:
    """POST `size` bytes with a Content-Length; returns (seconds until the answer, the answer's JSON)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/octet-stream\r\n"
            f"Authorization: Bearer {BENCH_KEY}\r\n"
            f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
        )
        started = time.perf_counter()
        sock.sendall(head.encode())
        block = memoryview(PATTERN)
        sent = 0
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            sock.sendall(piece)
            sent += len(piece)
        status, headers, body = _read_head(sock)
        length = int(headers.get("content-length", "0"))
        for _ in range(1000):
            if len(body) >= length:
                break
            piece = sock.recv(65536)
            if not piece:
                break
            body += piece
        elapsed = time.perf_counter() - started
    if status != "200":
        raise RuntimeError(f"upload answered {status}: {body[:200]!r}")
    return elapsed, json.loads(body)


def download(port: int, path: str, timeout: float) -> tuple[float, int]:
    """GET a body of known length and throw it away; returns (seconds, bytes received)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        started = time.perf_counter()
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {BENCH_KEY}\r\n"
                     "Connection: close\r\n\r\n".encode())
        status, headers, rest = _read_head(sock)
        if status != "200":
            raise RuntimeError(f"download answered {status}")
        length = int(headers["content-length"])
        received = len(rest)
        buffer = bytearray(1 << 20)
        for _ in range(length // 1024 + 1000):
            if received >= length:
                break
            n = sock.recv_into(buffer)
            if not n:
                break
            received += n
        return time.perf_counter() - started, received
