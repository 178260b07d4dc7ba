"""A body that ends before its declared end must never leave a half-sent request on a pooled upstream connection.

Client A declares a body, sends part of it and leaves; the fake upstream (`x-fake-early: 1`) answers
before reading the body, then reads the declared length and keeps the connection, as HTTP/1.1 allows.
Had the relay put that connection back in its pool, the next client's request would become the rest
of A's body: the upstream would never see it as a request, and the client would get someone else's answer.
"""

from __future__ import annotations

import base64
import json
import socket
import time

import pytest
import requests

from tests.test_relay_errors import raw_request, status_of


def send_short_body(port: int, head: bytes, part: bytes, stay: bool) -> bytes:
    """Send `head` and `part` of its body, then close (stay=False) or only stop sending and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + part)
        if not stay:
            time.sleep(0.3)  # the relay has passed the head and the part on
            return b""
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while piece := sock.recv(65536):
            answer += piece
        return answer


def short_request(path: str, framing: str, tag: str) -> tuple[bytes, bytes]:
    """A request head declaring more body than the part that follows it."""
    if framing == "length":
        head = f"POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n"
        part = b'{"model": "m", "input": "' + b"x" * 2474
    else:  # chunked, without its last chunk
        head = f"POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
        head += "Transfer-Encoding: chunked\r\n"
        part = b"9c4\r\n" + b"x" * 2500 + b"\r\n"
    head += f"x-fake-early: 1\r\nx-fake-tag: {tag}\r\n\r\n"
    return head.encode(), part


@pytest.fixture(scope="module")
def early_relay(start_relay):
    """A relay with one pooled connection (so the next request surely takes A's) and a short read timeout."""
    return start_relay(UPSTREAM_POOL_SIZE="1", UPSTREAM_READ_TIMEOUT="5")


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_the_next_client_gets_its_own_answer_after_a_short_body(early_relay, fake, framing):
    head, part = short_request("/v1/echo", framing, f"smuggle-a-{framing}")
    send_short_body(early_relay.port, head, part, stay=False)
    tag_b = f"smuggle-b-{framing}"
    started = time.monotonic()
    answer = requests.post(early_relay.url + "/v1/echo", json={"model": "m", "input": "mine"}, timeout=15,
                           headers={"x-fake-tag": tag_b})
    assert answer.status_code == 200, (answer.status_code, answer.text[:300], time.monotonic() - started)
    echoed = answer.json()
    assert {k.lower(): v for k, v in echoed["headers"]}.get("x-fake-tag") == tag_b
    assert json.loads(base64.b64decode(echoed["body_b64"])) == {"model": "m", "input": "mine"}
    record = fake.by_tag(tag_b)  # the upstream saw B's request as a request of its own
    assert record.path == "/v1/echo" and record.body_len == len(b'{"model": "m", "input": "mine"}')


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_client_that_stops_mid_body_gets_a_400(early_relay, framing):
    head, part = short_request("/v1/echo", framing, f"smuggle-stay-{framing}")
    answer = send_short_body(early_relay.port, head, part, stay=True)
    assert status_of(answer) == 400, answer[:300]
    error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert error["code"] == "incomplete_body" and error["type"] == "invalid_request_error"


def test_session_chat_refuses_a_short_body(relay, fake):
    """A body cut after a complete JSON object is still a short body: 400, and nothing goes upstream."""
    tag = "smuggle-session"
    body = json.dumps({"apiKey": "sk-test-short", "sessionId": "short-body", "content": "hi"}).encode()
    head = (f"POST /pro/chat/completions HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body) + 100}\r\nx-fake-tag: {tag}\r\n\r\n").encode()
    answer = send_short_body(relay.port, head, body, stay=True)
    assert status_of(answer) == 400, answer[:300]
    reply = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert reply["code"] == 400 and "completely" in reply["message"]
    assert fake.tagged(tag) == []


def test_a_whole_body_still_goes_through(early_relay):
    """The check counts bytes, it does not refuse an early answer to a complete body."""
    body = b'{"model": "m", "input": "' + b"y" * 4000 + b'"}'
    head = (f"POST /v1/echo HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nx-fake-early: 1\r\nConnection: close\r\n\r\n").encode()
    assert status_of(raw_request(early_relay.port, head + body)) == 200
