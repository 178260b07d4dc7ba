"""The relay's connections to its upstreams: urllib3's, with a change that keeps the request target as the
client sent it and five that each save CPU per request.

- **The target as received.** urllib3's pool rewrites every request target into its own normal form before
  the connection sends it: `%2f` becomes `%2F`, `%zz` becomes `%25zz` (another name), `|`, `"`, `{`, `<` are
  escaped. `sending_target` names the target the relay means to send, and the connection sends that one
  when urllib3's line is the same target in urllib3's form.
- **One write per request.** The head goes out with the first piece of the body; http.client sends them
  apart, which costs a second system call and gives the upstream a head without its body.
- **A cheap check of an idle connection.** A pooled connection is checked before reuse with one
  non-blocking `MSG_PEEK` on the OS socket; urllib3's poll, under gevent, builds and tears down a
  watcher for each request. Both say the same: a connection with bytes or an end-of-file waiting is
  dropped (a stray `408` from an upstream's idle timeout would otherwise be the next client's answer).
- **The answer's head parsed in one pass.** http.client hands the header lines to the `email` package's
  feed parser, the slowest step of an answer; `parse_header_lines` gives the same `HTTPMessage` (headers,
  order, defects, unparsed rest: `tests/test_upstream_connection.py` compares them on thousands of heads),
  with two regular expressions for a head of plain "Name: value" lines.
- **A light answer.** `getresponse` returns http.client's response in an `Answer` (proxy/answer.py), not in
  urllib3's response object.
- **Header lines in fewer steps.** `putheader` encodes and checks a header as http.client does, without
  urllib3's and http.client's generic steps around it (a client's SDK sends 15-20 headers).
"""

from __future__ import annotations

import email.errors
import http.client
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import urllib3.connection
from urllib3.util import SKIP_HEADER
from urllib3.util.url import _encode_target

from .answer import Answer
from .green import TimedCalls
from .idle import announced_idle

PEEK_NOW = int(socket.MSG_PEEK | socket.MSG_DONTWAIT)  # look without taking or waiting (an int: flags are slow)
HEAD_WITH_BODY = 64 * 1024  # a first piece of body up to this size goes out in one write with the head

_EXACT_TARGET: ContextVar[str | None] = ContextVar("exact_target", default=None)  # per greenlet or thread
_SENDABLE = re.compile(r"/[\x21-\x7e]*")  # a target http.client sends as it is (gunicorn refuses any other)

# What the email package's feed parser takes for a header line (or a continuation), and its line ends.
_HEADER_LINE = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")
_LINES = re.compile(r"(?<=\r\n)|(?<=\r)(?!\n)|(?<=\n)")
_BARE_CR = re.compile(r"\r(?!\n)")
# A head of nothing but "Name: value" lines ended by CRLF, and its blank line (nearly every upstream's), and
# one of its lines: the feed parser takes such a head line by line, each value without its leading blanks.
# (`.` for the value, three times faster than a class without CR: a bare CR is ruled out by counting.)
_PLAIN_HEAD = re.compile(r"(?:[!-9;-~]+:.*\r\n)*\r\n")
_PLAIN_LINE = re.compile(r"([!-9;-~]+):[ \t]*(.*)\r\n")


def hung_up(raw: socket.socket) -> bool | None:
    """What a non-blocking OS socket holds, without taking it: True for end-of-file (or an error), False for
    bytes, None for nothing yet."""
    try:
        return not raw.recv(1, PEEK_NOW)
    except BlockingIOError:
        return None
    except OSError:  # reset by the peer
        return True


def parse_header_lines(header_lines: list[bytes]) -> http.client.HTTPMessage:
    """`http.client._parse_header_lines` (the email package's compat32 feed parser) in one pass."""
    text = b"".join(header_lines).decode("iso-8859-1")
    message = http.client.HTTPMessage()
    message.set_payload("")  # the feed parser's, once the head is read: nothing
    # Each CR a CRLF's, each line "Name: value": no continuation, envelope, bare line end or other line.
    if text.count("\r") == text.count("\n") and _PLAIN_HEAD.fullmatch(text):
        for name, value in _PLAIN_LINE.findall(text):
            message.set_raw(name, value)
        return message
    if _BARE_CR.search(text):  # a line end of its own for the feed parser
        lines = [line for line in _LINES.split(text) if line]
    else:  # each line as read, up to its "\n"
        lines = [line.decode("iso-8859-1") for line in header_lines if line]
    body_at = len(lines)
    for index, line in enumerate(lines):
        if not _HEADER_LINE.match(line):  # the head ends: what follows is the "body" (nothing, but for bad heads)
            blank = line in ("\r\n", "\r", "\n")
            if not blank:
                message.defects.append(email.errors.MissingHeaderBodySeparatorDefect())
            message.set_payload("".join(lines[index + 1 if blank else index :]))
            body_at = index
            break
    name, value = "", []
    for number, line in enumerate(lines[:body_at]):
        if line[0] in " \t":
            if not name:
                message.defects.append(email.errors.FirstHeaderLineIsContinuationDefect(line))
            else:
                value.append(line)
            continue
        if name:
            _set(message, name, value)
            name, value = "", []
        if line.startswith("From "):
            if number == 0:
                message.set_unixfrom(line.rstrip("\r\n"))
            elif number == body_at - 1:  # taken for the first line of a body
                message.set_payload(line + message.get_payload())
                return message
            else:
                message.defects.append(email.errors.MisplacedEnvelopeHeaderDefect(line))
            continue
        colon = line.find(":")
        if colon == 0:
            message.defects.append(email.errors.InvalidHeaderDefect("Missing header name."))
            continue
        name, value = line[:colon], [line]
    if name:
        _set(message, name, value)
    return message


def _set(message: http.client.HTTPMessage, name: str, lines: list[str]) -> None:
    first = lines[0].split(":", 1)[1]
    message.set_raw(name, (first.lstrip(" \t") + "".join(lines[1:])).rstrip("\r\n"))


class _Silence(Exception):
    """`wait_for_bytes`' timer has run out: no bytes came."""


class UpstreamHTTPResponse(http.client.HTTPResponse):
    """http.client's response with `begin()` as in CPython 3.12, but for the head's parser."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self._socket = sock
        self._silence: TimedCalls | None = None  # wait_for_bytes' timer, made once per answer

    def begin(self) -> None:
        if self.headers is not None:
            return
        while True:  # skip 100 Continue answers
            version, status, reason = self._read_status()
            if status != http.client.CONTINUE:
                break
            http.client._read_headers(self.fp)
        self.code = self.status = status
        self.reason = reason.strip()
        if version in ("HTTP/1.0", "HTTP/0.9"):
            self.version = 10
        elif version.startswith("HTTP/1."):
            self.version = 11
        else:
            raise http.client.UnknownProtocol(version)
        self.headers = self.msg = parse_header_lines(http.client._read_headers(self.fp))

        transfer_encoding = self.headers.get("transfer-encoding")
        if transfer_encoding and transfer_encoding.lower() == "chunked":
            self.chunked = True
            self.chunk_left = None
        else:
            self.chunked = False
        self.will_close = self._check_close()
        self.length = None
        length = self.headers.get("content-length")
        if length and not self.chunked:
            try:
                self.length = int(length)
            except ValueError:
                self.length = None
            else:
                if self.length < 0:
                    self.length = None
        if status in (http.client.NO_CONTENT, http.client.NOT_MODIFIED) or 100 <= status < 200 or (
            self._method == "HEAD"
        ):
            self.length = 0
        if not self.will_close and not self.chunked and self.length is None:
            self.will_close = True

    def wait_for_bytes(self, seconds: float) -> bool:
        """Under gevent: whether the body has its next bytes to read (or its end) within `seconds`.

        Nothing of the body is taken, so a timer may end the wait: `peek` waits for the socket only when
        nothing is buffered (TLS-decrypted bytes included). A chunk's closing CRLF, which `read1` would discard
        before the next chunk, is discarded here first, so the wait is for the next chunk itself.

        A stream waits once per chunk, so the wait is made cheap: one timer per answer (`TimedCalls`), and the
        socket's own timeout lifted while it runs, when it is no shorter (it would make a second timer).
        """
        silence = self._silence
        if silence is None or silence.seconds != seconds:
            silence = self._silence = TimedCalls(seconds, _Silence)
        own = self._socket.gettimeout()
        lifted = own is None or own >= seconds
        if lifted:
            self._socket.settimeout(None)
        try:
            silence(self._next_bytes)
            return True
        except _Silence:
            return False
        finally:
            if lifted:
                self._socket.settimeout(own)

    def _next_bytes(self) -> None:
        """Wait until the body has its next bytes buffered (or has ended)."""
        while self.fp is not None and self.length != 0 and self._method != "HEAD":  # else read1 ends it
            ahead = self.fp.peek(1)
            if not (self.chunked and self.chunk_left == 0) or len(ahead) < 2:  # bytes of the body, or its end
                return  # (half a CRLF, a rare split, is left to read1)
            self._safe_read(2)  # buffered: no wait
            self.chunk_left = None  # what read1 does next: the next chunk's size line


@contextmanager
def sending_target(target: str) -> Iterator[None]:
    """Within the block, a request line for `target` goes out with `target` exactly as given."""
    token = _EXACT_TARGET.set(target if _SENDABLE.fullmatch(target) else None)
    try:
        yield
    finally:
        _EXACT_TARGET.reset(token)


class _RelayConnection:
    """The changes, mixed into urllib3's two connection classes (see `CONNECTION_CLASSES`)."""

    response_class = UpstreamHTTPResponse
    _head: bytes | None = None
    _hold_head = False
    announced_idle: float | None = None  # seconds the upstream said it keeps this connection idle (proxy/idle.py)

    def putrequest(self, method: str, url: str, *args: Any, **options: Any) -> None:
        exact = _EXACT_TARGET.get()
        if exact is not None and url != exact and url == _encode_target(exact):  # the same target, rewritten
            url = exact
        super().putrequest(method, url, *args, **options)  # type: ignore[misc]

    def putheader(self, header: str, *values: Any) -> None:
        """urllib3's `putheader` for one header line of a str name and value (all the relay sends): the same
        encodings, checks and errors as http.client's, in about a quarter of the time. Anything else (several values,
        bytes or ints, urllib3's SKIP_HEADER, a connection not sending a request head) goes the usual way."""
        if (len(values) != 1 or type(header) is not str or type(values[0]) is not str or values[0] == SKIP_HEADER
                or self._HTTPConnection__state != http.client._CS_REQ_STARTED):  # type: ignore[attr-defined]
            return super().putheader(header, *values)  # type: ignore[misc]
        name = header.encode("ascii")
        if not http.client._is_legal_header_name(name):  # type: ignore[attr-defined]
            raise ValueError(f"Invalid header name {name!r}")
        value = values[0].encode("latin-1")
        if http.client._is_illegal_header_value(value):  # type: ignore[attr-defined]
            raise ValueError(f"Invalid header value {value!r}")
        self._output(name + b": " + value)  # type: ignore[attr-defined]

    def request(self, method: str, url: str, body: Any = None, headers: Any = None, **options: Any) -> None:
        self._hold_head = body is not None
        try:
            super().request(method, url, body=body, headers=headers, **options)  # type: ignore[misc]
            if self._head is not None:  # a body with no bytes
                super().send(self._head)  # type: ignore[misc]
        finally:
            self._head, self._hold_head = None, False

    def send(self, data: bytes) -> None:
        if self._hold_head:  # the first send of a request with a body: its head
            self._head, self._hold_head = data, False
            return
        if self._head is not None:
            head, self._head = self._head, None
            if len(data) <= HEAD_WITH_BODY:
                data = head + data
            else:
                super().send(head)  # type: ignore[misc]
        super().send(data)  # type: ignore[misc]

    def getresponse(self) -> Answer:  # type: ignore[override]
        """urllib3's `getresponse`, but for the object the answer comes in."""
        options = self._response_options  # type: ignore[attr-defined]
        if options is None:
            raise http.client.ResponseNotReady()
        self._response_options = None
        self.sock.settimeout(self.timeout)  # type: ignore[attr-defined]
        answer = Answer(
            http.client.HTTPConnection.getresponse(self),  # type: ignore[arg-type]
            self._http_vsn_str, options.request_method, options.request_url,  # type: ignore[attr-defined]
        )
        self.announced_idle = announced_idle(answer.headers.get("Keep-Alive"))
        return answer

    @property
    def is_connected(self) -> bool:
        raw = getattr(getattr(self, "sock", None), "_sock", None)  # gevent's socket wraps the OS socket
        if raw is None or raw.gettimeout() != 0.0:  # not gevent's non-blocking one: urllib3's own check
            return super().is_connected  # type: ignore[misc]
        return hung_up(raw) is None  # bytes nobody asked for, or the end: of no use


class RelayHTTPConnection(_RelayConnection, urllib3.connection.HTTPConnection):
    pass


class RelayHTTPSConnection(_RelayConnection, urllib3.connection.HTTPSConnection):
    pass


CONNECTION_CLASSES: dict[type, type] = {
    urllib3.connection.HTTPConnection: RelayHTTPConnection,
    urllib3.connection.HTTPSConnection: RelayHTTPSConnection,
}
