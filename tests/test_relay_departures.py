"""A client that leaves while the upstream is still preparing a non-streamed answer closes that upstream request.

The fake delays its answer (`x-fake-first-byte-delay`) and records when the relay closes the
connection (`client_closed_at`). Without a watch on the client's socket, the relay would notice
only when writing the answer, 20 s later here (up to UPSTREAM_READ_TIMEOUT, 600 s, in general).
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.test_relay_errors import status_of


def chat_request(tag: str, delay: float, body: bool = True) -> bytes:
    payload = json.dumps({"model": "m", "messages": [{"role": "user", "content": tag}]}).encode() if body else b""
    method, path = ("POST", "/v1/chat/completions") if body else ("GET", "/v1/models")
    head = (f"{method} {path} HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nx-fake-tag: {tag}\r\nx-fake-first-byte-delay: {delay}\r\n\r\n")
    return head.encode() + payload


def wait_upstream_closed(fake, tag: str, limit: float) -> float | None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = fake.tagged(tag)
        if found and found[0].client_closed_at is not None:
            return found[0].client_closed_at
        time.sleep(0.05)
    return None


@pytest.mark.parametrize("body", [True, False], ids=["with-body", "no-body"])
def test_leaving_before_the_answer_closes_the_upstream_request(relay, fake, body):
    tag = f"departure-{'body' if body else 'get'}"
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
        sock.sendall(chat_request(tag, 20, body))
        time.sleep(0.5)
    left_at = time.monotonic()
    closed_at = wait_upstream_closed(fake, tag, 6)
    assert closed_at is not None, "the relay kept the upstream request after the client left"
    print(f"\n{tag}: upstream closed {closed_at - left_at:.2f} s after the client left")
    assert closed_at - left_at < 3


def test_a_pipelined_request_is_left_for_the_server_and_answered_in_turn(relay, fake):
    """The watch peeks: the bytes of a second request sent behind the first are not consumed."""
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
        sock.sendall(chat_request("pipelined-1", 1) + chat_request("pipelined-2", 0))
        answers = b""
        deadline = time.monotonic() + 10
        while answers.count(b"chatcmpl-fake") < 2 and time.monotonic() < deadline:
            piece = sock.recv(65536)
            assert piece, f"the relay closed the connection: {answers[:500]!r}"
            answers += piece
    assert status_of(answers) == 200
    first, second = answers.index(b"echo: pipelined-1"), answers.index(b"echo: pipelined-2")
    assert first < second
    assert fake.by_tag("pipelined-2").completed


def test_leaving_a_session_turn_before_the_answer_closes_the_upstream_request(relay, fake):
    tag = "departure-session"
    payload = json.dumps({"apiKey": "sk-test-departure", "sessionId": "departure", "content": "hi"}).encode()
    head = (f"POST /pro/chat/completions HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nx-fake-tag: {tag}\r\nx-fake-first-byte-delay: 20\r\n\r\n")
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
        sock.sendall(head.encode() + payload)
        time.sleep(0.5)
    left_at = time.monotonic()
    closed_at = wait_upstream_closed(fake, tag, 6)
    assert closed_at is not None, "the relay kept the session's upstream request after the client left"
    assert closed_at - left_at < 3
