"""`GET /openai/billing/credit_grants` (seed 002's shape) through the real relay, against the fake upstream."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import pytest
import requests

from tests.fake_billing import FakeBilling

SEED_KEYS = {"list_used", "total_used", "total_granted", "start_date", "end_date"}


@pytest.fixture
def billing(fake) -> FakeBilling:
    return FakeBilling.attach(fake)


def credit_grants(relay, key: str | None, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.get(relay.url + "/openai/billing/credit_grants", params=params, headers=headers, timeout=30)


def test_secret_key_gets_seed_002_shape_with_exact_figures(relay, billing):
    key = billing.new_key(hard_limit_usd=18.0, usage_cents={"2023-05-01": 3, "2023-05-10": 5})
    r = credit_grants(relay, key, start_date="2023-05-01", end_date="2023-05-10")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == {
        "list_used": [{"start_date": "2023-05-01", "end_date": "2023-05-10", "used": 0.08}],
        "total_used": 0.08,
        "total_granted": 18.0,
        "start_date": "2023-05-01",
        "end_date": "2023-05-10",
    }


def test_list_used_has_one_entry_per_window_with_included_dates(relay, billing):
    cents = {"2022-05-10": 100, "2022-08-17": 200, "2022-08-18": 400, "2023-05-10": 800, "2023-05-11": 99999}
    key = billing.new_key(hard_limit_usd=120.0, system_hard_limit_usd=200.0, usage_cents=cents)
    r = credit_grants(relay, key, start_date="2022-05-10", end_date="2023-05-10")  # seed 002's example
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == SEED_KEYS
    assert body["list_used"] == [
        {"start_date": "2022-05-10", "end_date": "2022-08-17", "used": 3.0},
        {"start_date": "2022-08-18", "end_date": "2022-11-25", "used": 4.0},
        {"start_date": "2022-11-26", "end_date": "2023-03-05", "used": 0.0},
        {"start_date": "2023-03-06", "end_date": "2023-05-10", "used": 8.0},
    ]
    assert (body["total_used"], body["total_granted"]) == (15.0, 120.0)
    windows = sorted((q.params["start_date"], q.params["end_date"]) for q in billing.queries_of(key, "usage"))
    assert windows == [("2022-05-10", "2022-08-18"), ("2022-08-18", "2022-11-26"),
                       ("2022-11-26", "2023-03-06"), ("2023-03-06", "2023-05-11")]


def test_all_time_usage_is_one_entry_with_a_message(relay, billing):
    key = billing.new_key(hard_limit_usd=30.0, usage_cents={"2020-01-01": 1000, "2023-02-01": 2}, by_day=False)
    r = credit_grants(relay, key, start_date="2022-05-10", end_date="2023-05-10")
    body = r.json()
    assert body["list_used"] == [{"start_date": "2022-05-10", "end_date": "2023-05-10", "used": 10.02}]
    assert (body["total_used"], body["total_granted"]) == (10.02, 30.0)
    assert "since the start" in body["message"]


def test_default_is_the_last_90_days(relay, billing):
    key = billing.new_key()
    before = datetime.now(UTC).date()
    body = credit_grants(relay, key).json()
    today = date.fromisoformat(body["end_date"])
    assert today in (before, datetime.now(UTC).date())
    assert body["start_date"] == (today - timedelta(days=89)).isoformat()
    assert body["list_used"] == [{"start_date": body["start_date"], "end_date": body["end_date"], "used": 0.0}]


def test_session_key_gets_the_upstream_credit_grants_as_they_came(relay, billing):
    grants = {"object": "credit_summary", "total_granted": 5.0, "total_used": 1.234567, "total_available": 3.765433,
              "grants": {"object": "list", "data": []}}
    key = billing.new_key("sess-", credit_grants=grants)
    r = credit_grants(relay, key, days="30")
    assert r.status_code == 200
    assert r.content == json.dumps(grants).encode()  # the fake's bytes, unrounded, untouched
    assert [q.path for q in billing.queries_of(key)] == ["/dashboard/billing/credit_grants"]


def test_session_key_refused_by_upstream_keeps_its_status(relay, billing):
    key = billing.new_key("sess-", fail={"credit_grants": 401})
    r = credit_grants(relay, key, start_date="2023-01-01", end_date="2023-01-31")
    assert r.status_code == 401
    assert r.json() == {"error": "fake credit_grants failure", "start_date": "2023-01-01", "end_date": "2023-01-31"}


def test_official_refusal_of_a_secret_key_adds_the_hint(relay, billing):
    key = billing.new_key(official=True)
    r = credit_grants(relay, key, start_date="2023-01-01", end_date="2023-01-31")
    assert r.status_code == 403
    body = r.json()
    assert set(body) == {"error", "start_date", "end_date"}
    assert "must be made with a session key" in body["error"] and "sk-admin-" in body["error"]
    assert (body["start_date"], body["end_date"]) == ("2023-01-01", "2023-01-31")


def test_admin_key_uses_costs_and_has_no_granted_total(relay, billing):
    key = billing.new_key("sk-admin-", costs_usd={"2023-01-01": [0.004, 0.004], "2023-06-30": [2.5]}, page_size=30)
    r = credit_grants(relay, key, start_date="2023-01-01", end_date="2023-06-30")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total_granted"] is None and "organization/costs" in body["message"]
    assert body["list_used"] == [{"start_date": "2023-01-01", "end_date": "2023-04-10", "used": 0.01},
                                 {"start_date": "2023-04-11", "end_date": "2023-06-30", "used": 2.5}]
    assert body["total_used"] == 2.51
    assert len(billing.queries_of(key, "costs")) == 4 + 3  # 100 and 81 daily buckets, 30 a page


@pytest.mark.parametrize(
    "params, words, echoed",
    [
        ({"start_date": "2023-02-30", "end_date": "2023-03-01"}, "not a date", ("2023-02-30", "2023-03-01")),
        ({"start_date": "May 1", "end_date": "2023-03-01"}, "YYYY-MM-DD", ("May 1", "2023-03-01")),
        ({"start_date": "2023-03-02", "end_date": "2023-03-01"}, "before start_date", ("2023-03-02", "2023-03-01")),
        ({"start_date": "2020-01-01", "end_date": "2023-05-10"}, "at most 1000", ("2020-01-01", "2023-05-10")),
    ],
)
def test_bad_dates_are_a_400_in_seed_002_error_shape(relay, billing, params, words, echoed):
    key = billing.new_key()
    r = credit_grants(relay, key, **params)
    assert r.status_code == 400
    body = r.json()
    assert set(body) == {"error", "start_date", "end_date"} and words in body["error"]
    assert (body["start_date"], body["end_date"]) == echoed
    assert not billing.queries_of(key)


def test_missing_key_is_a_401_in_seed_002_error_shape(relay, fake):
    count = len(fake.records)
    r = credit_grants(relay, None, start_date="2023-01-01", end_date="2023-01-02")
    assert r.status_code == 401
    assert r.json()["start_date"] == "2023-01-01" and "Bearer" in r.json()["error"]
    assert len(fake.records) == count
