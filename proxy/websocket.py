"""Relaying a WebSocket (Realtime API, the Responses API's WebSocket mode, Gemini Live) to its route's upstream.

The handshake goes upstream under the same rules as any request (`request_headers`, the access control's
key swap); the upstream's answer comes back as it is: its 101 with its headers, or its refusal. After a 101
the relay takes the client's socket over from the server and copies bytes both ways, one direction per
greenlet, without decoding a frame, so extensions such as `permessage-deflate` are agreed end to end. When
one side ends, the other is ended too; so is a connection on which neither side sends anything for
`WEBSOCKET_IDLE_TIMEOUT` seconds.

Taking the socket over needs a server that hands it out in `environ["gunicorn.socket"]`: gunicorn, and
Vercel's Python runtime (`vercel_runtime`), which puts the connection there wrapped so that the 101 written on
it tells the platform the request is over and the tunnel begins. When the WebSocket is over, gunicorn is given
the connection back by a `StopIteration` (it then writes nothing and closes it); Vercel's runtime by the app
returning, without a `start_response` (it writes only what that starts, and closes an upgraded connection).
Elsewhere (another WSGI server) the answer is a 426, on which clients such as Codex fall back to HTTP at once.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import socket
import ssl
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from flask import Response, g, request

from usage import metrics

from .errors import openai_error
from .green import TimedCalls, greenlets_rule_sockets
from .headers import request_headers, response_headers
from .relay import RelayResponse, access_control, upstream_pool, usage_meter
from .routes import Route, upstream_url
from .settings import current_settings
from .upstream import UpstreamFailure, UpstreamTimeout, UpstreamUnreachable

if TYPE_CHECKING:
    from access import Grant

BLOCK = 256 * 1024  # bytes per read in each direction
REFUSAL_LIMIT = 1024 * 1024  # the most of an upstream's refusal body the relay reads and passes on
CLOSE_GRACE = 2.0  # seconds the other direction may still finish once one side has ended
ENVIRON_KEY = "relay.websocket"  # where the access log finds the WebSocket's status and byte counts


def relay_websocket(route: Route) -> Response:
    """Open the WebSocket upstream; on its 101, carry the connection; otherwise pass its answer back."""
    client = request.environ.get("gunicorn.socket")
    if client is None:
        message = (
            "This relay's server cannot carry WebSockets (it does not hand over the connection); "
            "use HTTP streaming instead."
        )
        return openai_error(426, message, "websocket_unsupported", {"Upgrade": "websocket", "Connection": "Upgrade"})
    path, query = g.target
    grant = access_control().admit(request.environ, route.key_group)  # AccessDenied: 401 or 429, before any upgrade
    usage_meter().admit(grant, route)  # usage/: a key over its token budget gets its 429 before any upgrade
    headers = request_headers(request.environ, route.host)
    url = grant.strip(upstream_url(route, path, query), headers)
    target = url[len(route.origin) :] or "/"
    try:
        upstream, answer, early = _handshake(route, grant, target, headers)
    except UpstreamFailure as exc:
        return openai_error(exc.status, exc.message(route.host), exc.code)
    except (OSError, http.client.HTTPException):
        failure = UpstreamUnreachable()
        return openai_error(failure.status, failure.message(route.host), failure.code)
    if answer.status != 101:
        return _refusal(upstream, answer)
    on_open = partial(usage_meter().count_websocket, grant.label, route.prefix, 101)  # one request, tokens unknown
    return HandedOver(client, upstream, answer, early, current_settings().websocket_idle_timeout, on_open)


def _handshake(
    route: Route, grant: Grant, target: str, headers: dict[str, str]
) -> tuple[socket.socket, http.client.HTTPResponse, bytes]:
    """Send the upgrade with each upstream key in turn while the upstream refuses the key (401, 429)."""
    headers = headers | {"Connection": "Upgrade", "Upgrade": "websocket"}
    *first, last = grant.attempts()
    for key in [*first, last]:
        sock = upstream_pool().open_socket(route.origin)
        try:
            sock.settimeout(current_settings().upstream_read_timeout)
            sent = grant.with_key(headers, key)
            head = f"GET {target} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in sent.items())
            sock.sendall(head.encode("latin-1") + b"\r\n")
            reader = _Reader(sock)
            answer = http.client.HTTPResponse(reader, method="GET")
            answer.begin()
        except TimeoutError as exc:
            sock.close()
            raise UpstreamTimeout(str(exc)) from exc
        except BaseException:
            sock.close()
            raise
        if not grant.refused(key, answer.status) or key is last:
            return sock, answer, reader.take() if answer.status == 101 else b""
        sock.close()  # refused before anything reached the client: try the next key
    raise AssertionError("unreachable")


def _refusal(upstream: socket.socket, answer: http.client.HTTPResponse) -> Response:
    """The upstream's refusal of the upgrade, status, headers and body as it sent them."""
    try:
        body = answer.read(REFUSAL_LIMIT)
    except (OSError, http.client.HTTPException):
        body = b""
    finally:
        upstream.close()
    kept = response_headers(answer.msg.items())
    headers = [(name, value) for name, value in kept if name.lower() != "content-length"]
    return RelayResponse(body, status=answer.status, headers=[*headers, ("Content-Length", str(len(body)))])


class _Reader(io.RawIOBase):
    """The upstream socket as the file http.client reads the answer's head from, reading ahead into a buffer
    of its own: what follows a 101's head is the upstream's first WebSocket frames, kept for the client."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""

    def makefile(self, mode: str) -> _Reader:
        return self

    def readable(self) -> bool:
        return True

    def peek(self, size: int = 0) -> bytes:
        if not self.buffer:
            self.buffer = self.sock.recv(BLOCK)
        return self.buffer

    def read(self, size: int | None = -1) -> bytes:
        out = bytearray()
        while size is None or size < 0 or len(out) < size:
            data = self.peek()
            if not data:
                break
            taken = data if size is None or size < 0 else data[: size - len(out)]
            out += taken
            self.buffer = data[len(taken) :]
        return bytes(out)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def take(self) -> bytes:
        data, self.buffer = self.buffer, b""
        return data


class HandedOver(Response):
    """The 101 and the connection both ways, written on the client's socket itself; then the connection is
    given back to the server: to gunicorn by raising `StopIteration` (returning would make it write a response
    head), to Vercel's runtime by returning nothing (a `StopIteration` would reach its server as an error)."""

    def __init__(
        self, client: socket.socket, upstream: socket.socket, answer: http.client.HTTPResponse, early: bytes,
        idle: float, on_open: Callable[[], None] = lambda: None,
    ):
        super().__init__(status=101)
        self.on_open = on_open
        self.client = client
        self.upstream = upstream
        self.answer = answer
        self.early = early
        self.idle = idle

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        counts = environ[ENVIRON_KEY] = {"status": "101", "up": 0, "down": 0}
        headers = response_headers(self.answer.msg.items())
        headers += [("Upgrade", self.answer.msg.get("Upgrade", "websocket")), ("Connection", "Upgrade")]
        head = f"HTTP/1.1 101 {self.answer.reason or 'Switching Protocols'}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
        pipelined = _take_buffered(environ)  # frames the client sent right behind its handshake
        self.on_open()
        metrics.open_websockets.inc()
        try:
            self.client.sendall(head.encode("latin-1"))
            Tunnel(self.client, self.upstream, self.idle, counts).run(pipelined, self.early)
        except OSError:
            pass
        finally:
            metrics.open_websockets.dec()
            _close(self.upstream)
        if environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/"):
            raise StopIteration("the WebSocket is over; the relay has handed the connection back")
        return []


def _take_buffered(environ: dict) -> bytes:
    """Bytes gunicorn has already read off the client's socket past the handshake (gunicorn 27's parser)."""
    unreader = getattr(getattr(environ.get("wsgi.input"), "reader", None), "unreader", None)
    take = getattr(unreader, "take_buffered", None)
    return take() if take else b""


class Tunnel:
    """Bytes both ways between two sockets until one side ends, errs, or both are silent for `idle` seconds
    (0: for as long as both stay)."""

    def __init__(self, client: socket.socket, upstream: socket.socket, idle: float, counts: dict):
        self.client = client
        self.upstream = upstream
        self.idle = idle if idle > 0 else None  # None: no limit (WEBSOCKET_IDLE_TIMEOUT=0)
        self.counts = counts
        self.last = time.monotonic()
        self.ended = threading.Event()
        # Under gevent each direction times its reads and writes with one timer of its own (`TimedCalls`): a
        # socket timeout would make a new timer for every wait. With threads, the sockets' timeouts do it.
        self.timed_here = greenlets_rule_sockets() and self.idle is not None

    def run(self, up_first: bytes, down_first: bytes) -> None:
        for sock in (self.client, self.upstream):
            sock.settimeout(None if self.timed_here else self.idle)
        pumps = [
            threading.Thread(target=self._pump, args=(self.client, self.upstream, "up", up_first), daemon=True),
            threading.Thread(target=self._pump, args=(self.upstream, self.client, "down", down_first), daemon=True),
        ]
        for pump in pumps:
            pump.start()
        self.ended.wait()  # one side has ended: the other has a moment to finish, then is ended too
        deadline = time.monotonic() + CLOSE_GRACE
        for pump in pumps:
            pump.join(max(0.0, deadline - time.monotonic()))
        if any(pump.is_alive() for pump in pumps):
            self._stop()
            for pump in pumps:
                pump.join(CLOSE_GRACE)

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str, first: bytes) -> None:
        """Copy `source` to `sink`; at the source's end, end the sink too (a half-close, so nothing queued is lost)."""
        timed = TimedCalls(self.idle, TimeoutError) if self.timed_here else _untimed
        try:
            data = first
            while True:
                if data:
                    timed(sink.sendall, data)
                    self.counts[direction] += len(data)
                    self.last = time.monotonic()
                try:
                    data = timed(source.recv, BLOCK)
                except TimeoutError:
                    if time.monotonic() - self.last < self.idle:
                        data = b""
                        continue  # the other direction is busy
                    self._stop()
                    return
                if not data:
                    self._end(sink)
                    return
        except OSError:  # reset, broken pipe, a write that made no progress for `idle` seconds
            self._stop()
        finally:
            self.ended.set()

    def _end(self, sink: socket.socket) -> None:
        """The source has ended: half-close a plain socket so that what is queued still goes out; TLS has no
        half-close that keeps reading (Python drops the TLS layer on shutdown), so a TLS sink ends whole."""
        if isinstance(sink, ssl.SSLSocket) or not isinstance(sink, socket.socket):
            self._stop()
            return
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _stop(self) -> None:
        """End both sockets now, so that a read blocked in the other direction returns."""
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _untimed(call: Callable, *args: object) -> object:
    return call(*args)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
