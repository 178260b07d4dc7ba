"""The relay's `Answer` (proxy/answer.py) read side by side with urllib3's own response object.

A raw-socket upstream sends each answer below, well framed or not, to two pools: urllib3's own connections
and the relay's. Both must see the same status and headers, the same bytes, the same failure, and leave
their connection in the same state: back in the pool and used again, or closed (a connection whose body was
not read to its end must never carry the next request: the next answer would be the rest of this one).
"""

from __future__ import annotations

import gzip
import socket
import threading
from collections.abc import Iterator

import pytest
import requests
import urllib3

from proxy.connection import RelayHTTPConnection
from proxy.upstream import NO_RETRY
from tests.raw_http import read_head
from tests.test_relay_errors import assert_openai_error

OK = b"HTTP/1.1 200 OK\r\n"
ANSWERS = {  # name: (method, what the upstream sends, whether it then closes the connection)
    "length": ("GET", OK + b"Content-Length: 5\r\n\r\nhello", False),
    "chunked": ("GET", OK + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", False),
    "until close": ("GET", OK + b"Connection: close\r\n\r\nhello, until the end", True),
    "http/1.0": ("GET", b"HTTP/1.0 200 OK\r\n\r\nold style", True),
    "short of its length": ("GET", OK + b"Content-Length: 10\r\n\r\nhello", True),
    "chunk cut": ("GET", OK + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhel", True),
    "bad chunk size": ("GET", OK + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n", True),
    "longer than its length": ("GET", OK + b"Content-Length: 5\r\n\r\nhello, and more", False),
    "head": ("HEAD", OK + b"Content-Length: 5\r\n\r\n", False),
    "204": ("GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", False),
    "304": ("GET", b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n", False),
    "length and chunked": ("GET", OK + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"5\r\nhello\r\n0\r\n\r\n", False),
    "lengths that differ": ("GET", OK + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", False),
    "lengths that agree": ("GET", OK + b"Content-Length: 5, 5\r\n\r\nhello", True),  # read to the close
    "negative length": ("GET", OK + b"Content-Length: -1\r\nConnection: close\r\n\r\nhello", True),
    "repeated and folded": ("GET", OK + b"Set-Cookie: a=1\r\nset-cookie: b=2\r\nX-Folded: one\r\n\t two\r\n"
                            b"Content-Length: 2\r\n\r\nok", False),
    "100 continue first": ("GET", b"HTTP/1.1 100 Continue\r\n\r\n" + OK + b"Content-Length: 2\r\n\r\nok", False),
    "gzip": ("GET", OK + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(gzip.compress(b"unzipped"))
             + gzip.compress(b"unzipped"), False),
}
AGAIN = OK + b"Content-Length: 5\r\n\r\nagain"


class RawUpstream:
    """Answers a request for .../again with `AGAIN` and any other with `answer`; counts connections."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.5)
        self.closed = False
        self.port = self.server.getsockname()[1]
        self.answer, self.close_after = b"", False
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            for _ in range(3):  # bounded: a pool sends at most two requests on a connection here
                try:
                    head = read_head(conn)
                except OSError:
                    return
                if b"\r\n\r\n" not in head:  # the pool closed the connection
                    return
                first = not head.split(b" ", 2)[1].endswith(b"/again")
                conn.sendall(self.answer if first else AGAIN)
                if first and self.close_after:
                    return

    def close(self) -> None:
        self.closed = True
        self.server.close()


@pytest.fixture(scope="module")
def raw_upstream() -> Iterator[RawUpstream]:
    upstream = RawUpstream()
    yield upstream
    upstream.close()


def kind(exc: Exception) -> str:
    """The exception's class, or the urllib3 one it refines (the relay's LengthsDisagree is an InvalidHeader)."""
    return next(c.__name__ for c in type(exc).__mro__ if c.__module__ in ("urllib3.exceptions", "http.client",
                                                                         "builtins"))


def outcome(upstream: RawUpstream, relays: bool, name: str, reading: str) -> dict:
    """What a pool makes of answer `name`, read `reading`'s way, and of a second request after it."""
    method, upstream.answer, upstream.close_after = ANSWERS[name]
    pool = urllib3.HTTPConnectionPool("127.0.0.1", upstream.port, maxsize=1, timeout=urllib3.Timeout(5, 5))
    if relays:
        pool.ConnectionCls = RelayHTTPConnection
    before = upstream.connections
    seen: dict = {}
    try:
        answer = pool.urlopen(method, "/first", retries=NO_RETRY, redirect=False, preload_content=False,
                              decode_content=False)
    except Exception as exc:  # noqa: BLE001 - the failure is what is compared
        seen["failed"] = kind(exc)
    else:
        seen.update(status=answer.status, items=[(key.lower(), value) for key, value in answer.headers.items()],
                    joined={key: answer.headers.get(key) for key in ("set-cookie", "X-FOLDED", "content-length")},
                    has=[key in answer.headers for key in ("Set-Cookie", "x-missing")])
        body = b""
        try:
            if reading == "read1":
                for _ in range(100):  # bounded: each read returns what has arrived
                    piece = answer.read1(7, decode_content=False)
                    if not piece:
                        break
                    body += piece
            elif reading == "read":
                body = answer.read(decode_content=False)
            else:  # decoded, with a limit, as read_whole reads
                body = answer.read(1000, decode_content=True)
        except Exception as exc:  # noqa: BLE001
            seen["broke"] = kind(exc)
        seen["body"] = body
        answer.close()
        answer.release_conn()
    try:
        again = pool.urlopen("GET", "/again", retries=NO_RETRY, redirect=False, preload_content=False)
        seen["again"] = (again.status, again.read(), upstream.connections - before)
        again.release_conn()
    except Exception as exc:  # noqa: BLE001 - a connection left with bytes of the first answer
        seen["again"] = (type(exc).__name__, upstream.connections - before)
    pool.close()
    return seen


@pytest.mark.parametrize("reading", ["read1", "read", "decoded"])
@pytest.mark.parametrize("name", list(ANSWERS))
def test_an_answer_reads_as_urllib3_reads_it(raw_upstream, name, reading):
    urllib3_sees = outcome(raw_upstream, False, name, reading)
    assert outcome(raw_upstream, True, name, reading) == urllib3_sees


def test_the_cases_cover_what_matters(raw_upstream):
    """The cases above include a connection used again, one closed for a short body, and a failed head."""
    assert outcome(raw_upstream, True, "length", "read1")["again"][2] == 1  # the same connection again
    short = outcome(raw_upstream, True, "short of its length", "read1")
    assert short["broke"] == "ProtocolError" and short["again"][2] == 2
    assert outcome(raw_upstream, True, "lengths that differ", "read1")["failed"] == "InvalidHeader"
    assert outcome(raw_upstream, True, "gzip", "decoded")["body"] == b"unzipped"
    folded = outcome(raw_upstream, True, "repeated and folded", "read")
    assert folded["joined"]["set-cookie"] == "a=1, b=2" and folded["joined"]["X-FOLDED"] == "one two"


def test_each_header_keeps_the_name_it_came_with(raw_upstream):
    """One difference from urllib3, on purpose: a repeated header's names are passed on as each was sent
    (urllib3's header dict gives every repeat the first one's spelling)."""
    _, raw_upstream.answer, raw_upstream.close_after = ANSWERS["repeated and folded"]
    pool = urllib3.HTTPConnectionPool("127.0.0.1", raw_upstream.port, timeout=urllib3.Timeout(5, 5))
    pool.ConnectionCls = RelayHTTPConnection
    answer = pool.urlopen("GET", "/first", retries=NO_RETRY, redirect=False, preload_content=False)
    assert [name for name, _ in answer.headers.items()] == ["Set-Cookie", "set-cookie", "X-Folded", "Content-Length"]
    assert answer.read() == b"ok"
    pool.close()


def test_lengths_that_disagree_are_a_502_that_says_so_and_the_connection_is_dropped(raw_upstream, start_relay):
    """Two Content-Lengths that differ leave where the body ends to a guess: the relay answers 502 and never
    sends another request on that connection (its next bytes could be taken for the next answer)."""
    _, raw_upstream.answer, raw_upstream.close_after = ANSWERS["lengths that differ"]
    relay = start_relay(UPSTREAM_URL=f"http://127.0.0.1:{raw_upstream.port}")
    before = raw_upstream.connections
    answer = requests.get(relay.url + "/v1/models", headers={"Authorization": "Bearer sk-test"}, timeout=10)
    assert_openai_error(answer, 502, "upstream_bad_response")
    assert "Content-Length headers that disagree (5, 6)" in answer.json()["error"]["message"]
    again = requests.get(relay.url + "/v1/again", headers={"Authorization": "Bearer sk-test"}, timeout=10)
    assert again.status_code == 200 and again.content == b"again"
    assert raw_upstream.connections - before == 2
