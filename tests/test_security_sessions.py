"""Session and balance endpoints behind relay keys: a refused client is answered before its body is read,
and a session belongs to the relay key that was checked, never to a string of the body (issue 9 items 3, 4)."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from tests.access_secrets import make_key
from tests.session_client import SessionClient, new_session_id, sent_messages

ALICE = make_key("sessions-alice", "rk")
BOB = make_key("sessions-bob", "rk")
SERVER_KEY = make_key("up-sessions")
PLACEHOLDER = "placeholder"  # the body's apiKey both send: it must not decide whose session it is


@pytest.fixture(scope="module", params=["memory", "redis"])
def keyed_relay(request, start_relay):
    env = {} if request.param == "memory" else {"REDIS_URL": request.getfixturevalue("redis_server").url}
    return start_relay(RELAY_KEYS=f"{ALICE},{BOB}", OPENAI_API_KEY=SERVER_KEY, **env)


def as_holder(relay, relay_key: str) -> SessionClient:
    client = SessionClient(relay.url, key=PLACEHOLDER)
    client.auth = lambda: {"Authorization": f"Bearer {relay_key}"}  # GET and DELETE: the relay key, not the body's
    return client


def chat(client: SessionClient, sid: str, content: str, tag: str) -> requests.Response:
    return client.chat(sid, content, tag=tag, headers=client.auth())


def test_two_relay_keys_with_the_same_session_id_and_body_key_have_separate_sessions(keyed_relay, fake):
    alice, bob = as_holder(keyed_relay, ALICE), as_holder(keyed_relay, BOB)
    sid = new_session_id()
    assert chat(alice, sid, "alice's secret", f"{sid}-a1").json()["data"] == "echo: alice's secret"
    assert chat(bob, sid, "bob asks", f"{sid}-b1").status_code == 200
    assert sent_messages(fake, f"{sid}-b1") == [{"role": "user", "content": "bob asks"}]  # none of Alice's turn
    assert [m["content"] for m in bob.messages(sid)] == ["bob asks", "echo: bob asks"]
    assert bob.forget(sid).status_code == 200
    assert bob.forget(sid).status_code == 404
    assert [m["content"] for m in alice.messages(sid)] == ["alice's secret", "echo: alice's secret"]

    only_alice = new_session_id()
    assert chat(alice, only_alice, "mine alone", f"{only_alice}-a").status_code == 200
    assert bob.messages(only_alice) is None
    assert bob.forget(only_alice).status_code == 404
    assert [m["content"] for m in alice.messages(only_alice)] == ["mine alone", "echo: mine alone"]


def test_a_relay_key_in_the_body_alone_opens_its_own_sessions(keyed_relay, fake):
    """Seed-style clients send only the body's apiKey: behind relay keys it is checked as the relay key (once
    the body is read), and the sessions it opens are the ones the same key sees from a header."""
    sid = new_session_id()
    in_body = SessionClient(keyed_relay.url, key=ALICE)
    assert in_body.chat(sid, "from the body", tag=f"{sid}-body").json()["data"] == "echo: from the body"
    assert fake.by_tag(f"{sid}-body").header("Authorization") == f"Bearer {SERVER_KEY}"
    assert [m["content"] for m in as_holder(keyed_relay, ALICE).messages(sid)] == ["from the body",
                                                                                 "echo: from the body"]
    assert as_holder(keyed_relay, BOB).messages(sid) is None
    wrong = SessionClient(keyed_relay.url, key="rk-not-a-relay-key-at-all").chat(sid, "x", tag=f"{sid}-wrong")
    assert wrong.status_code == 401 and wrong.json()["code"] == 401
    assert fake.tagged(f"{sid}-wrong") == []


def half_sent(port: int, method: str, target: str, headers: dict[str, str]) -> socket.socket:
    """A request that declares a 10 000-byte body and sends 20 bytes of it, then nothing more."""
    fields = {"Host": "relay", "Content-Type": "application/json", "Content-Length": "10000", **headers}
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(head.encode() + b'{"apiKey": "placehol')
    return sock


def answer_of(sock: socket.socket) -> tuple[int, dict, float]:
    """The status and JSON body that come back while the body is still owed, and how long they took."""
    started = time.monotonic()
    received = b""
    try:
        while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < _length(received):
            piece = sock.recv(65536)
            if not piece:
                break
            received += piece
    except TimeoutError:
        raise AssertionError(f"no answer within 5 s while the body is owed: {received[:200]!r}") from None
    finally:
        sock.close()
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body), time.monotonic() - started


def _length(received: bytes) -> int:
    for line in received.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 30


@pytest.mark.parametrize(("method", "target"), [
    ("POST", "/pro/chat/completions"), ("GET", "/pro/sessions/s-1"), ("DELETE", "/pro/sessions/s-1"),
    ("GET", "/pro/balance"),
])
@pytest.mark.parametrize("place", ["Authorization", "x-api-key"])
def test_pro_endpoints_refuse_a_wrong_relay_key_before_the_body(keyed_relay, method, target, place):
    key = "rk-not-a-relay-key-at-all"
    headers = {place: f"Bearer {key}" if place == "Authorization" else key}
    status, body, took = answer_of(half_sent(keyed_relay.port, method, target, headers))
    assert status == 401 and body["code"] == 401 and "relay key" in body["message"]
    print(f"{method} {target} key in {place}: 401 after {took * 1000:.0f} ms, body still owed")


def test_pass_through_rate_limit_refuses_before_the_body(start_relay):
    relay = start_relay(RATE_LIMIT="1/hour", TRUSTED_PROXIES="127.0.0.1")
    headers = {"X-Forwarded-For": "203.0.113.99"}
    first = SessionClient(relay.url).chat(new_session_id(), "the one allowed", headers=headers)
    assert first.status_code == 200
    status, body, _ = answer_of(half_sent(relay.port, "POST", "/pro/chat/completions", headers))
    assert status == 429 and body["code"] == 429
