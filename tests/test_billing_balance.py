"""`GET /pro/balance` through the real gunicorn-served relay, against the fake upstream's billing endpoints."""

from __future__ import annotations

import socket
import time
from datetime import UTC, date, datetime, timedelta

import pytest
import requests

from tests.fake_billing import FakeBilling

SESSION_REFUSAL = "must be made with a session key"


@pytest.fixture
def billing(fake) -> FakeBilling:
    return FakeBilling.attach(fake)


def balance(relay, **params) -> requests.Response:
    headers = params.pop("headers", {})
    return requests.get(relay.url + "/pro/balance", params=params, headers=headers, timeout=30)


def usage_windows(billing: FakeBilling, key: str) -> list[tuple[str, str]]:
    return sorted((q.params["start_date"], q.params["end_date"]) for q in billing.queries_of(key, "usage"))


def midnight(day: str) -> str:
    return str(int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp()))


def test_secret_key_gets_total_used_and_balance_exactly(relay, billing):
    key = billing.new_key(hard_limit_usd=18.0, usage_cents={"2024-03-01": 3, "2024-03-10": 5, "2024-03-11": 700})
    r = balance(relay, apiKey=key, start_date="2024-03-01", end_date="2024-03-10")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "code": 200,
        "message": "success",
        "data": {"total": 18.0, "balance": 17.92, "used": 0.08, "start_date": "2024-03-01", "end_date": "2024-03-10"},
    }
    assert r.headers["Cache-Control"] == "no-store"
    # end_date is included: the upstream, whose end is exclusive, is asked up to the day after.
    assert usage_windows(billing, key) == [("2024-03-01", "2024-03-11")]
    subscription = billing.queries_of(key, "subscription")
    assert [q.path for q in subscription] == ["/v1/dashboard/billing/subscription"]
    assert [q.path for q in billing.queries_of(key, "usage")] == ["/v1/dashboard/billing/usage"]


def test_the_key_may_come_in_the_authorization_header(relay, billing, fake):
    key = billing.new_key(hard_limit_usd=5.0, usage_cents={"2024-01-02": 150})
    r = balance(relay, start_date="2024-01-01", end_date="2024-01-31", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"total": 5.0, "balance": 3.5, "used": 1.5,
                                "start_date": "2024-01-01", "end_date": "2024-01-31"}
    sent = [rec for rec in fake.find("/dashboard/billing/") if rec.header("authorization") == f"Bearer {key}"]
    assert len(sent) == 2


def test_250_days_are_three_usage_queries_tiling_the_period(relay, billing):
    # A cost on the first day, on both sides of each window boundary, and on the last day.
    cents = {"2023-01-01": 1, "2023-04-10": 2, "2023-04-11": 4, "2023-07-19": 8, "2023-07-20": 16,
             "2023-09-07": 32, "2023-09-08": 6400, "2022-12-31": 12800}
    key = billing.new_key(hard_limit_usd=100.0, usage_cents=cents)
    r = balance(relay, apiKey=key, start_date="2023-01-01", end_date="2023-09-07")
    assert r.status_code == 200, r.text
    assert usage_windows(billing, key) == [
        ("2023-01-01", "2023-04-11"),
        ("2023-04-11", "2023-07-20"),
        ("2023-07-20", "2023-09-08"),
    ]
    assert r.json()["data"] == {"total": 100.0, "balance": 99.37, "used": 0.63,
                                "start_date": "2023-01-01", "end_date": "2023-09-07"}


def test_window_queries_run_in_parallel(relay, billing):
    key = billing.new_key(usage_cents={"2023-02-01": 100}, delay=1.0)
    started = time.monotonic()
    r = balance(relay, apiKey=key, start_date="2023-01-01", end_date="2023-09-07")
    elapsed = time.monotonic() - started
    assert r.status_code == 200, r.text
    assert r.json()["data"]["used"] == 1.0
    # The subscription and the three windows were all in flight at once; one after the other takes >= 4 s.
    assert billing.max_in_flight[key] == 4
    assert elapsed < 3.0


def test_default_period_is_the_last_90_days_and_days_changes_it(relay, billing):
    key = billing.new_key()
    before = datetime.now(UTC).date()
    r = balance(relay, apiKey=key)
    after = datetime.now(UTC).date()
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    today = date.fromisoformat(data["end_date"])
    assert today in (before, after)
    assert data["start_date"] == (today - timedelta(days=89)).isoformat()
    assert usage_windows(billing, key) == [(data["start_date"], (today + timedelta(days=1)).isoformat())]

    other = billing.new_key()
    r = balance(relay, apiKey=other, days="250")
    data = r.json()["data"]
    assert date.fromisoformat(data["end_date"]) - date.fromisoformat(data["start_date"]) == timedelta(days=249)
    assert len(usage_windows(billing, other)) == 3


def test_total_falls_back_to_system_hard_limit(relay, billing):
    key = billing.new_key(hard_limit_usd=None, system_hard_limit_usd=120.0, usage_cents={"2024-02-29": 1234.5})
    r = balance(relay, apiKey=key, start_date="2024-02-01", end_date="2024-02-29")
    assert r.json()["data"] == {"total": 120.0, "balance": 107.65, "used": 12.35,
                                "start_date": "2024-02-01", "end_date": "2024-02-29"}


def test_money_is_summed_exactly_and_rounded_half_up(relay, billing):
    # 28.5 cents is 0.285 dollars: half up gives 0.29 (float rounding would say 0.28).
    key = billing.new_key(hard_limit_usd=1.0, usage_cents={"2024-01-05": 10.1, "2024-04-20": 18.4})
    r = balance(relay, apiKey=key, start_date="2024-01-01", end_date="2024-04-30")
    assert len(usage_windows(billing, key)) == 2
    assert r.json()["data"] == {"total": 1.0, "balance": 0.71, "used": 0.29,
                                "start_date": "2024-01-01", "end_date": "2024-04-30"}


def test_an_upstream_that_only_knows_all_time_usage_is_counted_once(relay, billing):
    # one-api and new-api ignore the dates: three windows get the same all-time figure three times.
    key = billing.new_key(hard_limit_usd=25.0, usage_cents={"2019-06-01": 500, "2023-02-01": 250}, by_day=False)
    r = balance(relay, apiKey=key, start_date="2023-01-01", end_date="2023-09-07")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["data"] == {"total": 25.0, "balance": 17.5, "used": 7.5, "start_date": None, "end_date": None}
    assert "since the start" in body["message"]
    assert len(usage_windows(billing, key)) == 3


def test_an_error_sent_with_status_200_is_a_502_with_its_words(relay, billing):
    key = billing.new_key(raw={"subscription": b'{"error": {"message": "database is down", "type": "one_api_error"}}'})
    r = balance(relay, apiKey=key)
    assert r.status_code == 502
    assert r.json() == {"code": 502, "message": "database is down", "data": None}


def test_session_key_reads_credit_grants(relay, billing):
    grants = {"object": "credit_summary", "total_granted": 18.0, "total_used": 0.08, "total_available": 17.92,
              "grants": {"object": "list", "data": [{"object": "credit_grant", "id": "g1", "grant_amount": 18.0,
                                                     "used_amount": 0.08, "effective_at": 1680000000.0,
                                                     "expires_at": 1690000000.0}]}}
    key = billing.new_key("sess-", credit_grants=grants, usage_cents={"2024-01-01": 999})
    r = balance(relay, apiKey=key)
    assert r.status_code == 200, r.text
    assert r.json() == {"code": 200, "message": "success",
                        "data": {"total": 18.0, "balance": 17.92, "used": 0.08, "start_date": None, "end_date": None}}
    assert [q.path for q in billing.queries_of(key)] == ["/dashboard/billing/credit_grants"]


def test_session_key_falls_back_to_subscription_and_usage(relay, billing):
    key = billing.new_key("sess-", hard_limit_usd=10.0, usage_cents={"2024-01-01": 250}, fail={"credit_grants": 401})
    r = balance(relay, apiKey=key, start_date="2024-01-01", end_date="2024-01-01")
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {"total": 10.0, "balance": 7.5, "used": 2.5,
                                "start_date": "2024-01-01", "end_date": "2024-01-01"}
    assert [q.endpoint for q in billing.queries_of(key)][0] == "credit_grants"


def test_admin_key_reads_every_page_of_the_costs_api(relay, billing):
    costs = {"2024-01-01": [0.5, 0.25], "2024-01-08": [0.125], "2024-01-30": [1.0], "2024-01-31": [100.0]}
    key = billing.new_key("sk-admin-", costs_usd=costs, page_size=7)
    r = balance(relay, apiKey=key, start_date="2024-01-01", end_date="2024-01-30")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["code"] == 200 and "/v1/organization/costs" in body["message"]
    assert body["data"] == {"total": None, "balance": None, "used": 1.88,
                            "start_date": "2024-01-01", "end_date": "2024-01-30"}
    pages = billing.queries_of(key, "costs")
    assert len(pages) == 5  # 30 daily buckets, 7 a page
    assert all(q.path == "/v1/organization/costs" for q in pages)
    first = pages[0].params
    assert first == {"start_time": midnight("2024-01-01"), "end_time": midnight("2024-01-31"),
                     "bucket_width": "1d", "limit": "180"}
    assert "page" not in first and all("page" in q.params for q in pages[1:])
    assert len({q.params["page"] for q in pages[1:]}) == 4
    assert not billing.queries_of(key, "usage") and not billing.queries_of(key, "subscription")


def test_admin_key_over_250_days_queries_each_window(relay, billing):
    costs = {"2023-01-01": [1.0], "2023-04-10": [2.0], "2023-04-11": [4.0], "2023-09-07": [8.0], "2023-09-08": [64.0]}
    key = billing.new_key("sk-admin-", costs_usd=costs)
    r = balance(relay, apiKey=key, start_date="2023-01-01", end_date="2023-09-07")
    assert r.json()["data"]["used"] == 15.0
    spans = sorted((q.params["start_time"], q.params["end_time"]) for q in billing.queries_of(key, "costs"))
    assert spans == [(midnight("2023-01-01"), midnight("2023-04-11")), (midnight("2023-04-11"), midnight("2023-07-20")),
                     (midnight("2023-07-20"), midnight("2023-09-08"))]


def test_official_refusal_passes_the_upstream_words_and_a_hint(relay, billing):
    key = billing.new_key(official=True)
    r = balance(relay, apiKey=key)
    assert r.status_code == 403
    body = r.json()
    assert body["code"] == 403 and body["data"] is None
    assert "Your request to GET /v1/dashboard/billing/subscription " + SESSION_REFUSAL in body["message"]
    assert "sk-admin-" in body["message"] and "one-api" in body["message"]


def test_upstream_refusing_the_key_gives_its_status_and_words(relay, billing):
    unknown = "sk-test-nobody-knows-this-key"
    r = balance(relay, apiKey=unknown)
    assert r.status_code == 401
    assert r.json() == {"code": 401, "message": "Incorrect API key provided.", "data": None}
    key = billing.new_key(fail={"usage": 429})
    r = balance(relay, apiKey=key, days="150")
    assert r.status_code == 429 and r.json()["message"] == "fake usage failure"


@pytest.mark.parametrize("params, headers", [({}, {}), ({"apiKey": ""}, {"Authorization": "Basic abc"}),
                                             ({"apiKey": "sk-has space"}, {}), ({"apiKey": "sk-\u00e9t\u00e9"}, {}),
                                             ({"apiKey": "sk-a\r\nX-Injected: 1"}, {})])
def test_a_missing_or_malformed_key_is_a_401_without_upstream_query(relay, fake, params, headers):
    count = len(fake.records)
    r = balance(relay, headers=headers, **params)
    assert r.status_code == 401
    body = r.json()
    assert body["code"] == 401 and body["data"] is None and "key" in body["message"]
    assert len(fake.records) == count


@pytest.mark.parametrize(
    "params, words",
    [
        ({"start_date": "2023-02-30"}, "not a date of the calendar"),
        ({"start_date": "2023/02/01"}, "YYYY-MM-DD"),
        ({"end_date": "yesterday"}, "YYYY-MM-DD"),
        ({"start_date": "2024-05-02", "end_date": "2024-05-01"}, "before start_date"),
        ({"start_date": "2021-01-01", "end_date": "2023-12-31"}, "at most 1000"),
        ({"days": "0"}, "days must be"),
        ({"days": "9999"}, "days must be"),
    ],
)
def test_bad_dates_are_a_400_in_the_balance_shape(relay, billing, params, words):
    key = billing.new_key()
    r = balance(relay, apiKey=key, **params)
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == 400 and body["data"] is None and words in body["message"]
    assert not billing.queries_of(key)


def test_exactly_1000_days_is_ten_windows(relay, billing):
    key = billing.new_key(usage_cents={"2021-01-01": 1, "2023-09-27": 2})
    r = balance(relay, apiKey=key, start_date="2021-01-01", end_date="2023-09-27")
    assert r.status_code == 200, r.text
    assert r.json()["data"]["used"] == 0.03
    windows = usage_windows(billing, key)
    assert len(windows) == 10 and windows[0][0] == "2021-01-01" and windows[-1][1] == "2023-09-28"
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:], strict=False))


def test_an_answer_that_is_not_json_is_a_502(relay, billing):
    key = billing.new_key(raw={"subscription": b"<html>Bad gateway</html>"})
    r = balance(relay, apiKey=key)
    assert r.status_code == 502
    message = "The upstream's subscription answer is not a JSON object."
    assert r.json() == {"code": 502, "message": message, "data": None}
    key = billing.new_key(raw={"usage": b'{"object": "list"}'})
    assert balance(relay, apiKey=key).json()["message"] == "The upstream's usage answer has no total_usage."


def test_costs_that_page_without_a_cursor_are_a_502(relay, billing):
    key = billing.new_key("sk-admin-", raw={"costs": b'{"object": "page", "data": [], "has_more": true}'})
    r = balance(relay, apiKey=key)
    assert r.status_code == 502 and "next_page" in r.json()["message"]


def test_a_silent_upstream_is_a_504(start_relay, billing):
    relay = start_relay(UPSTREAM_READ_TIMEOUT="1")
    key = billing.new_key(delay=3.0)
    started = time.monotonic()
    r = balance(relay, apiKey=key)
    assert r.status_code == 504
    assert r.json()["code"] == 504 and "did not answer in time" in r.json()["message"]
    assert time.monotonic() - started < 2.9


def test_an_unreachable_upstream_is_a_502(start_relay):
    with socket.socket() as taken:  # bound, never listening: connections are refused, no one else gets the port
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        relay = start_relay(UPSTREAM_URL=f"http://127.0.0.1:{port}")
        r = balance(relay, apiKey="sk-anything")
    assert r.status_code == 502
    assert r.json() == {"code": 502, "message": f"The upstream 127.0.0.1:{port} could not be reached.", "data": None}


def test_organization_header_is_passed_and_keys_never_reach_the_log(relay, billing, fake):
    key = billing.new_key(official=True)
    r = balance(relay, apiKey=key, headers={"OpenAI-Organization": "org-test123", "X-Forwarded-For": "10.1.2.3"})
    assert r.status_code == 403
    sent = [rec for rec in fake.find("/dashboard/billing/") if rec.header("authorization") == f"Bearer {key}"]
    assert sent and all(rec.header("openai-organization") == "org-test123" for rec in sent)
    assert all(rec.header("x-forwarded-for") is None for rec in sent)
    assert "/pro/balance 403" in relay.log()
    secret = billing.new_key()
    balance(relay, headers={"Authorization": f"Bearer {secret}"})
    balance(relay, apiKey=secret, start_date="nope")
    time.sleep(0.3)  # the access line is written as the response closes
    log = relay.log()
    assert key not in log and secret not in log
