"""Token budgets through the real relay, and usage shared in Redis by two relay processes."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta

import openai
import pytest
import requests

from tests.access_secrets import make_key
from tests.test_usage import CHAT, wait_for

UPSTREAM = make_key("up-budget")
ALICE = make_key("budget-alice", "rk")
BOB = make_key("budget-bob", "rk")
CAROL = make_key("budget-carol", "rk")
_tags = itertools.count()


def chat(relay, key: str) -> tuple[requests.Response, str]:
    name = f"usage-budget-{next(_tags)}"
    r = requests.post(relay.url + "/v1/chat/completions", json=CHAT, timeout=10,
                      headers={"Authorization": f"Bearer {key}", "x-fake-tag": name})
    return r, name


def used(relay, key: str) -> int:
    r = requests.get(relay.url + "/pro/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]["total_tokens"]


def seconds_to_midnight() -> float:
    now = datetime.now(UTC)
    return (datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1) - now).total_seconds()


def test_budget_reached_mid_day_refuses_with_retry_after_the_next_day(start_relay, fake):
    relay = start_relay(RELAY_KEYS=f"alice:{ALICE},bob:{BOB}", OPENAI_API_KEY=UPSTREAM,
                        KEY_BUDGETS="alice=30/day,bob=1000000/month")
    for _ in range(2):  # 15 tokens each (the fake's usage): the second reaches the budget, and is served whole
        r, _ = chat(relay, ALICE)
        assert r.status_code == 200
    assert wait_for(lambda: used(relay, ALICE) == 30)
    r, name = chat(relay, ALICE)
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "token_budget_exceeded"
    assert "30/day" in error["message"]
    assert abs(int(r.headers["Retry-After"]) - seconds_to_midnight()) <= 5
    assert not fake.tagged(name)  # nothing went upstream
    with (openai.OpenAI(base_url=relay.url + "/v1", api_key=ALICE, max_retries=0) as client,
          pytest.raises(openai.RateLimitError, match="budget")):
        client.chat.completions.create(model="gpt-4o-mini", messages=CHAT["messages"])
    # Another key has its own budget; the spent key may still read its usage.
    assert chat(relay, BOB)[0].status_code == 200
    assert used(relay, ALICE) == 30


def test_redis_shares_usage_and_budgets_between_two_relays(start_relay, redis_server, fake):
    env = {"RELAY_KEYS": f"carol:{CAROL}", "OPENAI_API_KEY": UPSTREAM, "KEY_BUDGETS": "carol=45/month",
           "REDIS_URL": redis_server.url}
    one, two = start_relay(**env), start_relay(**env)
    for relay in (one, two, one):
        assert chat(relay, CAROL)[0].status_code == 200
    assert wait_for(lambda: used(two, CAROL) == 45) and used(one, CAROL) == 45
    for relay in (one, two):
        r, name = chat(relay, CAROL)
        assert r.status_code == 429 and not fake.tagged(name)
        first_of_next_month = (datetime.now(UTC).date().replace(day=28) + timedelta(days=4)).replace(day=1)
        wait = datetime(first_of_next_month.year, first_of_next_month.month, 1, tzinfo=UTC) - datetime.now(UTC)
        assert abs(int(r.headers["Retry-After"]) - wait.total_seconds()) <= 5


def test_redis_down_requests_still_flow_and_the_miss_is_logged_once(start_relay, start_redis):
    server = start_redis()
    key = make_key("budget-down", "rk")
    relay = start_relay(RELAY_KEYS=f"dave:{key}", OPENAI_API_KEY=UPSTREAM, KEY_BUDGETS="dave=1/day",
                        REDIS_URL=server.url, WEB_CONCURRENCY="1")  # the warning is once a minute per worker
    server.stop()
    for _ in range(3):
        assert chat(relay, key)[0].status_code == 200  # budget not checkable, usage not countable: still served
    r = requests.get(relay.url + "/pro/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 503 and r.json()["code"] == 503
    time.sleep(0.5)
    assert relay.log().count("usage store (Redis) unreachable") == 1
