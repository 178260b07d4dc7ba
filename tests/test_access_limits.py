"""RATE_LIMIT through the real relay: per relay key, per client IP, trusted proxies, and Redis shared by two relays."""

from __future__ import annotations

import itertools

import openai
import pytest
import redis
import requests

from tests.access_secrets import make_key, telltales

KEY_ONE = make_key("relay-limit-one", "rk")
KEY_TWO = make_key("relay-limit-two", "rk")
UPSTREAM = make_key("up-limit")
SHARED_KEY = make_key("relay-shared", "rk")
SHARED_UPSTREAM = make_key("up-shared")
_tags = itertools.count()


def tag() -> str:
    return f"access-limits-{next(_tags)}"


def get(relay, headers: dict[str, str]) -> tuple[requests.Response, str]:
    name = tag()
    r = requests.get(relay.url + "/v1/models", headers=headers | {"x-fake-tag": name}, timeout=10)
    return r, name


def reached_upstream(fake, name: str) -> bool:
    return any(r.header("x-fake-tag") == name for r in fake.records)


def assert_limited(r: requests.Response, limit: str, longest: int) -> None:
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert limit in error["message"]
    assert 1 <= int(r.headers["Retry-After"]) <= longest


def test_limit_per_relay_key(start_relay, fake):
    relay = start_relay(RELAY_KEYS=f"{KEY_ONE},{KEY_TWO}", OPENAI_API_KEY=UPSTREAM, RATE_LIMIT="3/hour,100/day")
    for _ in range(3):
        r, name = get(relay, {"Authorization": f"Bearer {KEY_ONE}"})
        assert r.status_code == 200 and reached_upstream(fake, name)
    # The same key in another place is the same caller.
    r, name = get(relay, {"x-api-key": KEY_ONE})
    assert_limited(r, "3/hour", 3600)
    assert not reached_upstream(fake, name)
    # The other key has its own count.
    r, _ = get(relay, {"Authorization": f"Bearer {KEY_TWO}"})
    assert r.status_code == 200
    # The SDK sees the matching exception.
    with (
        openai.OpenAI(base_url=relay.url + "/v1", api_key=KEY_ONE, max_retries=0) as client,
        pytest.raises(openai.RateLimitError, match="3/hour"),
    ):
        client.models.list()


def test_limit_per_client_ip_and_a_spoofed_forwarded_for_gains_nothing(start_relay, fake):
    relay = start_relay(RATE_LIMIT="3/hour")  # pass-through mode: counted per client IP
    for index in range(3):
        r, _ = get(relay, {"Authorization": f"Bearer sk-own-{index}"})  # changing one's key changes nothing
        assert r.status_code == 200
    for spoof in ["198.51.100.1", "203.0.113.9, 198.51.100.2", "::1"]:
        r, name = get(relay, {"Authorization": "Bearer sk-own-0", "X-Forwarded-For": spoof, "X-Real-IP": spoof})
        assert_limited(r, "3/hour", 3600)
        assert not reached_upstream(fake, name)


@pytest.mark.parametrize("trusted", ["127.0.0.1", "1"])
def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(start_relay, trusted):
    relay = start_relay(RATE_LIMIT="2/hour", TRUSTED_PROXIES=trusted)
    # The proxy (here: the test, from 127.0.0.1) appends the address it saw to whatever the client sent.
    for _ in range(2):
        assert get(relay, {"X-Forwarded-For": "198.51.100.7"})[0].status_code == 200
    assert_limited(get(relay, {"X-Forwarded-For": "198.51.100.7"})[0], "2/hour", 3600)
    # A client that sends its own X-Forwarded-For only adds entries to the left: still the same client.
    assert_limited(get(relay, {"X-Forwarded-For": "6.6.6.6, 198.51.100.7"})[0], "2/hour", 3600)
    # Another client has its own count.
    assert get(relay, {"X-Forwarded-For": "198.51.100.8"})[0].status_code == 200


def test_one_limit_shared_by_two_relays_through_redis(start_relay, start_redis, fake):
    server = start_redis()
    env = {"RELAY_KEYS": SHARED_KEY, "OPENAI_API_KEY": SHARED_UPSTREAM, "RATE_LIMIT": "4/hour",
           "REDIS_URL": server.url}
    first, second = start_relay(**env), start_relay(**env)
    auth = {"Authorization": f"Bearer {SHARED_KEY}"}
    for relay in [first, second, first, second]:
        r, name = get(relay, auth)
        assert r.status_code == 200 and reached_upstream(fake, name)
    for relay in [first, second]:
        r, name = get(relay, auth)
        assert_limited(r, "4/hour", 3600)
        assert not reached_upstream(fake, name)

    # Redis holds counters named by a hash (rate limits) or a label (usage): no key, no part of one.
    client = redis.Redis.from_url(server.url)
    names = [name.decode() for name in client.keys("*")]
    assert names and all(name.startswith(("relay:ratelimit:", "relay:usage:")) for name in names)
    dump = " ".join(names + [str(client.hgetall(name)) for name in names])
    for key in [SHARED_KEY, SHARED_UPSTREAM]:
        assert not any(telltale in dump for telltale in telltales(key))

    # Redis gone: requests are let through (and a warning logged), the relay keeps relaying.
    server.stop()
    for relay in [first, second]:
        r, name = get(relay, auth)
        assert r.status_code == 200 and reached_upstream(fake, name)
    assert "rate limit store (Redis) unreachable" in first.log()
