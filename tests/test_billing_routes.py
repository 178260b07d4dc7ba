"""Billing takes exactly one path under `/openai/`; every other path, and the dashboard routes, stay pass-through."""

from __future__ import annotations

import uuid

import pytest
import requests
from openai import OpenAI

from tests.fake_billing import FakeBilling


@pytest.fixture
def billing(fake) -> FakeBilling:
    return FakeBilling.attach(fake)


def only_record(fake, tag: str):
    return fake.by_tag(tag)


def test_openai_billing_credit_grants_is_served_by_billing(relay, billing, fake):
    key = billing.new_key(usage_cents={"2023-01-01": 100})
    r = requests.get(relay.url + "/openai/billing/credit_grants?start_date=2023-01-01&end_date=2023-01-01",
                     headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200 and r.json()["total_used"] == 1.0
    paths = sorted(rec.path for rec in fake.records if rec.header("authorization") == f"Bearer {key}")
    assert paths == ["/v1/dashboard/billing/subscription", "/v1/dashboard/billing/usage"]


@pytest.mark.parametrize("method, path", [
    ("GET", "/openai/billing/usage?start_date=2023-01-01"),
    ("GET", "/openai/billing/credit_grants/more"),
    ("GET", "/openai/billing/credit_grants_v2"),
    ("POST", "/openai/billing/credit_grants?x=1"),
    ("OPTIONS", "/openai/billing/credit_grants"),
])
def test_every_other_openai_path_and_method_goes_upstream_untouched(relay, fake, method, path):
    tag = uuid.uuid4().hex
    r = requests.request(method, relay.url + path, headers={"x-fake-tag": tag, "Authorization": "Bearer sk-x"},
                         timeout=30)
    assert r.status_code == 200, r.text
    echoed = r.json()  # the fake's echo of what it received
    assert (echoed["method"], echoed["target"]) == (method, path.removeprefix("/openai"))
    assert only_record(fake, tag).target == path.removeprefix("/openai")


def test_the_openai_sdk_still_works_under_openai(relay):
    client = OpenAI(base_url=relay.url + "/openai/v1", api_key="sk-sdk", max_retries=0)
    assert [m.id for m in client.models.list()] == ["gpt-4o-mini", "gpt-4o"]
    reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "echo: hi"


@pytest.mark.parametrize("path", [
    "/dashboard/billing/subscription",
    "/v1/dashboard/billing/subscription",
    "/dashboard/billing/usage?end_date=2023-05-01&start_date=2023-04-01",
    "/v1/dashboard/billing/usage?start_date=2023-04-01&end_date=2023-05-01",
    "/v1/dashboard/billing/usage?start_date=2022-01-01&end_date=2023-05-01",  # the fake's 400: not split by the relay
    "/openai/dashboard/billing/credit_grants",
    "/dashboard/billing/credit_grants",
])
@pytest.mark.parametrize("prefix", ["sk-", "sess-"])
def test_dashboard_billing_paths_are_plain_pass_through(relay, billing, fake, path, prefix):
    grants = {"object": "credit_summary", "total_granted": 1.0, "total_used": 0.5, "total_available": 0.5}
    key = billing.new_key(prefix, usage_cents={"2023-04-15": 12.5}, credit_grants=grants, official=prefix == "sk-")
    upstream_target = path.removeprefix("/openai")
    direct = requests.get(fake.url + upstream_target, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    tag = uuid.uuid4().hex
    r = requests.get(relay.url + path, headers={"Authorization": f"Bearer {key}", "x-fake-tag": tag}, timeout=30)
    assert (r.status_code, r.content) == (direct.status_code, direct.content)  # so no hint was added either
    assert r.headers["Content-Type"] == direct.headers["Content-Type"]
    assert only_record(fake, tag).target == upstream_target
    # One query each, the client's and the direct one: the relay made none of its own.
    assert len(billing.queries_of(key)) == 2
