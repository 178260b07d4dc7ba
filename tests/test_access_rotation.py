"""Upstream key rotation: round-robin, a key refused with 401 or 429 rests, the request goes out again.

The fake upstream refuses a given key (`fake.refuse_key`) and records every
attempt, so each test can see which key each attempt carried.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time

import openai
import pytest
import requests

from tests.access_secrets import make_key

RELAY_KEY = make_key("relay-rotation", "rk")
_tags = itertools.count()


def tag() -> str:
    return f"access-rotation-{next(_tags)}"


def three_keys(label: str) -> list[str]:
    return [make_key(f"up-{label}-{letter}") for letter in "abc"]


def keyed_relay(start_relay, keys: list[str], cooldown: float):
    return start_relay(RELAY_KEYS=RELAY_KEY, OPENAI_API_KEY=",".join(keys), KEY_COOLDOWN=str(cooldown))


def attempts(fake, name: str) -> list[tuple[str, int]]:
    """(key, body sha256) of each upstream attempt of the request tagged `name`, in order."""
    return [(r.header("authorization").removeprefix("Bearer "), r.sha256) for r in fake.records
            if r.header("x-fake-tag") == name]


def chat(relay, name: str, content: str = "hi", stream: bool = False) -> requests.Response:
    body = {"model": "m", "messages": [{"role": "user", "content": content}], "stream": stream}
    return requests.post(relay.url + "/v1/chat/completions", json=body, timeout=10,
                         headers={"Authorization": f"Bearer {RELAY_KEY}", "x-fake-tag": name})


def test_keys_are_used_in_turn(start_relay, fake):
    keys = three_keys("turn")
    relay = keyed_relay(start_relay, keys, 60)
    used = []
    for _ in range(6):
        name = tag()
        assert chat(relay, name).status_code == 200
        [(key, _sha)] = attempts(fake, name)
        used.append(key)
    assert sorted(used[:3]) == sorted(keys)
    assert used[3:] == used[:3]


@pytest.mark.parametrize("status", [401, 429])
def test_a_refused_key_rests_and_the_request_goes_out_on_the_next(start_relay, fake, status):
    keys = three_keys(f"rest{status}")
    cooldown = 3.0
    relay = keyed_relay(start_relay, keys, cooldown)
    refused = keys[0]
    fake.refuse_key(refused, status)
    try:
        # Three requests in a row: one of them starts on the refused key, and is sent again on another.
        names = [tag() for _ in range(3)]
        with openai.OpenAI(base_url=relay.url + "/v1", api_key=RELAY_KEY, max_retries=0) as client:
            for index, name in enumerate(names):
                stream = client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": f"turn {index}"}], stream=True,
                    extra_headers={"x-fake-tag": name})
                assert "".join(c.choices[0].delta.content or "" for c in stream) == f"echo: turn {index}"
        rested_at = time.monotonic()
        retried = [attempts(fake, name) for name in names if len(attempts(fake, name)) > 1]
        assert len(retried) == 1, [attempts(fake, name) for name in names]
        [(first_key, first_sha), (second_key, second_sha)] = retried[0]
        assert first_key == refused and second_key in keys[1:]
        assert first_sha == second_sha  # the same body went out again

        # While it rests, the refused key is not tried (the fake would still refuse it).
        during = [tag() for _ in range(4)]
        for name in during:
            assert chat(relay, name).status_code == 200
        assert time.monotonic() - rested_at < cooldown, "the machine was too slow to check the cooldown"
        assert all(len(attempts(fake, name)) == 1 and attempts(fake, name)[0][0] != refused for name in during)
    finally:
        fake.refuse_key(refused, None)

    # After the cooldown the key is back in the rotation.
    time.sleep(max(0.0, rested_at + cooldown + 0.2 - time.monotonic()))
    after = [tag() for _ in range(3)]
    for name in after:
        assert chat(relay, name).status_code == 200
    assert [attempts(fake, name)[0][0] for name in after].count(refused) == 1


def test_every_key_refused_gives_the_upstream_answer_after_one_try_each(start_relay, fake):
    keys = three_keys("all")
    relay = keyed_relay(start_relay, keys, 60)
    for key in keys:
        fake.refuse_key(key, 429)
    try:
        first = tag()
        r = chat(relay, first)
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limit_exceeded"  # the upstream's own error body
        assert r.headers["retry-after"] == "1"
        tried = [key for key, _ in attempts(fake, first)]
        assert sorted(tried) == sorted(keys)

        # Every key resting: one attempt, on the key that recovers first (the first one refused).
        name = tag()
        assert chat(relay, name).status_code == 429
        assert [key for key, _ in attempts(fake, name)] == tried[:1]
    finally:
        for key in keys:
            fake.refuse_key(key, None)


def test_a_large_body_is_sent_once_but_its_refused_key_still_rests(start_relay, fake):
    keys = three_keys("large")
    relay = keyed_relay(start_relay, keys, 60)
    refused = keys[1]
    fake.refuse_key(refused, 401)
    big = json.dumps({"model": "m", "input": "x" * (1536 * 1024)}).encode()  # over the 1 MiB replay limit
    try:
        outcomes = []
        for _ in range(3):
            name = tag()
            r = requests.post(relay.url + "/v1/upload", data=big, timeout=30, headers={
                "Authorization": f"Bearer {RELAY_KEY}", "Content-Type": "application/json", "x-fake-tag": name})
            outcomes.append((r.status_code, attempts(fake, name)))
        # Exactly one landed on the refused key: its 401 went back to the client, with no second try.
        refused_outcomes = [o for o in outcomes if o[1][0][0] == refused]
        assert len(refused_outcomes) == 1
        status, tries = refused_outcomes[0]
        assert status == 401 and len(tries) == 1
        for status, tries in outcomes:
            assert tries[0][1] == hashlib.sha256(big).hexdigest()
            assert status == (401 if tries[0][0] == refused else 200)
        # ... and the key rests: the next requests go to the others.
        for _ in range(3):
            name = tag()
            assert chat(relay, name).status_code == 200
            assert attempts(fake, name)[0][0] != refused
    finally:
        fake.refuse_key(refused, None)
