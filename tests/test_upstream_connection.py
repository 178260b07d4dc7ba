"""The relay's upstream connections (proxy/connection.py): the answer's head parsed as http.client parses it,
a request's header lines built and checked as urllib3 builds and checks them, and a request's head sent with
its body.

The parser is compared with http.client's own (the email package's feed parser) on typical heads and on
thousands of random ones built from the pieces that make parsers disagree: line ends of every kind,
continuation lines, colons, envelope `From ` lines, bytes above 0x7f.
"""

from __future__ import annotations

import email.errors
import http.client
import io
import json
import random
import socket
import threading

import openai
import requests
import urllib3.connection
from urllib3.util import SKIP_HEADER

import proxy.connection
from bench.canned_upstream import API_ANSWER
from proxy.connection import RelayHTTPConnection, parse_header_lines
from tests.relay_server import run_python

IGNORED_BY_URLLIB3 = (email.errors.StartBoundaryNotFoundDefect, email.errors.MultipartInvariantViolationDefect)

TYPICAL = [
    b"Content-Type: application/json\r\nContent-Length: 289\r\nopenai-processing-ms: 312\r\n"
    b"x-request-id: req_123\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2\r\n\r\n",
    b"content-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n",
    b"X-Folded: first\r\n second\r\n\tthird\r\nX-After: yes\r\n\r\n",
    b"X-Bare-CR: a\rX-Smuggled: b\r\n\r\n",
    b"X-Empty:\r\nX-Spaces:    padded   \r\n:no-name\r\n\r\n",
    b"From someone\r\nX-A: 1\r\nFrom misplaced\r\nX-B: 2\r\n\r\n",
    b"X-A: 1\r\nnot a header line\r\nX-B: 2\r\n\r\n",
    b" starts folded\r\nX-A: 1\r\n\r\n",
    b"X-Latin: caf\xe9\r\nX-A: 1\nX-B: 2\n\n",
    b"X-A: 1\r\nFrom the end\r\n\r\n",
    b"\r\n",
]

PIECES = [b"X-A", b"Name", b"From ", b":", b": ", b" ", b"\t", b"\r\n", b"\n", b"\r", b"v", b"\xe9", b"a b", b"@"]


def head_lines(block: bytes) -> list[bytes]:
    """The header lines of `block` as http.client reads them from the socket."""
    return http.client._read_headers(io.BytesIO(block + b"\r\n\r\n"))


def described(message: http.client.HTTPMessage) -> tuple:
    defects = [(type(d).__name__, str(d)) for d in message.defects if not isinstance(d, IGNORED_BY_URLLIB3)]
    payload = None if message.is_multipart() else message.get_payload()
    return message.items(), message.get_unixfrom(), defects, payload


def test_typical_heads_parse_as_http_client_parses_them():
    for block in TYPICAL:
        lines = head_lines(block)
        assert described(parse_header_lines(lines)) == described(http.client._parse_header_lines(lines)), block


def test_random_heads_parse_as_http_client_parses_them():
    chance = random.Random(13)
    for _ in range(3000):
        block = b"".join(chance.choice(PIECES) for _ in range(chance.randint(1, 30)))
        lines = head_lines(block)
        assert described(parse_header_lines(lines)) == described(http.client._parse_header_lines(lines)), block


PLAIN_NAMES = ["Content-Type", "x-ratelimit-reset-tokens", "From", "From x", "Bad Name", "X\x7f", "X\xe9", "", "~!#"]
PLAIN_VALUES = ["application/json", "", "  padded  ", "\ttabbed", "a: b: c", "caf\xe9", "a\rb", "h3=\":443\"; ma=86400",
                "\x0b\x0c\x1c\x85\xa0\x00\x7f"]  # line breaks to str.splitlines, not to the feed parser
PLAIN_ENDS = ["\r\n", "\r\n", "\r\n", "\n", "\r"]


def test_heads_of_plain_lines_parse_as_http_client_parses_them():
    """Mostly "Name: value" lines, the kind parsed with two regular expressions, with the odd line that is not."""
    chance = random.Random(14)
    plain = 0
    for _ in range(3000):
        block = "".join(f"{chance.choice(PLAIN_NAMES)}:{chance.choice(PLAIN_VALUES)}{chance.choice(PLAIN_ENDS)}"
                        if chance.random() < 0.97 else chance.choice(["X-A: 1\r\n", " folded\r\n", "no colon\r\n"])
                        for _ in range(chance.randint(0, 25)))
        lines = head_lines(block.encode("latin-1"))
        plain += proxy.connection._PLAIN_HEAD.fullmatch(b"".join(lines).decode("latin-1")) is not None
        assert described(parse_header_lines(lines)) == described(http.client._parse_header_lines(lines)), block
    assert 100 < plain < 2900  # both ways through the parser were taken


NAMES = ["X-Stainless-Lang", "Authorization", "user-agent", "Accept-Encoding", "Host", "X-Custom", "", " X-Lead",
         "X:Colon", "X\r\nInjected", "X\nY", "Caf\xe9", "X\tTab", "日本", "X-Trail ", b"X-Bytes"]
VALUES = ["Bearer sk-abc", "", "  padded  ", "a\r\nX-Injected: 1", "a\nb", "a\rb", "a\r\n folded", "a\r\n\tfolded",
          "caf\xe9", "日本", "a\x00b", "a\x7fb", SKIP_HEADER, 17, b"bytes", b"a\r\nb"]


def header_lines_sent(connection_class: type, name, *values) -> object:
    """The header line a connection of `connection_class` buffers for `name: values`, or the error it raises."""
    connection = connection_class("127.0.0.1", 1)
    connection.putrequest("POST", "/v1/chat/completions", skip_host=True, skip_accept_encoding=True)
    try:
        connection.putheader(name, *values)
    except Exception as exc:  # noqa: BLE001 (the error itself is what is compared)
        return type(exc), str(exc)
    return connection._buffer[1:]


def test_header_lines_are_built_and_refused_as_urllib3_builds_and_refuses_them():
    stock = urllib3.connection.HTTPConnection
    cases = [(name, value) for name in NAMES for value in VALUES] + [(name, "a", "b") for name in NAMES[:3]]
    for case in cases:
        assert header_lines_sent(RelayHTTPConnection, *case) == header_lines_sent(stock, *case), case
    refused = sum(isinstance(header_lines_sent(stock, *case), tuple) for case in cases)
    assert 0 < refused < len(cases)  # both kinds are among the cases
    assert header_lines_sent(RelayHTTPConnection, "X-A", "1") == [b"X-A: 1"]


def test_a_header_line_out_of_a_request_head_is_refused_as_http_client_refuses_it():
    for connection_class in (RelayHTTPConnection, urllib3.connection.HTTPConnection):
        connection = connection_class("127.0.0.1", 1)
        try:
            connection.putheader("X-A", "1")
        except http.client.CannotSendHeader:
            continue
        raise AssertionError(f"{connection_class.__name__} sent a header line before the request line")


def answering_once(answer: bytes) -> tuple[socket.socket, list[bytes], threading.Thread]:
    """A raw upstream on a loopback port: it reads one request's head and body (one read) and sends `answer`."""
    upstream = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = upstream.accept()
        with conn:
            conn.settimeout(5)
            received.append(conn.recv(65536))
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return upstream, received, thread


def test_the_client_sees_the_upstream_head_as_urllib3_reads_it(start_relay):
    """Through the relay: repeated headers kept in order, a folded one joined by a space (urllib3's rule)."""
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            b"X-Folded: first\r\n second\r\nContent-Length: 2\r\n\r\n{}")
    upstream, received, thread = answering_once(head)
    try:
        relay = start_relay(UPSTREAM_URL=f"http://127.0.0.1:{upstream.getsockname()[1]}")
        answer_ = requests.post(relay.url + "/v1/chat/completions", data=b'{"model": "m"}', timeout=10,
                                headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json"})
        thread.join(5)
    finally:
        upstream.close()
    assert answer_.status_code == 200 and answer_.content == b"{}"
    assert answer_.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]
    assert answer_.headers["X-Folded"] == "first second"
    # the request's head and its small body went out in one write, so the upstream's first read had both
    assert received[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert received[0].endswith(b'\r\n\r\n{"model": "m"}')


def test_the_sdk_and_the_api_heads_cross_the_relay_whole(start_relay):
    """The official SDK's request head reaches the upstream with every header it sent; the API's answer head
    (23 plain lines, the kind parsed with two regular expressions) reaches the SDK with every end-to-end one."""
    upstream, received, thread = answering_once(API_ANSWER)
    try:
        relay = start_relay(UPSTREAM_URL=f"http://127.0.0.1:{upstream.getsockname()[1]}")
        client = openai.OpenAI(api_key="sk-test", base_url=relay.url + "/v1", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}])
        thread.join(5)
    finally:
        upstream.close()
    assert raw.parse().choices[0].message.content == "echo: hello"
    sent_head = received[0].split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    sent = {name.lower(): value for name, _, value in (line.partition(": ") for line in sent_head)}
    assert sent["authorization"] == "Bearer sk-test" and sent["x-stainless-lang"] == "python"
    assert sent["user-agent"].startswith("OpenAI/Python ") and sent["x-stainless-retry-count"] == "0"
    assert len(sent) >= 17 and "connection" not in sent  # the hop-by-hop one stays on the client's hop
    api_head = API_ANSWER.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    relayed_by_api = [(name, value) for name, _, value in (line.partition(": ") for line in api_head)
                      if name.lower() not in ("date", "server", "access-control-expose-headers")]
    got = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw.http_response.headers.raw
           if name.lower() not in (b"date", b"server", b"connection")]
    assert got == relayed_by_api  # in order, names as the API spelled them


WAIT_SCRIPT = r"""
from gevent import monkey; monkey.patch_all()
import json, socket, sys, time, gevent
from proxy.connection import UpstreamHTTPResponse

HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
CASES = {  # pieces the upstream sends, a pause of 0.3 s between each two
    "silence after a chunk": [HEAD + b"5\r\nhello\r\n", b"5\r\nworld\r\n0\r\n\r\n"],
    "a CRLF split": [HEAD + b"5\r\nhello\r", b"\n5\r\nworld\r\n0\r\n\r\n"],
    "a size line split": [HEAD + b"5\r\nhello\r\n1", b"0\r\n0123456789abcdef\r\n0\r\n\r\n"],
    "silence before the last chunk": [HEAD + b"5\r\nhello\r\n", b"0\r\n\r\n"],
    "a length body": [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", b"world"],
}
report = {}
for name, pieces in CASES.items():
    upstream, relay_side = socket.socketpair()
    def send(pieces=pieces):
        for index, piece in enumerate(pieces):
            if index:
                gevent.sleep(0.3)
            upstream.sendall(piece)
    sender = gevent.spawn(send)
    relay_side.settimeout(5)  # the read timeout: lifted while a wait's own timer runs, and given back
    answer = UpstreamHTTPResponse(relay_side, method="POST")
    answer.begin()
    body, quiet, ended = b"", 0, False
    started = time.monotonic()
    while not ended and time.monotonic() - started < 3:
        if not answer.wait_for_bytes(0.1):
            quiet += 1
            continue
        piece = answer.read1(65536)
        body += piece
        ended = not piece
    sender.join()
    report[name] = [body.decode(), quiet, ended, relay_side.gettimeout()]

upstream, relay_side = socket.socketpair()  # a read timeout shorter than the wait still ends it
upstream.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
relay_side.settimeout(0.05)
answer = UpstreamHTTPResponse(relay_side, method="POST")
answer.begin()
answer.read1(65536)
started = time.monotonic()
try:
    answer.wait_for_bytes(1)
    report["a shorter read timeout"] = "no error"
except TimeoutError:
    report["a shorter read timeout"] = round(time.monotonic() - started, 2)
print(json.dumps(report))
"""


def test_waiting_for_the_next_bytes_can_be_cut_short_without_losing_any():
    """`wait_for_bytes` under real gevent (a child process): silences are seen between chunks and before the last,
    and a wait cut short inside a split CRLF or size line takes nothing from the body; the socket's read timeout
    is the same after each wait, and one shorter than the wait ends it. (A gevent timer that has run out fires at
    once when started again: reusing one would have made every later wait end at once, a stream of heartbeats.)"""
    out = run_python(WAIT_SCRIPT)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["silence after a chunk"][0] == "helloworld" and report["silence after a chunk"][1] >= 2
    assert report["silence before the last chunk"][0] == "hello" and report["silence before the last chunk"][1] >= 2
    assert report["a length body"][0] == "helloworld" and report["a length body"][1] >= 2
    assert report["a CRLF split"][0] == "helloworld"
    assert report["a size line split"][0] == "hello0123456789abcdef"
    shorter = report.pop("a shorter read timeout")
    assert all(ended for _, _, ended, _ in report.values())  # each read to its end, none waiting past it
    assert all(timeout == 5 for *_, timeout in report.values())
    for case in ("silence after a chunk", "silence before the last chunk", "a length body"):  # one 0.3 s pause each
        assert report[case][1] <= 5, report[case]  # each wait lasts its 0.1 s, the second and later ones too
    assert shorter != "no error" and shorter < 0.5
