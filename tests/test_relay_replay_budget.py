"""Bodies held in memory for a retry on the next upstream key share one budget per worker.

Every upstream key is refused here (with no cooldown, so none rests): a body held for a retry is
sent once per key, a body streamed is sent once. A client that sends part of a body and waits holds
its share of the budget while the relay reads the rest, which is how the budget fills in this test.
"""

from __future__ import annotations

import socket
import time

import requests

from tests.access_secrets import make_key

RELAY_KEY = make_key("relay-replay", "rk")
KEYS = [make_key(f"up-replay-{letter}") for letter in "abc"]
BUDGET = 300_000  # bodies up to 64 KiB are read whole outside the budget: these are larger


def upload(relay, tag: str, size: int) -> requests.Response:
    return requests.post(relay.url + "/v1/upload", data=b"x" * size, timeout=15, headers={
        "Authorization": f"Bearer {RELAY_KEY}", "Content-Type": "application/octet-stream", "x-fake-tag": tag})


def hold_budget(relay, size: int) -> socket.socket:
    """A client that declares `size` bytes, sends a few and waits: the relay reserves `size` while it reads."""
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
    sock.sendall((f"POST /v1/upload HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {RELAY_KEY}\r\n"
                  f"Content-Length: {size}\r\nx-fake-tag: replay-holder\r\n\r\nxx").encode())
    time.sleep(0.5)  # the relay has started reading it
    return sock


def test_past_the_budget_a_body_is_streamed_and_sent_once(start_relay, fake):
    relay = start_relay(RELAY_KEYS=RELAY_KEY, OPENAI_API_KEY=",".join(KEYS), KEY_COOLDOWN="0",
                        REPLAY_BUDGET_BYTES=str(BUDGET))
    for key in KEYS:
        fake.refuse_key(key, 401)
    try:
        assert upload(relay, "replay-free", 200_000).status_code == 401
        assert len(fake.tagged("replay-free")) == len(KEYS)  # held: one try per key

        holder = hold_budget(relay, 200_000)  # 200 kB of the 300 kB budget are taken
        try:
            assert upload(relay, "replay-over", 200_000).status_code == 401
            assert len(fake.tagged("replay-over")) == 1  # streamed: sent once
            assert upload(relay, "replay-within", 90_000).status_code == 401
            assert len(fake.tagged("replay-within")) == len(KEYS)  # what is left of the budget still serves
            assert upload(relay, "replay-small", 60_000).status_code == 401
            assert len(fake.tagged("replay-small")) == len(KEYS)  # a small body is always read whole
        finally:
            holder.close()
        time.sleep(0.5)  # the holder's request ended with its connection: its share is back
        assert upload(relay, "replay-again", 200_000).status_code == 401
        assert len(fake.tagged("replay-again")) == len(KEYS)
    finally:
        for key in KEYS:
            fake.refuse_key(key, None)
