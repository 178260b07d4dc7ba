"""One access-log line per request: method, path (never the query string), status, duration, bytes.

It wraps the WSGI app rather than using the server's access log so it is the same
under gunicorn, Vercel and the tests, and it is written when the body is finished,
so a stream's line carries its real duration and size. No header, query value or
body is ever logged: keys travel in all three. The path is the client's, so it is
escaped (`loggable_path`): it can neither start a line of its own nor send escape
codes to the terminal of whoever reads the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

from .streaming import close_body

log = logging.getLogger("relay.access")

MAX_LOGGED_PATH = 512  # characters of a path kept in the log line


def loggable_path(path: str) -> str:
    """`path` (a WSGI string: one character per byte) with every byte outside printable ASCII, space and `%`
    included, as `%XX`, cut to `MAX_LOGGED_PATH` characters."""
    raw = path.encode("latin-1", "replace")
    text = "".join(chr(byte) if 0x20 < byte < 0x7F and byte != 0x25 else f"%{byte:02X}" for byte in raw)
    return text if len(text) <= MAX_LOGGED_PATH else text[:MAX_LOGGED_PATH] + "..."


class AccessLog:
    def __init__(self, app: Callable):
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.monotonic()
        status: list[str] = ["-"]

        def capture(status_line: str, headers: list, exc_info=None):
            status[0] = status_line.split(" ", 1)[0]
            return start_response(status_line, headers, exc_info)

        try:
            body = self.app(environ, capture)
        except StopIteration:  # a WebSocket under gunicorn, carried to its end on the socket itself
            _log_websocket(environ, started)
            raise
        if "relay.websocket" in environ:  # the same elsewhere (Vercel's runtime): the app returns when it is over
            _log_websocket(environ, started)
            return body
        return _Logged(body, environ, status, started)


def _log_websocket(environ: dict, started: float) -> None:
    """The line of a WebSocket relayed by proxy/websocket.py: its duration and the bytes each way."""
    line = _Logged((), environ, ["-"], started)
    tunnel = environ.get("relay.websocket", {})
    ms = (time.monotonic() - started) * 1000
    down, up = tunnel.get("down", 0), tunnel.get("up", 0)
    log.info("%s %s %s %.0fms %dB down %dB up websocket", line.method, line.path, tunnel.get("status", "-"),
             ms, down, up)


class _Logged:
    """Counts the bytes of a response body and logs the line when the server closes it."""

    def __init__(self, body: Iterable[bytes], environ: dict, status: list[str], started: float):
        self.body = body
        self.method = environ.get("REQUEST_METHOD", "-")
        self.path = loggable_path(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        self.status = status
        self.started = started
        self.sent = 0
        self.finished = False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.body:
            self.sent += len(chunk)
            yield chunk
        self.finished = True

    def close(self) -> None:
        try:
            close_body(self.body)
        finally:
            ms = (time.monotonic() - self.started) * 1000
            outcome = "" if self.finished else " incomplete"
            log.info("%s %s %s %.0fms %dB%s", self.method, self.path, self.status[0], ms, self.sent, outcome)
