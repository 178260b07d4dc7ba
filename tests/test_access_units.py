"""Unit tests of the access pieces, with a controlled clock (the behaviour through the server is in the other
test_access_* files). The Redis counter runs on the real redis-server of the fixtures."""

from __future__ import annotations

import time

import pytest
import redis
from flask import Flask

import access
from access import Access, AccessDenied
from access.keys import RelayKeys, place_key, presented, remove_keys
from access.paths import AllowedPaths
from access.ratelimit import Limit, MemoryCounter, parse_limits
from access.redis_counter import RedisCounter
from access.rotation import KeyRing
from proxy.routes import build_routes
from proxy.settings import Settings, SettingsError
from tests.access_secrets import make_key

RELAY_KEY = make_key("relay-unit", "rk")
UPSTREAM_A = make_key("up-unit-a")
UPSTREAM_B = make_key("up-unit-b")
OWN = make_key("own-unit")


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def build(**config: str) -> Access:
    settings = Settings.load({}, config)
    return Access.from_settings(settings, build_routes(settings).values())


# -- keys ----------------------------------------------------------------------


def test_relay_keys_match_exactly_and_only_as_digests():
    keys = RelayKeys.parse(f" {RELAY_KEY} , other-key-0123456789 ,")
    assert len(keys) == 2
    assert keys.matches(RELAY_KEY) and keys.matches("other-key-0123456789")
    for wrong in ["", RELAY_KEY[:-1], RELAY_KEY + " ", RELAY_KEY.upper(), "ünïcode"]:
        assert not keys.matches(wrong)
    assert RELAY_KEY not in repr(vars(keys))  # only digests are kept
    assert not RelayKeys.parse(" , ")


def test_presented_finds_every_place():
    environ = {"HTTP_AUTHORIZATION": "bearer  a1 ", "HTTP_X_API_KEY": "b2", "HTTP_API_KEY": "c3",
               "HTTP_X_GOOG_API_KEY": "d4", "QUERY_STRING": "alt=sse&key=e%2B5"}
    assert presented(environ) == {"authorization": "a1", "x-api-key": "b2", "api-key": "c3",
                                  "x-goog-api-key": "d4", "?key": "e+5"}
    assert presented({"HTTP_AUTHORIZATION": "Basic dXNlcg==", "QUERY_STRING": "keys=1&key="}) == {}


def test_remove_and_place_keys_keep_everything_else_as_sent():
    headers = {"Authorization": "Bearer x", "X-Api-Key": "y", "Content-Type": "application/json"}
    url = remove_keys("https://up/v1/x?a=%2F&key=z&b=&%6Bey=z2", headers, {"authorization", "x-api-key", "?key"})
    assert url == "https://up/v1/x?a=%2F&b="
    assert headers == {"Content-Type": "application/json"}
    assert remove_keys("https://up/v1/x?key=z", {}, {"?key"}) == "https://up/v1/x"
    assert place_key({}, "k", "openai") == {"Authorization": "Bearer k"}
    assert place_key({}, "k", "anthropic") == {"x-api-key": "k"}
    assert place_key({}, "k", "gemini") == {"x-goog-api-key": "k"}
    assert place_key({}, "k", "groq") == {"Authorization": "Bearer k"}


# -- rotation ------------------------------------------------------------------


def test_key_ring_turns_rests_refused_keys_and_falls_back_to_the_first_to_recover():
    clock = Clock()
    ring = KeyRing("openai", ["a", "b", "c"], cooldown=60, clock=clock)
    assert [ring.attempts()[0] for _ in range(4)] == ["a", "b", "c", "a"]
    assert ring.attempts() == ["b", "c", "a"]
    assert not ring.refused("b", 500)
    assert ring.refused("b", 401)
    clock.now += 10
    assert ring.refused("c", 429)
    assert ring.attempts() == ["a"]
    assert ring.attempts() == ["a"]
    assert ring.refused("a", 401)
    assert ring.attempts() == ["b"]  # all resting: the one whose rest ends first
    clock.now += 51
    assert ring.attempts() == ["b"]  # back (rested 61 s), "c" and "a" still resting
    clock.now += 60
    assert sorted(ring.attempts()) == ["a", "b", "c"]


# -- rate limits -----------------------------------------------------------------


def test_parse_limits():
    assert parse_limits("60/minute, 1000/day,5/s,2/hours") == (
        Limit(60, 60, "minute"), Limit(1000, 86400, "day"), Limit(5, 1, "second"), Limit(2, 3600, "hour"))
    assert parse_limits("") == ()
    for bad in ["60", "60/week", "x/minute", "0/minute", "-1/day", "1.5/hour"]:
        with pytest.raises(SettingsError, match="RATE_LIMIT"):
            parse_limits(bad)


def test_memory_counter_fixed_windows_and_refusals_that_count_nothing():
    clock = Clock(3600 * 1000)  # at the start of a minute and of an hour
    counter = MemoryCounter(longest_period=3600, clock=clock)
    limits = parse_limits("2/minute,3/hour")
    assert counter.hit("a", limits).allowed and counter.hit("a", limits).allowed
    clock.now += 15
    refused = counter.hit("a", limits)
    assert not refused.allowed and refused.limit == limits[0] and refused.retry_after == 45
    assert counter.hit("b", limits).allowed  # its own count
    clock.now += 46  # next minute: the refused request did not count towards the hour
    assert counter.hit("a", limits).allowed
    refused = counter.hit("a", limits)
    assert not refused.allowed and refused.limit == limits[1] and refused.retry_after == 3600 - 61
    clock.now += 3600
    assert counter.hit("a", limits).allowed


def test_memory_counter_stays_bounded():
    counter = MemoryCounter(longest_period=60, max_callers=100, clock=Clock())
    for caller in range(1000):
        counter.hit(str(caller), parse_limits("1/minute"))
    assert len(counter._windows) == 100


def test_redis_counter_is_atomic_per_window_on_the_servers_clock(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    seconds, micros = client.time()
    # Start just after a second begins on the server, and not in an hour's last seconds: the test's two
    # seconds must fall in the same hour's window.
    to_next_hour = 3600 - seconds % 3600 if seconds % 3600 > 3590 else 0
    time.sleep(to_next_hour + 1 - micros / 1e6 + 0.02)
    counter, limits = RedisCounter(redis_server.url, prefix="unit"), parse_limits("2/second,3/hour")
    assert counter.hit("caller", limits).allowed and counter.hit("caller", limits).allowed
    refused = counter.hit("caller", limits)
    assert not refused.allowed and refused.limit == limits[0] and refused.retry_after == 1
    assert int(client.hget("unit:{caller}:3600", "n")) == 2  # the refused request was not counted
    time.sleep(1.0)
    assert counter.hit("caller", limits).allowed
    refused = counter.hit("caller", limits)
    assert not refused.allowed and refused.limit == limits[1] and 1 <= refused.retry_after <= 3600
    assert 0 < client.ttl("unit:{caller}:1") <= 2


def test_redis_counter_lets_requests_through_when_redis_is_unreachable(caplog):
    counter = RedisCounter("redis://127.0.0.1:9/0")  # the discard port: nothing listens
    assert counter.hit("caller", parse_limits("1/hour")).allowed
    assert counter.hit("caller", parse_limits("1/hour")).allowed
    assert [r.message for r in caplog.records].count(
        "rate limit store (Redis) unreachable, requests are not limited: ConnectionError") == 1


# -- paths -------------------------------------------------------------------------


def test_allowed_paths():
    paths = AllowedPaths.parse("/v1/chat/*, /v1/models")
    assert paths.allows("/v1/chat/completions") and paths.allows("/v1/models") and paths.allows("/healthz")
    assert not paths.allows("/v1/models/x") and not paths.allows("/v1/embeddings")
    assert AllowedPaths.parse("").allows("/anything")
    with pytest.raises(SettingsError, match="ALLOWED_PATHS"):
        AllowedPaths.parse("v1/*")


# -- settings and the public upstream_key() ----------------------------------------


def test_upstream_keys_without_relay_keys_are_refused_unless_allowed():
    with pytest.raises(SettingsError, match="OPENAI_API_KEY, GEMINI_API_KEY set but RELAY_KEYS is not"):
        build(OPENAI_API_KEY=UPSTREAM_A, GEMINI_API_KEY=UPSTREAM_B)
    with pytest.raises(SettingsError, match="GROQ_API_KEY set"):
        build(ROUTES="groq=https://api.groq.com/openai", GROQ_API_KEY=UPSTREAM_A)
    assert build(OPENAI_API_KEY=UPSTREAM_A, ALLOW_OPEN_RELAY="1").rings["openai"].keys == [UPSTREAM_A]
    assert build(GROQ_API_KEY=UPSTREAM_A).rings == {}  # no such route: the variable means nothing here
    with pytest.raises(SettingsError, match="KEY_COOLDOWN"):
        build(KEY_COOLDOWN="-1")


def in_request(control: Access, headers: dict[str, str] | None = None, query: str = ""):
    app = Flask(__name__)
    app.extensions["access"] = control
    return app.test_request_context("/pro/chat/completions", headers=headers or {}, query_string=query)


def test_upstream_key_in_pass_through_mode_returns_what_was_presented():
    control = build()
    with in_request(control):
        assert access.upstream_key(OWN) == OWN
        assert access.upstream_key(None) == ""


def test_upstream_key_with_relay_keys():
    control = build(RELAY_KEYS=RELAY_KEY, OPENAI_API_KEY=f"{UPSTREAM_A},{UPSTREAM_B}", RATE_LIMIT="5/hour")
    with in_request(control):
        assert [access.upstream_key(RELAY_KEY) for _ in range(2)] == [UPSTREAM_A, UPSTREAM_B]  # in rotation
        for wrong, code in [(UPSTREAM_A, "invalid_relay_key"), (None, "missing_relay_key")]:
            with pytest.raises(AccessDenied) as denied:
                access.upstream_key(wrong)
            assert denied.value.status == 401 and denied.value.code == code
    # The relay key may come in a header while the body's key is the client's own (a group without upstream key).
    with in_request(control, {"Authorization": f"Bearer {RELAY_KEY}"}):
        assert access.upstream_key(OWN, group="anthropic") == OWN
        assert access.upstream_key(OWN, group="openai") == UPSTREAM_A
    with in_request(control, query=f"key={RELAY_KEY}"), pytest.raises(AccessDenied) as denied:
        access.upstream_key(None, group="anthropic")
    assert denied.value.status == 401 and denied.value.code == "upstream_key_missing"
    # Every call counted one request: the sixth is over 5/hour.
    with in_request(control), pytest.raises(AccessDenied) as denied:
        access.upstream_key(RELAY_KEY)
    assert denied.value.status == 429 and 1 <= int(denied.value.headers["Retry-After"]) <= 3600
