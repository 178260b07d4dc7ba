"""Relay keys on the relay's own endpoints: session chat and balance use the server's key behind a relay key."""

from __future__ import annotations

import pytest
import requests

from tests.access_secrets import USED, make_key
from tests.fake_billing import FakeBilling
from tests.session_client import SessionClient, new_session_id

RELAY_KEY = make_key("endpoints-relay", prefix="rk")
WRONG_KEY = make_key("endpoints-wrong", prefix="rk")


@pytest.fixture(scope="module")
def billing(fake) -> FakeBilling:
    return FakeBilling.attach(fake)


@pytest.fixture(scope="module")
def server_key(billing) -> str:
    key = billing.new_key(hard_limit_usd=10.0, usage_cents={"2024-05-02": 250})
    USED.append(key)  # the log scan looks for it too
    return key


@pytest.fixture(scope="module")
def keyed_relay(start_relay, server_key):
    return start_relay(RELAY_KEYS=RELAY_KEY, OPENAI_API_KEY=server_key)


def test_session_chat_behind_a_relay_key_uses_the_servers_key(keyed_relay, fake, server_key):
    client = SessionClient(keyed_relay.url, key=RELAY_KEY)
    sid = new_session_id()
    first = client.chat(sid, "one", tag="endpoints-chat-1", headers=client.auth())
    second = client.chat(sid, "two", tag="endpoints-chat-2", headers=client.auth())
    assert first.json()["data"] == "echo: one" and second.json()["data"] == "echo: two"
    for tag in ("endpoints-chat-1", "endpoints-chat-2"):
        sent = fake.by_tag(tag)
        assert sent.header("authorization") == f"Bearer {server_key}"
        assert RELAY_KEY not in repr(sent.headers) and RELAY_KEY.encode() not in sent.body
    assert [m["content"] for m in client.messages(sid)] == ["one", "echo: one", "two", "echo: two"]


def test_session_chat_with_a_wrong_relay_key_is_refused_in_its_own_shape(keyed_relay, fake):
    client = SessionClient(keyed_relay.url, key=WRONG_KEY)
    response = client.chat(new_session_id(), "hi", tag="wrong-relay-key", headers=client.auth())
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == 401 and body["data"] is None and "relay key" in body["message"]
    assert WRONG_KEY not in body["message"]
    assert fake.tagged("wrong-relay-key") == []


def test_balance_behind_a_relay_key_is_the_servers_account(keyed_relay, billing, server_key):
    response = requests.get(
        keyed_relay.url + "/pro/balance",
        params={"apiKey": RELAY_KEY, "start_date": "2024-05-01", "end_date": "2024-05-31"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {
        "total": 10.0, "balance": 7.5, "used": 2.5, "start_date": "2024-05-01", "end_date": "2024-05-31"
    }
    assert billing.queries_of(server_key, "usage")


def test_balance_and_credit_grants_refuse_a_wrong_relay_key(keyed_relay):
    balance = requests.get(keyed_relay.url + "/pro/balance", params={"apiKey": WRONG_KEY}, timeout=10)
    assert balance.status_code == 401
    assert balance.json()["code"] == 401 and balance.json()["data"] is None
    grants = requests.get(
        keyed_relay.url + "/openai/billing/credit_grants", headers={"Authorization": f"Bearer {WRONG_KEY}"}, timeout=10
    )
    assert grants.status_code == 401
    assert "relay key" in grants.json()["error"]
