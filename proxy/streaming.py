"""Relaying an upstream body to the client as it arrives.

`read1` returns whatever bytes have arrived, whatever the upstream's framing
(chunked, Content-Length or close-delimited), so each chunk reaches the client as
soon as the upstream sends it. Compressed bodies are passed without decoding.

Event streams that go silent get a `: keep-alive` comment, written only at an
event boundary, so that hosts which cut idle connections keep the stream open
and a client that has gone away is noticed (the write fails and gunicorn closes
this iterator, which closes the upstream connection). Under gevent the wait for
the next bytes is timed where it happens; with threads, a reader thread hands
the chunks over (a blocked read cannot be interrupted there).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Generator, Iterator

from .green import greenlets_rule_sockets
from .upstream import UpstreamResponse, abort, shut_down, upstream_socket

READ_SIZE = 256 * 1024
HEARTBEAT = b": keep-alive\n\n"


def close_body(body: object) -> None:
    """Close a WSGI body if it has a `close()` (PEP 3333): what every wrapper of a body must pass on."""
    close = getattr(body, "close", None)
    if close is not None:
        close()


class UpstreamDropped(Exception):
    """The upstream broke off mid-body; raised so the server ends the client's response abruptly."""


class OneLineDrops(logging.Filter):
    """gunicorn logs an error raised mid-response with its whole traceback; an upstream that
    breaks off, or a client that stops taking its answer (CLIENT_TIMEOUT, proxy/pace.py), is an
    expected event, so it gets one warning line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, UpstreamDropped):
            self._one_line(record, "%s; the client's response was cut short", exc)
        elif isinstance(exc, TimeoutError):
            self._one_line(record, "a client took no part of its answer for CLIENT_TIMEOUT (%s); it was cut off", exc)
        return True

    @staticmethod
    def _one_line(record: logging.LogRecord, message: str, exc: BaseException) -> None:
        record.msg, record.args = message, (exc,)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"


def relay_body(response: UpstreamResponse, heartbeat: float = 0.0) -> Iterator[bytes]:
    """Yield the upstream body as it arrives.

    urllib3 gives the connection back to the pool once the body is read to its end; one
    left unfinished (upstream dropped, client gone: GeneratorExit) is closed here.
    """
    finished = False
    try:
        if heartbeat > 0:
            yield from _with_heartbeat(response, heartbeat)
        else:
            while chunk := _read(response):
                yield chunk
        finished = True
    finally:
        if not finished:
            abort(response)


def _read(response: UpstreamResponse, size: int = READ_SIZE) -> bytes:
    try:
        return response.raw.read1(size, decode_content=False)
    except Exception as exc:  # urllib3 ProtocolError, ReadTimeoutError, OSError...
        raise UpstreamDropped(f"upstream broke off mid-body: {type(exc).__name__}") from exc


def _with_heartbeat(response: UpstreamResponse, interval: float) -> Iterator[bytes]:
    """The body, with a `: keep-alive` comment after each `interval` of silence that falls between events."""
    timed = greenlets_rule_sockets() and hasattr(response.raw._fp, "wait_for_bytes")
    reads = _timed_reads(response, interval) if timed else _handed_over(response, interval)
    tail = b"\n\n"  # the last bytes written: a heartbeat only goes where an event has ended
    try:
        for chunk in reads:
            if chunk is None:  # silence
                if tail.endswith(b"\n\n") or tail.endswith(b"\r\n\r\n"):
                    yield HEARTBEAT
                continue
            tail = (tail + chunk)[-4:]
            yield chunk
    finally:
        reads.close()  # a thread reader is stopped before the response is closed


Reads = Generator["bytes | None", None, None]  # the body's chunks, None for each `interval` without one


def _timed_reads(response: UpstreamResponse, interval: float) -> Reads:
    """Under gevent: read in this greenlet, waiting at most `interval` at a time for the next bytes
    (`wait_for_bytes`, proxy/connection.py). The upstream's read timeout still ends a stream silent that long;
    a chunk-size line split across packets is read without a heartbeat in between."""
    answer = response.raw._fp  # http.client's response, made by proxy/connection.py
    limit = _read_timeout(response)
    heard = time.monotonic()
    while True:
        try:
            ready = answer.wait_for_bytes(interval)
        except Exception as exc:  # a reset, or the socket's own timeout
            raise UpstreamDropped(f"upstream broke off mid-body: {type(exc).__name__}") from exc
        if not ready:
            if limit is not None and time.monotonic() - heard >= limit:
                raise UpstreamDropped("upstream broke off mid-body: ReadTimeoutError")
            yield None
            continue
        chunk = _read(response)
        if not chunk:
            return
        yield chunk
        heard = time.monotonic()  # as a plain read's timeout would, counted from when the next read starts


def _read_timeout(response: UpstreamResponse) -> float | None:
    """The upstream socket's timeout: UPSTREAM_READ_TIMEOUT (or the route's), which each read restarts."""
    sock = upstream_socket(response)
    return sock.gettimeout() if sock is not None else None


_DONE = object()
# A thread reader hands the writer chunks of at most HANDOFF_READ bytes, HANDOFF_SLOTS of them at most
# waiting: a stream holds ~320 KiB at most. Several slots let the reader fill while the writer is in a write
# (one slot halved the speed of a fast stream to a fast client: each chunk cost two thread switches).
HANDOFF_READ = 32 * 1024
HANDOFF_SLOTS = 8
HANDOFF_WAIT = 0.2  # seconds between the reader's checks that the writer is still there


def _handed_over(response: UpstreamResponse, interval: float) -> Reads:
    """With threads (Vercel's runtime, a development server): read in a thread, so that silence can be timed.

    A blocked read cannot be interrupted there without losing the socket (a socket timeout makes it
    unreadable). The hand-off is bounded: the reader waits while it is full, so the upstream is read no faster
    than the client reads (TCP pushes back from there), and a stream holds at most HANDOFF_SLOTS + 2 chunks.
    """
    chunks: queue.Queue = queue.Queue(maxsize=HANDOFF_SLOTS)
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        while not stop.is_set():  # never stuck on a full hand-off once the writer has left
            try:
                chunks.put(item, timeout=HANDOFF_WAIT)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            while chunk := _read(response, HANDOFF_READ):
                if not hand_over(chunk):
                    return
            hand_over(_DONE)
        except UpstreamDropped as exc:
            hand_over(exc)

    reading = threading.Thread(target=reader, name="upstream-reader", daemon=True)
    reading.start()
    try:
        while True:
            try:
                item = chunks.get(timeout=interval)
            except queue.Empty:
                yield None
                continue
            if item is _DONE:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        if reading.is_alive():  # left early: wake the reader, and let it finish before the response is closed
            shut_down(response)
            with contextlib.suppress(queue.Empty):
                chunks.get_nowait()  # frees a reader waiting to hand over (it then sees `stop`)
            reading.join(5)
