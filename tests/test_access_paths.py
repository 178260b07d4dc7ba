"""ALLOWED_PATHS through the real relay: listed globs pass, anything else gets 403, the relay's own pages stay open."""

from __future__ import annotations

import http.client
import itertools

import pytest
import requests

_tags = itertools.count()


@pytest.fixture(scope="module")
def chat_only(start_relay):
    return start_relay(ALLOWED_PATHS="/v1/chat/*, /v1/models")


def call(relay, method: str, path: str) -> tuple[requests.Response, str]:
    name = f"access-paths-{next(_tags)}"
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]} if method == "POST" else None
    r = requests.request(method, relay.url + path, json=body, timeout=10,
                         headers={"Authorization": "Bearer sk-own", "x-fake-tag": name})
    return r, name


@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/chat/completions"), ("GET", "/v1/models")])
def test_listed_paths_are_served(chat_only, fake, method, path):
    r, name = call(chat_only, method, path)
    assert r.status_code == 200, r.text
    assert fake.by_tag(name).path == path


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/embeddings"),
        ("GET", "/v1/models/gpt-4o"),  # `/v1/models` is exact: no glob
        ("POST", "/v1/chat"),
        ("POST", "/V1/chat/completions"),  # globs are case-sensitive, like paths
        ("POST", "/openai/v1/chat/completions"),  # another prefix to the same upstream is another path
        ("POST", "/anthropic/v1/messages"),
        ("GET", "/no-such-route"),
    ],
)
def test_other_paths_get_403_and_never_reach_the_upstream(chat_only, fake, method, path):
    r, name = call(chat_only, method, path)
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["type"] == "permission_error" and error["code"] == "path_not_allowed"
    assert not any(rec.header("x-fake-tag") == name for rec in fake.records)


def test_path_tricks_do_not_escape_an_allowed_glob(chat_only, fake):
    for path in ["/v1/chat/%2e%2e/embeddings", "/v1/chat/../embeddings", "/v1/chat/..%2Fembeddings"]:
        name = f"access-paths-{next(_tags)}"
        connection = http.client.HTTPConnection("127.0.0.1", chat_only.port, timeout=10)  # sends the path as is
        connection.request("POST", path, body=b"{}", headers={"Authorization": "Bearer sk-own", "x-fake-tag": name})
        response = connection.getresponse()
        assert response.status == 400, (path, response.read())
        connection.close()
        assert not any(rec.header("x-fake-tag") == name for rec in fake.records)


def test_the_relays_own_pages_stay_open(chat_only):
    health = requests.get(chat_only.url + "/healthz", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_a_pro_path_refused_by_allowed_paths_answers_in_the_pro_shape(start_relay):
    relay = start_relay(ALLOWED_PATHS="/v1/chat/*")
    response = requests.post(relay.url + "/pro/chat/completions", json={}, timeout=10)
    assert response.status_code == 403
    assert list(response.json()) == ["code", "message", "data"]
