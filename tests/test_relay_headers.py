"""Headers and targets are handled like a real proxy: end-to-end kept, hop-by-hop and client IP dropped."""

from __future__ import annotations

import json

import pytest
import requests

from tests.raw_http import raw_get, split_answer


def echo(relay, path: str, headers: dict[str, str] | None = None, method: str = "GET", **kwargs) -> dict:
    response = requests.request(method, relay.url + path, headers=headers, timeout=10, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def sent_headers(answer: dict) -> dict[str, str]:
    return {name.lower(): value for name, value in answer["headers"]}


def test_end_to_end_headers_pass_untouched(relay):
    headers = {
        "Authorization": "Bearer sk-e2e",
        "OpenAI-Organization": "org-123",
        "OpenAI-Project": "proj_456",
        "OpenAI-Beta": "assistants=v2",
        "x-api-key": "ak-1",
        "anthropic-version": "2023-06-01",
        "x-goog-api-key": "gk-1",
        "x-stainless-lang": "python",
        "User-Agent": "OpenAI/Python 3.54.0",
    }
    got = sent_headers(echo(relay, "/v1/echo", headers))
    for name, value in headers.items():
        assert got[name.lower()] == value


def test_hop_by_hop_and_client_identifying_headers_are_dropped(relay, fake):
    headers = {
        "Connection": "keep-alive, X-Secret-Hop",
        "X-Secret-Hop": "1",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Upgrade": "h2c",
        "Expect": "100-continue",
        "Proxy-Authorization": "Basic abc",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
        "Forwarded": "for=203.0.113.7",
        "X-Real-IP": "203.0.113.7",
        "CF-Connecting-IP": "203.0.113.7",
        "CF-IPCountry": "CN",
        "True-Client-IP": "203.0.113.7",
        "X-Vercel-IP-Country": "CN",
        "Via": "1.1 cdn",
        "Cookie": "session=abc",
        "X-Keep-Me": "yes",
    }
    got = sent_headers(echo(relay, "/v1/echo", headers))
    assert got["x-keep-me"] == "yes"
    for name in headers:
        if name != "X-Keep-Me":
            assert name.lower() not in got, name


def test_host_is_the_upstreams(relay, fake):
    got = sent_headers(echo(relay, "/v1/echo", {"Host": "evil.example"}))
    assert got["host"] == fake.url.removeprefix("http://")


@pytest.mark.parametrize(
    ("path", "upstream_target"),
    [
        ("/v1/echo/list?purpose=batch&limit=2&after=a%2Fb", "/v1/echo/list?purpose=batch&limit=2&after=a%2Fb"),
        ("/v1/echo/a%20b/c%2Fd?q=%E4%BD%A0%E5%A5%BD&x=1+2", "/v1/echo/a%20b/c%2Fd?q=%E4%BD%A0%E5%A5%BD&x=1+2"),
        ("/openai/v1/echo/chat?x", "/v1/echo/chat?x"),
        ("/dashboard/billing/echo?start_date=2024-01-01", "/dashboard/billing/echo?start_date=2024-01-01"),
        ("/anthropic/v1/echo/messages", "/anthropic-upstream/v1/echo/messages"),
        (
            "/gemini/v1beta/models/gemini-2.0-flash:countTokens?alt=sse&key=gk",
            "/gemini-upstream/v1beta/models/gemini-2.0-flash:countTokens?alt=sse&key=gk",
        ),
    ],
)
def test_path_and_query_forwarded_exactly(relay, path, upstream_target):
    assert echo(relay, path)["target"] == upstream_target


@pytest.mark.parametrize(
    "target",
    [
        "/v1/echo/a%2fb?after=file%2dabc&x=%7e",  # lower-case escapes (urllib3 writes them upper-case)
        "/v1/echo/a%zz?q=100%",  # not an escape at all (urllib3 makes it %25zz: another name)
        '/v1/echo/a|b"c{d}^`e?r=<>',  # characters urllib3 would escape
        "/v1/echo/%E4%BD%A0?x=1+2&x=3",
    ],
)
def test_the_target_reaches_the_upstream_byte_for_byte(relay, target):
    """Sent on a raw socket (an HTTP library would rewrite it first): the upstream gets the same bytes."""
    status, _, body = split_answer(raw_get(relay.port, target))
    assert status == 200, body[:300]
    assert json.loads(body)["target"] == target


def test_extra_routes_from_settings(start_relay, fake):
    relay = start_relay(ROUTES=f"groq={fake.url}/groq-upstream/openai, deepseek={fake.url}/ds")
    assert echo(relay, "/groq/v1/echo/chat")["target"] == "/groq-upstream/openai/v1/echo/chat"
    assert echo(relay, "/deepseek/echo")["target"] == "/ds/echo"
    assert "/groq" in requests.get(relay.url + "/healthz", timeout=5).json()["routes"]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_every_method_is_relayed(relay, method):
    answer = echo(relay, "/v1/echo/thing", method=method, data=b"payload" if method != "GET" else None)
    assert answer["method"] == method


def test_head_is_relayed_without_a_body(relay):
    response = requests.head(relay.url + "/v1/audio/speech", headers={"x-fake-size": "999"}, timeout=10)
    assert response.status_code == 200
    assert response.content == b""


def test_response_headers_reach_the_client(relay):
    response = requests.post(relay.url + "/v1/chat/completions", json={}, headers={"x-fake-status": "429"})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.headers["x-ratelimit-limit-requests"] == "500"
    assert response.headers["x-request-id"] == "req_fake"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_upstream_connections_are_kept_alive(relay, fake):
    for tag in ("alive-1", "alive-2"):
        requests.get(relay.url + "/v1/echo", headers={"x-fake-tag": tag, "Connection": "close"}, timeout=10)
    assert fake.by_tag("alive-1").peer == fake.by_tag("alive-2").peer  # the relay's pool reused its connection
