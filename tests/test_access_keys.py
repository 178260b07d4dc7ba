"""Relay keys and server-side upstream keys, through the real relay and the fake upstream.

For each upstream type and each place a client may put its key, the upstream
must see only its own key, in its own place, and never a relay key.
"""

from __future__ import annotations

import itertools

import openai
import pytest
import requests

from tests.access_secrets import make_key

RELAY_KEY = make_key("relay-one", "rk")
OTHER_RELAY_KEY = make_key("relay-two", "rk")
UPSTREAM = {
    "openai": make_key("up-openai"),
    "anthropic": make_key("up-anthropic", "sk-ant"),
    "gemini": make_key("up-gemini", "AIza"),
    "groq": make_key("up-groq", "gsk"),
}
CLIENT_OWN = make_key("client-own")
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
ALL_KEYS = [RELAY_KEY, OTHER_RELAY_KEY, CLIENT_OWN, *UPSTREAM.values()]

# client path -> (upstream path, header the upstream key must arrive in, its value)
ROUTES = {
    "openai": ("/v1/chat/completions", "/v1/chat/completions", "authorization", f"Bearer {UPSTREAM['openai']}"),
    "anthropic": ("/anthropic/v1/messages", "/anthropic-upstream/v1/messages", "x-api-key", UPSTREAM["anthropic"]),
    "gemini": (
        "/gemini/v1beta/models/gemini-2.0-flash:generateContent",
        "/gemini-upstream/v1beta/models/gemini-2.0-flash:generateContent",
        "x-goog-api-key",
        UPSTREAM["gemini"],
    ),
    "groq": ("/groq/v1/chat/completions", "/groq-upstream/v1/chat/completions", "authorization",
             f"Bearer {UPSTREAM['groq']}"),
}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
_tags = itertools.count()


def tag() -> str:
    return f"access-keys-{next(_tags)}"


def key_in(place: str, key: str) -> tuple[dict[str, str], str]:
    """Headers and query string that carry `key` in `place`; the query also has two bystanders."""
    if place == "?key":
        return {}, f"?foo=1&key={key}&bar=%2F"
    header = {"authorization": "Authorization", "x-api-key": "x-api-key", "api-key": "api-key",
              "x-goog-api-key": "x-goog-api-key"}[place]
    return {header: f"Bearer {key}" if place == "authorization" else key}, "?foo=1&bar=%2F"


def assert_no_key(record, keys) -> None:
    sent = record.target + "\n" + "\n".join(f"{name}: {value}" for name, value in record.headers)
    for key in keys:
        assert key not in sent, "a key reached the upstream where it should not"


@pytest.fixture(scope="module")
def keyed(start_relay, fake):
    """A relay with relay keys, an upstream key for every route but `byok`."""
    return start_relay(
        RELAY_KEYS=f"{RELAY_KEY}, {OTHER_RELAY_KEY}",
        OPENAI_API_KEY=UPSTREAM["openai"],
        ANTHROPIC_API_KEY=UPSTREAM["anthropic"],
        GEMINI_API_KEY=UPSTREAM["gemini"],
        ROUTES=f"groq={fake.url}/groq-upstream,byok={fake.url}/byok-upstream",
        GROQ_API_KEY=UPSTREAM["groq"],
    )


@pytest.mark.parametrize("place", ["authorization", "x-api-key", "api-key", "x-goog-api-key", "?key"])
@pytest.mark.parametrize("group", list(ROUTES))
def test_relay_key_in_any_place_becomes_the_upstream_key(keyed, fake, group, place):
    path, upstream_path, upstream_header, upstream_value = ROUTES[group]
    headers, query = key_in(place, RELAY_KEY)
    name = tag()
    r = requests.post(keyed.url + path + query, json=BODY, headers=headers | {"x-fake-tag": name}, timeout=10)
    assert r.status_code == 200, r.text
    record = fake.by_tag(name)
    assert record.path == upstream_path
    assert record.query == "foo=1&bar=%2F"  # the relay key left the query; the rest is as sent
    assert record.header(upstream_header) == upstream_value
    assert [h for h in CREDENTIAL_HEADERS if record.header(h) is not None] == [upstream_header]
    assert_no_key(record, [k for k in ALL_KEYS if k != UPSTREAM[group]])


@pytest.mark.parametrize("group", list(ROUTES))
def test_missing_or_wrong_relay_key_is_refused_before_the_upstream(keyed, fake, group):
    path = ROUTES[group][0]
    for headers, code in [
        ({}, "missing_relay_key"),
        ({"Authorization": f"Bearer {UPSTREAM[group]}"}, "invalid_relay_key"),  # an upstream key is no relay key
        ({"x-api-key": RELAY_KEY[:-1]}, "invalid_relay_key"),
        ({"x-goog-api-key": RELAY_KEY + "0"}, "invalid_relay_key"),
        ({"Authorization": RELAY_KEY}, "missing_relay_key"),  # no "Bearer": not a key
    ]:
        name = tag()
        r = requests.post(keyed.url + path, json=BODY, headers=headers | {"x-fake-tag": name}, timeout=10)
        assert r.status_code == 401, r.text
        error = r.json()["error"]
        assert error["code"] == code and error["type"] == "authentication_error"
        assert "relay key" in error["message"]
        assert not any(key in r.text for key in ALL_KEYS)
        assert not [rec for rec in fake.records if rec.header("x-fake-tag") == name]


def test_openai_sdk_with_a_relay_key(keyed, fake):
    with openai.OpenAI(base_url=keyed.url + "/v1", api_key=OTHER_RELAY_KEY, max_retries=0) as client:
        name = tag()
        reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "sdk"}],
                                               extra_headers={"x-fake-tag": name})
        assert reply.choices[0].message.content == "echo: sdk"
        assert fake.by_tag(name).header("authorization") == f"Bearer {UPSTREAM['openai']}"

        name = tag()
        stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "streamed"}],
                                                stream=True, extra_headers={"x-fake-tag": name})
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == "echo: streamed"
        assert fake.by_tag(name).header("authorization") == f"Bearer {UPSTREAM['openai']}"

    with (
        openai.OpenAI(base_url=keyed.url + "/v1", api_key="sk-not-a-relay-key", max_retries=0) as stranger,
        pytest.raises(openai.AuthenticationError, match="relay key"),
    ):
        stranger.models.list()


def test_route_without_upstream_key_passes_the_own_key_beside_the_relay_key(keyed, fake):
    name = tag()
    headers = {"Authorization": f"Bearer {RELAY_KEY}", "x-api-key": CLIENT_OWN, "x-fake-tag": name}
    r = requests.post(keyed.url + "/byok/v1/messages", json=BODY, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    record = fake.by_tag(name)
    assert record.path == "/byok-upstream/v1/messages"
    assert record.header("x-api-key") == CLIENT_OWN
    assert record.header("authorization") is None  # the relay key was removed
    assert_no_key(record, [RELAY_KEY, OTHER_RELAY_KEY, *UPSTREAM.values()])

    # The relay key is still required there.
    r = requests.post(keyed.url + "/byok/v1/messages", json=BODY, headers={"x-api-key": CLIENT_OWN}, timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_relay_key"


def test_open_pages_and_cors_preflight_need_no_key(keyed):
    assert requests.get(keyed.url + "/healthz", timeout=10).status_code == 200
    preflight = requests.options(keyed.url + "/v1/chat/completions", timeout=10, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    # A browser app can read the 401 too.
    refused = requests.get(keyed.url + "/v1/models", headers={"Origin": "https://app.example"}, timeout=10)
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize(
    ("path", "place", "upstream_path"),
    [
        ("/v1/chat/completions", "authorization", "/v1/chat/completions"),
        ("/anthropic/v1/messages", "x-api-key", "/anthropic-upstream/v1/messages"),
        ("/gemini/v1beta/models/g:countTokens", "x-goog-api-key", "/gemini-upstream/v1beta/models/g:countTokens"),
        ("/gemini/v1beta/models/g:countTokens", "?key", "/gemini-upstream/v1beta/models/g:countTokens"),
    ],
)
def test_pass_through_mode_sends_the_clients_key_untouched(relay, fake, path, place, upstream_path):
    headers, query = key_in(place, CLIENT_OWN)
    name = tag()
    r = requests.post(relay.url + path + query, json=BODY, headers=headers | {"x-fake-tag": name}, timeout=10)
    assert r.status_code == 200, r.text
    record = fake.by_tag(name)
    assert record.path == upstream_path
    if place == "?key":
        assert record.query == f"foo=1&key={CLIENT_OWN}&bar=%2F"
        assert not any(record.header(h) for h in CREDENTIAL_HEADERS)
    else:
        assert record.query == "foo=1&bar=%2F"
        assert record.header(place) == headers[next(iter(headers))]
