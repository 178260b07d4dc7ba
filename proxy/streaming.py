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

import logging
import queue
import threading
from collections.abc import Iterator

import requests

from .upstream import abort, shut_down

READ_SIZE = 256 * 1024
HEARTBEAT = b": keep-alive\n\n"


class UpstreamDropped(Exception):
    """The upstream broke off mid-body; raised so the server ends the client's response abruptly."""


class OneLineDrops(logging.Filter):
    """gunicorn logs an error raised mid-response with its whole traceback; an upstream that
    breaks off is an expected event, so it gets one warning line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, UpstreamDropped):
            record.msg, record.args = "%s; the client's response was cut short", (exc,)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def relay_body(response: requests.Response, heartbeat: float = 0.0) -> Iterator[bytes]:
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


def _read(response: requests.Response) -> bytes:
    try:
        return response.raw.read1(READ_SIZE, decode_content=False)
    except Exception as exc:  # urllib3 ProtocolError, ReadTimeoutError, OSError...
        raise UpstreamDropped(f"upstream broke off mid-body: {type(exc).__name__}") from exc


_DONE = object()


def _with_heartbeat(response: requests.Response, interval: float) -> Iterator[bytes]:
    """Read in a helper thread (a greenlet under gevent) so silence can be timed."""
    chunks: queue.Queue = queue.Queue()  # unbounded: the reader must never block after the writer left
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                chunk = _read(response)
                chunks.put(chunk or _DONE)
                if not chunk:
                    return
        except UpstreamDropped as exc:
            if not stop.is_set():
                chunks.put(exc)

    thread = threading.Thread(target=reader, name="upstream-reader", daemon=True)
    thread.start()
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
        if thread.is_alive():  # left early: wake the reader, and let it finish before the response is closed
            shut_down(response)
            thread.join(5)
