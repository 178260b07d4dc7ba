"""A Redis that accepts connections and never answers costs each request at most one short timeout, and then
nothing while it is skipped: rate limits let requests through, sessions answer 503 at once (issue 9 item 8)."""

from __future__ import annotations

import logging
import socket
import statistics
import threading
import time

import pytest
import redis
import requests

from proxy.redis_client import SKIP_FOR, WARN_EVERY, OccasionalWarning, RedisLink, RedisSkipped
from tests.session_client import SessionClient, new_session_id


@pytest.fixture(scope="module")
def silent_redis():
    """A TCP server that accepts every connection and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    stop.set()
    thread.join(5)
    for sock in held:
        sock.close()
    server.close()


def timed(call) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def test_sessions_answer_503_within_a_second_and_requests_pay_almost_nothing(start_relay, silent_redis):
    relay = start_relay(REDIS_URL=silent_redis, RATE_LIMIT="1000/minute")
    client = SessionClient(relay.url)
    first, first_took = timed(lambda: client.chat(new_session_id(), "hello"))  # the one that meets the timeout
    assert first.status_code == 503 and "session store is unavailable" in first.json()["message"]
    then, then_took = timed(lambda: client.chat(new_session_id(), "again"))  # Redis is skipped now
    assert then.status_code == 503

    costs = []
    for _ in range(30):
        response, took = timed(lambda: requests.get(relay.url + "/v1/models", timeout=30,
                                                    headers={"Authorization": "Bearer sk-own-redis-down"}))
        assert response.status_code == 200  # the rate limit lets it through, as documented
        costs.append(took)
    print(f"\nsilent Redis: first 503 in {first_took * 1000:.0f} ms, next 503 in {then_took * 1000:.0f} ms; "
          f"/v1/models median {statistics.median(costs) * 1000:.1f} ms, max {max(costs) * 1000:.0f} ms")
    assert first_took < 2.0 and then_took < 1.0  # generous: 0.5 s timeout, then skipped (was 22 s)
    assert statistics.median(costs) < 0.2  # was 2 s each
    assert "Redis at 127.0.0.1" in relay.log() and "skipped for" in relay.log()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_breaker_skips_after_a_failure_then_one_ping_lets_redis_back(monkeypatch):
    clock = Clock()
    link = RedisLink("redis://127.0.0.1:9/0", clock=clock)
    pings: list[float] = []
    answering = {"now": False}

    def ping() -> bool:
        pings.append(clock.now)
        if not answering["now"]:
            raise redis.TimeoutError("silent")
        return True

    monkeypatch.setattr(link.client, "ping", ping)

    def failing() -> None:
        raise redis.TimeoutError("silent")

    with pytest.raises(redis.TimeoutError):
        link.run(failing)
    calls = []
    with pytest.raises(RedisSkipped):
        link.run(calls.append, "skipped")  # not even tried
    clock.now += SKIP_FOR
    with pytest.raises(RedisSkipped):
        link.run(calls.append, "probe fails")  # the skip is over: one PING, still silent, so skipped again
    assert pings == [clock.now] and calls == []
    with pytest.raises(RedisSkipped):
        link.run(calls.append, "skipped again")  # no second PING within the new skip
    clock.now += SKIP_FOR
    answering["now"] = True
    assert link.run(calls.append, "back") is None and calls == ["back"] and not link.skipped
    assert len(pings) == 2


def test_an_unreachable_redis_is_warned_of_once_a_minute(caplog):
    """The breaker's warning (and the counters' and the usage store's, the same helper): a Redis that is down
    fails every request, and one line per WARN_EVERY says so."""
    clock = Clock()
    warn = OccasionalWarning(logging.getLogger("relay.test"), "Redis down: %s", clock)
    for step in (0, 1, 30, WARN_EVERY - 1, WARN_EVERY, WARN_EVERY + 1, 2 * WARN_EVERY):
        clock.now = 100.0 + step
        warn(f"at {step:g}")
    assert [r.getMessage() for r in caplog.records] == [
        "Redis down: at 0", f"Redis down: at {WARN_EVERY:g}", f"Redis down: at {2 * WARN_EVERY:g}"]
