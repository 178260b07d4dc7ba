"""The answer's head and its first piece of body in one write to the client, under gunicorn.

gunicorn's HTTP/1 response writes the head on its own, then each piece of body: for a small answer, two
system calls and two packets where one would do (the upstream side of a request is proxy/connection.py's
concern). `OneWriteResponse` holds the head until the first piece of body and sends them together; a head
with no body after it (HEAD, 204, an empty write) goes out as soon as gunicorn would have sent it. Installed
in each worker by gunicorn.conf.py; HTTP/2 answers have a class of their own and are left alone.

Under gevent each write is first offered to the OS socket itself: a stream's chunk nearly always goes out
whole in that one call, and gevent's `sendall` costs 4.5 µs more (a `getsockopt` and a deadline per call).
What the OS socket does not take then goes through gevent's `sendall`, which waits, with the client's timeout.
A chunked body's end goes the same way, and the Date header is formatted once per second, not per answer.
"""

from __future__ import annotations

import time

from gunicorn import util
from gunicorn.http import wsgi

from .connection import HEAD_WITH_BODY  # the same rule as towards the upstream: a larger piece is sent apart


class OneWriteResponse(wsgi.Response):
    _head = b""

    def send_headers(self) -> None:
        """gunicorn's head, held for the first piece of body."""
        if self.headers_sent:
            return
        lines = self.default_headers()
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        self._head = util.to_bytestring("{}\r\n".format("".join(lines)), "latin-1")
        self.headers_sent = True

    def write(self, arg: bytes) -> None:
        super().write(arg)
        self._send_head()  # a write that put no body on the wire (empty, or past the length) still sends it

    def _emit_body(self, data: bytes) -> None:
        if self.chunked:
            data = b"%X\r\n%s\r\n" % (len(data), data)
        if self._head and len(data) <= HEAD_WITH_BODY:
            data, self._head = self._head + data, b""
        self._send_head()
        self._send(data)

    def close(self) -> None:
        """gunicorn's close: the head if not sent yet, and a chunked body's end (with that head, if it is held)."""
        self.send_headers()
        head, self._head = self._head, b""
        end = b"0\r\n\r\n" if self.chunked else b""
        if head or end:
            self._send(head + end)

    def _send_head(self) -> None:
        if self._head:
            head, self._head = self._head, b""
            self._send(head)

    def _send(self, data: bytes) -> None:
        sock = self.sock
        if type(sock) is _plain_gevent_socket:  # not TLS: its bytes must go through the TLS layer
            try:
                sent = sock._sock.send(data)  # the OS socket, non-blocking under gevent
            except BlockingIOError:
                sent = 0
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
        sock.sendall(data)


_plain_gevent_socket: type | None = None  # gevent's socket class, once install() runs under gevent
_formatted_date: tuple[int, str] = (0, "")  # the last second's Date value
_gunicorn_http_date = util.http_date


def http_date(timestamp: float | None = None) -> str:
    """gunicorn's Date value, formatted once per second of the clock (email.utils' formatting took 1% of a
    stream's setup); a given timestamp is formatted as gunicorn does."""
    global _formatted_date
    if timestamp is not None:
        return _gunicorn_http_date(timestamp)
    now = int(time.time())
    if _formatted_date[0] != now:
        _formatted_date = (now, _gunicorn_http_date(now))
    return _formatted_date[1]


def install() -> None:
    """Make gunicorn build its HTTP/1 answers with `OneWriteResponse` (`gunicorn.http.wsgi.create` looks
    the class up by name for each request), and its Date with `http_date`."""
    global _plain_gevent_socket
    from .green import greenlets_rule_sockets

    if greenlets_rule_sockets():
        import gevent.socket

        _plain_gevent_socket = gevent.socket.socket
    wsgi.Response = OneWriteResponse
    util.http_date = http_date
