"""Guessing relay keys: wrong keys are counted per client IP (`RELAY_KEY_FAILURES`), and over the limit that
address gets 429 whatever key it sends; other addresses, and requests without a key, are not affected."""

from __future__ import annotations

import pytest
import requests

from tests.access_secrets import make_key

RELAY_KEY = make_key("guessing-relay", "rk")
UPSTREAM = make_key("up-guessing")


@pytest.fixture(scope="module", params=["memory", "redis"])
def relays(request, start_relay):
    """Two relay processes: on Redis they share the count, in memory each has its own (so both are the first)."""
    env = {"RELAY_KEYS": RELAY_KEY, "OPENAI_API_KEY": UPSTREAM, "RELAY_KEY_FAILURES": "3/hour",
           "TRUSTED_PROXIES": "127.0.0.1"}
    if request.param == "memory":
        relay = start_relay(**env)
        return relay, relay
    env["REDIS_URL"] = request.getfixturevalue("redis_server").url
    return start_relay(**env), start_relay(**env)


def models(relay, address: str, key: str | None) -> requests.Response:
    headers = {"X-Forwarded-For": address, **({"Authorization": f"Bearer {key}"} if key else {})}
    return requests.get(relay.url + "/v1/models", headers=headers, timeout=10)


def test_wrong_keys_from_one_address_get_429_then_even_a_valid_key_waits(relays, request):
    first, second = relays
    guesser = f"203.0.113.{10 if 'memory' in request.node.callspec.id else 11}"
    assert [models(first, guesser, f"rk-guess-{n}").status_code for n in range(3)] == [401, 401, 401]
    refused = models(second, guesser, "rk-guess-3")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_relay_key_failures"
    assert 1 <= int(refused.headers["Retry-After"]) <= 3600
    assert models(second, guesser, RELAY_KEY).status_code == 429  # or a guesser would know a hit by its status


def test_other_addresses_and_requests_without_a_key_are_not_locked_out(relays, request):
    first, second = relays
    suffix = 20 if "memory" in request.node.callspec.id else 21
    guesser, neighbour, keyless = f"198.51.100.{suffix}", f"198.51.100.{suffix + 50}", f"192.0.2.{suffix}"
    for n in range(4):
        models(first, guesser, f"rk-guess-{n}")
    assert models(second, guesser, RELAY_KEY).status_code == 429
    assert models(second, neighbour, RELAY_KEY).status_code == 200  # the same valid key from elsewhere
    assert models(second, neighbour, "rk-one-typo").status_code == 401  # a first mistake is a 401
    assert [models(first, keyless, None).status_code for _ in range(6)] == [401] * 6  # no key: not a guess
    assert models(first, keyless, RELAY_KEY).status_code == 200


def test_pass_through_mode_counts_nothing(relay):
    for n in range(25):  # over the default 20/minute, had it applied
        assert models(relay, "127.0.0.1", f"sk-own-{n}").status_code == 200
