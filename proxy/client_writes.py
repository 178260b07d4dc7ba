"""The answer's head and its first piece of body in one write to the client, under gunicorn.

gunicorn's HTTP/1 response writes the head on its own, then each piece of body: for a small answer, two
system calls and two packets where one would do (the upstream side of a request is proxy/connection.py's
concern). `OneWriteResponse` holds the head until the first piece of body and sends them together; a head
with no body after it (HEAD, 204, an empty write) goes out as soon as gunicorn would have sent it. Installed
in each worker by gunicorn.conf.py; HTTP/2 answers have a class of their own and are left alone.
"""

from __future__ import annotations

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
        self.sock.sendall(data)

    def close(self) -> None:
        self.send_headers()  # (if not sent yet) and out, before gunicorn's close writes a chunked body's end
        self._send_head()
        super().close()

    def _send_head(self) -> None:
        if self._head:
            head, self._head = self._head, b""
            self.sock.sendall(head)


def install() -> None:
    """Make gunicorn build its HTTP/1 answers with `OneWriteResponse` (`gunicorn.http.wsgi.create` looks
    the class up by name for each request)."""
    wsgi.Response = OneWriteResponse
