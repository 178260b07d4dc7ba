"""How long the relay waits for a client: every read and write, and its request body as a whole.

gunicorn bounds only the request head (its keep-alive timeout); after that, a
client that stops reading or drips its body one byte at a time would hold a
connection slot, and often an upstream connection, for as long as it likes.

- `ClientTimeout` (WSGI middleware) gives the client's socket a timeout of
  `CLIENT_TIMEOUT` seconds for the whole request: a read of the body that
  waits that long for a byte, or a write of the answer (one piece of at most
  256 KiB) that takes that long, fails, and gunicorn closes the connection.
  The socket's own timeout is restored once the answer is written, so idle
  keep-alive connections still last gunicorn's `keepalive`.
- `Pace` defeats the drip that each read alone would allow: the time spent
  waiting for the body may not exceed `CLIENT_TIMEOUT` plus one second per
  `CLIENT_MIN_RATE` bytes received (the rule of Apache's mod_reqtimeout). At
  the default 1 KiB/s, a 512 MiB upload may take six days; a byte every 20 s
  is cut after about a minute.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from .green import greenlets_rule_sockets
from .streaming import close_body


class ClientTooSlow(Exception):
    """The client sent its body too slowly (or stopped): the relay answers 408 and closes the connection."""


def client_socket(environ: dict[str, Any]) -> Any:
    """The client's own connection socket, when the server hands it out (gunicorn) and it carries this request
    alone: an HTTP/2 connection (gunicorn's `http_protocols=h2`) is shared by many requests, so it is left alone."""
    if environ.get("HTTP_VERSION") == "2":
        return None
    return environ.get("gunicorn.socket")


class Pace:
    """The time a request body may take: `timeout` seconds, plus one second per `min_rate` bytes received."""

    def __init__(self, timeout: float, min_rate: int):
        self.timeout = timeout
        self.min_rate = min_rate
        self.enforced = timeout > 0 and greenlets_rule_sockets()

    def allowance(self, received: int) -> float:
        """Seconds of waiting allowed for the first `received` bytes of a body."""
        return self.timeout + (received / self.min_rate if self.min_rate > 0 else float("inf"))

    def limit(self, waited: float, received: int) -> AbstractContextManager:
        """A bound on the next read: it fails with `ClientTooSlow` once `waited` goes past the allowance
        for `received` bytes (what the body will hold if the read returns all it asked for)."""
        if not self.enforced:
            return contextlib.nullcontext()
        left = self.allowance(received) - waited
        if left <= 0:
            raise ClientTooSlow(f"the body came slower than {self.min_rate} bytes/s")
        import gevent

        return gevent.Timeout(left, ClientTooSlow(f"the body came slower than {self.min_rate} bytes/s"))


class ClientTimeout:
    """WSGI middleware: the client's socket gets `timeout` for each read and write while its request lasts."""

    def __init__(self, app: Callable[..., Iterable[bytes]], timeout: float):
        self.app = app
        self.timeout = timeout

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sock = client_socket(environ)
        if self.timeout <= 0 or sock is None:
            return self.app(environ, start_response)
        before = sock.gettimeout()
        sock.settimeout(self.timeout)
        try:
            body = self.app(environ, start_response)
        except BaseException:
            sock.settimeout(before)
            raise
        return _Restoring(body, lambda: sock.settimeout(before))


class _Restoring:
    """The app's answer, unchanged; closing it (gunicorn does, once the answer is written) restores the socket."""

    def __init__(self, body: Iterable[bytes], restore: Callable[[], None]):
        self.body = body
        self.restore = restore

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            close_body(self.body)
        finally:
            with contextlib.suppress(OSError):
                self.restore()
