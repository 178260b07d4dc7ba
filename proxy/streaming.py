"""Relaying an upstream body to the client as it arrives.

`read1` returns whatever bytes have arrived, whatever the upstream's framing
(chunked, Content-Length or close-delimited), so each chunk reaches the client as
soon as the upstream sends it. Compressed bodies are passed without decoding.

Event streams that go silent get a `: keep-alive` comment, written only at an
event boundary, so that hosts which cut idle connections keep the stream open
and a client that has gone away is noticed (the write fails and gunicorn closes
this iterator, which closes the upstream connection).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator

from .green import greenlets_rule_sockets
from .upstream import UpstreamResponse, abort, shut_down

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


_DONE = object()
# A timed stream's reader hands the writer chunks of at most HANDOFF_READ bytes, HANDOFF_SLOTS of them at most
# waiting: a stream holds ~320 KiB at most. Several slots let the reader fill while the writer is in a write
# (one slot halved the speed of a fast stream to a fast client: each chunk cost two greenlet switches).
HANDOFF_READ = 32 * 1024
HANDOFF_SLOTS = 8
HANDOFF_WAIT = 0.2  # seconds between the reader's checks that the writer is still there


def _with_heartbeat(response: UpstreamResponse, interval: float) -> Iterator[bytes]:
    """Read in a helper (see `_Reader`) so silence can be timed.

    The hand-off is bounded: the reader waits while it is full, so the upstream is read
    no faster than the client reads (TCP pushes back from there), and a stream holds at
    most HANDOFF_SLOTS + 2 chunks, whatever the speeds.
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

    reading = _Reader(reader)
    tail = b"\n\n"  # the last bytes written: a heartbeat only goes where an event has ended
    try:
        while True:
            try:
                item = chunks.get(timeout=interval)
            except queue.Empty:
                if tail.endswith(b"\n\n") or tail.endswith(b"\r\n\r\n"):
                    yield HEARTBEAT
                continue
            if item is _DONE:
                return
            if isinstance(item, Exception):
                raise item
            tail = (tail + item)[-4:]
            yield item
    finally:
        stop.set()
        if reading.alive():  # left early: wake the reader, and let it finish before the response is closed
            shut_down(response)
            with contextlib.suppress(queue.Empty):
                chunks.get_nowait()  # frees a reader waiting to hand over (it then sees `stop`)
            reading.join(5)


class _Reader:
    """`read()` run beside the writer: in a greenlet of its own under gevent, in a thread otherwise.

    gevent's patched `Thread` would do as well, at about a tenth more CPU per stream: it builds a thread's
    locks and events, and its `start()` waits for the new greenlet to have run.
    """

    def __init__(self, read: Callable[[], None]):
        if greenlets_rule_sockets():
            import gevent

            greenlet = gevent.spawn(read)
            self.alive = lambda: not greenlet.dead
            self.join = greenlet.join
        else:
            thread = threading.Thread(target=read, name="upstream-reader", daemon=True)
            thread.start()
            self.alive, self.join = thread.is_alive, thread.join

