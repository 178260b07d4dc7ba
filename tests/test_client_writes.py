"""proxy/client_writes.py: gunicorn's answer with its head held for the first piece of body.

gunicorn's own request parser and response class, on a socket that records each `sendall`: the client must
get byte for byte what gunicorn's response sends, in fewer writes, and a head with no body after it must
go out when gunicorn's would. (Every test through gunicorn runs with it installed, too.)
"""

from __future__ import annotations

import email.utils
import json
import time

import pytest
import requests
from gunicorn import util
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser

from proxy.client_writes import HEAD_WITH_BODY, OneWriteResponse
from tests.relay_server import run_python


class RecordingSocket:
    def __init__(self):
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def writes(response_class: type, method: str, status: str, headers: list, pieces: list[bytes]) -> list[bytes]:
    cfg = Config()
    request = next(iter(RequestParser(cfg, [f"{method} / HTTP/1.1\r\nHost: x\r\n\r\n".encode()], ("127.0.0.1", 1))))
    sock = RecordingSocket()
    response = response_class(request, sock, cfg)
    response.start_response(status, headers)
    for piece in pieces:
        response.write(piece)
    response.close()
    return sock.writes


@pytest.fixture(autouse=True)
def fixed_date(monkeypatch):
    monkeypatch.setattr(util, "http_date", lambda *_: "Tue, 01 Dec 2026 12:00:00 GMT")


# method, status, headers, the app's pieces; then how many writes gunicorn's response makes, and ours.
CASES = {
    "a small answer": ("POST", "200 OK", [("Content-Type", "application/json"), ("Content-Length", "11")],
                       [b'{"ok":true}'], 2, 1),
    "a stream": ("POST", "200 OK", [("Content-Type", "text/event-stream")],
                 [b"data: 1\n\n", b"data: 2\n\n", b"data: [DONE]\n\n"], 5, 4),  # the head with the first
    "an answer to HEAD": ("HEAD", "200 OK", [("Content-Length", "11")], [b'{"ok":true}'], 1, 1),
    "no content": ("DELETE", "204 No Content", [], [], 1, 1),
    "a stream with no event": ("POST", "200 OK", [("Content-Type", "text/event-stream")], [], 2, 1),  # head+end
    "an empty first write": ("POST", "200 OK", [("Content-Type", "text/event-stream")], [b"", b"data: 1\n\n"], 3, 3),
    "a large first piece": ("POST", "200 OK", [("Content-Length", str(HEAD_WITH_BODY + 1))],
                            [b"x" * (HEAD_WITH_BODY + 1)], 2, 2),
}


@pytest.mark.parametrize("case", CASES)
def test_the_client_gets_the_same_bytes_in_fewer_writes(case):
    method, status, headers, pieces, gunicorn_writes, our_writes = CASES[case]
    gunicorns = writes(wsgi.Response, method, status, headers, pieces)
    ours = writes(OneWriteResponse, method, status, headers, pieces)
    assert b"".join(ours) == b"".join(gunicorns)
    assert (len(gunicorns), len(ours)) == (gunicorn_writes, our_writes)


def test_a_head_goes_out_when_gunicorn_would_send_it():
    # An empty write sends the head (gunicorn's does), so a client is not left waiting for it.
    first = writes(OneWriteResponse, "POST", "200 OK", [("Content-Type", "text/event-stream")], [b""])[0]
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b"\r\n\r\n")


def test_each_worker_installs_it():
    out = run_python("""
        import runpy
        from gunicorn import util
        from gunicorn.http import wsgi
        runpy.run_path("gunicorn.conf.py")["post_worker_init"](None)
        print(wsgi.Response.__module__, wsgi.Response.__name__, util.http_date.__module__)
    """)
    assert out.stdout.split() == ["proxy.client_writes", "OneWriteResponse", "proxy.client_writes"], out.stderr


def test_the_date_is_formatted_once_per_second_and_a_given_time_as_gunicorn_does(monkeypatch):
    from proxy import client_writes

    clock = [1_796_040_000.25]
    monkeypatch.setattr(client_writes.time, "time", lambda: clock[0])
    monkeypatch.setattr(client_writes, "_formatted_date", (0, ""))
    first = client_writes.http_date()
    clock[0] += 0.7  # the same second: the same string, not formatted again
    assert client_writes.http_date() is first == "Mon, 30 Nov 2026 12:00:00 GMT"
    clock[0] += 0.1  # the next second
    assert client_writes.http_date() == "Mon, 30 Nov 2026 12:00:01 GMT"
    assert client_writes.http_date(86_400.5) == client_writes._gunicorn_http_date(86_400.5) == (
        "Fri, 02 Jan 1970 00:00:00 GMT")


def test_through_the_relay_the_date_is_the_time_of_the_answer(relay):
    """gunicorn's Date header, now from the per-second value: the answer's own second, on every answer."""
    for _ in range(3):
        before = int(time.time())
        answer = requests.get(relay.url + "/healthz", timeout=5)
        after = time.time()
        sent = email.utils.parsedate_to_datetime(answer.headers["Date"]).timestamp()
        assert before <= sent <= after, (before, answer.headers["Date"], after)
        time.sleep(0.6)


OS_SOCKET_SCRIPT = r"""
from gevent import monkey; monkey.patch_all()
import json, socket, gevent, gevent.ssl
from gunicorn.config import Config
from gunicorn.http import wsgi
from gunicorn.http.parser import RequestParser
from proxy.client_writes import install

install()
calls = []
plain_sendall = socket.socket.sendall
def counting_sendall(self, data, *args):
    calls.append(type(self).__name__)
    return plain_sendall(self, data, *args)
socket.socket.sendall = counting_sendall

class Subclass(socket.socket):  # as gevent's TLS socket is: its bytes must not skip its own sendall
    pass

def answer(sock, pieces):
    request = next(iter(RequestParser(Config(), [b"POST / HTTP/1.1\r\nHost: x\r\n\r\n"], ("127.0.0.1", 1))))
    response = wsgi.Response(request, sock, Config())
    response.start_response("200 OK", [("Content-Type", "text/event-stream")])
    for piece in pieces:
        response.write(piece)
    response.close()

report = {}
for name, pieces, kind in [("small", [b"data: 1\n\n", b"data: 2\n\n"], socket.socket),
                           ("large", [b"x" * (8 << 20)], socket.socket),
                           ("subclass", [b"data: 1\n\n"], Subclass)]:
    left, right = socket.socketpair()
    relay_side = kind(fileno=left.detach())
    got = bytearray()
    def read():
        while data := right.recv(1 << 20):
            got.extend(data)
    reader = gevent.spawn(read)
    calls.clear()
    answer(relay_side, pieces)
    relay_side.close()
    reader.join(10)
    body = bytes(got).split(b"\r\n\r\n", 1)[1]
    report[name] = [body == b"".join(b"%X\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n", calls[:]]
print(json.dumps(report))
"""


def test_under_gevent_a_piece_goes_straight_to_the_os_socket_and_what_it_leaves_through_sendall():
    """Real gevent sockets (a child process): small pieces and the chunked body's end go out in one OS call
    each, never through gevent's `sendall`; a piece larger than the socket's buffer is sent whole, its rest by
    `sendall`; a subclass of gevent's socket (gevent's TLS socket is one) always writes through its own."""
    out = run_python(OS_SOCKET_SCRIPT)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["small"] == [True, []]
    assert report["large"] == [True, ["socket"]]  # the rest of the piece
    assert report["subclass"] == [True, ["Subclass", "Subclass"]]  # the head with the piece, then the end
