"""The landing page at `GET /`, through the real gunicorn-served relay (the browser test is test_landing_browser.py)."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys

import pytest
import requests
from markupsafe import escape
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header

from landing.texts import TEXTS, choose_language
from tests.relay_server import clean_environ

JSON = {"Accept": "application/json"}


def facts(url: str, **headers: str) -> dict:
    response = requests.get(url + "/", headers=JSON | headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    return response.json()


def page(url: str, **headers: str) -> requests.Response:
    response = requests.get(url + "/", headers={"Accept": "text/html"} | headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/html")
    return response


def shown_base_url(body: str) -> str:
    match = re.search(r'id="openai-base-url">([^<]*)<', body)
    assert match, "the page has no base URL"
    return html.unescape(match.group(1))


def test_page_shows_the_relay_its_routes_and_this_deployments_base_url(relay):
    response = page(relay.url)
    body = response.text
    assert "The relay is up" in body
    assert shown_base_url(body) == relay.url + "/v1"
    for prefix in requests.get(relay.url + "/healthz", timeout=10).json()["routes"]:
        assert f"<code>{prefix}/...</code>" in body
    assert "Pass-through" in body
    # Self-contained: nothing is loaded from anywhere (the only links are the page's own language switch),
    # and the policy says so to the browser.
    assert not re.search(r'(src|href)="(?!data:|#|\?lang=(en|zh)")', body)
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["Vary"] == "Accept, Accept-Language"


def test_json_gives_the_same_facts_as_the_page(relay):
    data = facts(relay.url)
    assert data["status"] == "ok"
    assert data["base_url"] == relay.url
    assert data["openai_base_url"] == relay.url + "/v1"
    assert data["relay_key_required"] is False
    health = requests.get(relay.url + "/healthz", timeout=10).json()
    assert [route["prefix"] for route in data["routes"]] == health["routes"]
    assert data["version"] == health["version"]
    assert {"prefix": "/anthropic", "serves": "Anthropic API"} in data["routes"]
    assert "/healthz" in data["endpoints"]
    body = page(relay.url).text
    assert shown_base_url(body) == data["openai_base_url"]
    for snippet in data["snippets"].values():
        assert str(escape(snippet)) in body


@pytest.mark.parametrize(
    ("accept", "kind"),
    [
        ("*/*", "text/html"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "text/html"),
        ("application/json", "application/json"),
        ("application/json;q=0.9, text/html;q=0.1", "application/json"),
    ],
)
def test_accept_header_picks_the_format(relay, accept, kind):
    response = requests.get(relay.url + "/", headers={"Accept": accept}, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(kind)


def test_head_and_other_methods(relay):
    head = requests.head(relay.url + "/", timeout=10)
    assert head.status_code == 200 and head.content == b""
    post = requests.post(relay.url + "/", json={}, timeout=10)
    assert post.status_code == 405
    assert post.json()["error"]["type"] == "invalid_request_error"


def test_relay_key_mode_says_so_and_shows_no_key(start_relay):
    secrets = ["rk-landing-first-0f3a9c", "rk-landing-second-77d21e", "sk-upstream-landing-5be0c1"]
    relay = start_relay(  # (an upstream URL with a password stops the start: tests/test_security_routes.py)
        RELAY_KEYS=f"{secrets[0]}, {secrets[1]}",
        OPENAI_API_KEY=secrets[2],
        ROUTES="groq=https://groq.example.com/openai",
    )
    data = facts(relay.url)
    assert data["relay_key_required"] is True
    assert {"prefix": "/groq", "serves": "custom route"} in data["routes"]
    assert "$RELAY_KEY" in data["snippets"]["curl"] and 'os.environ["RELAY_KEY"]' in data["snippets"]["python"]
    body = page(relay.url).text
    assert "relay key" in body
    everything = body + requests.get(relay.url + "/", headers=JSON, timeout=10).text
    for secret in secrets:
        assert secret not in everything
    assert "groq.example.com" not in everything  # upstream addresses stay private


def test_forwarded_headers_count_only_from_trusted_proxies(relay, start_relay):
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "relay.example.com"}
    # By default a client cannot make the page show another address.
    assert facts(relay.url, **forwarded)["base_url"] == relay.url
    # Behind one trusted hop (Heroku, Render, Vercel) the public scheme and host are the platform's.
    behind_platform = start_relay(TRUSTED_PROXIES="1")
    assert facts(behind_platform.url, **forwarded)["base_url"] == "https://relay.example.com"
    assert shown_base_url(page(behind_platform.url, **forwarded).text) == "https://relay.example.com/v1"
    # Behind nginx on the same host: the peer 127.0.0.1 is trusted; a relay trusting another network is not fooled.
    assert facts(start_relay(TRUSTED_PROXIES="127.0.0.1").url, **forwarded)["base_url"] == "https://relay.example.com"
    elsewhere = start_relay(TRUSTED_PROXIES="10.0.0.0/8")
    assert facts(elsewhere.url, **forwarded)["base_url"] == elsewhere.url


def test_host_the_client_used_is_the_one_shown(relay):
    assert facts(relay.url, Host="relay.example.com:8443")["base_url"] == "http://relay.example.com:8443"


def test_hostile_forwarded_host_is_escaped(start_relay):
    relay = start_relay(TRUSTED_PROXIES="1")
    hostile = '"><script>alert(1)</script>'
    body = page(relay.url, **{"X-Forwarded-Host": hostile}).text
    assert hostile not in body
    assert shown_base_url(body) == f"http://{hostile}/v1"


def snippet_env() -> dict[str, str]:
    return clean_environ() | {"OPENAI_API_KEY": "sk-landing-snippet"}


def test_python_snippet_runs_as_pasted(relay, fake):
    snippet = facts(relay.url)["snippets"]["python"]
    result = subprocess.run([sys.executable, "-c", snippet], env=snippet_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "echo: Hello!"
    sent = [r for r in fake.find("/v1/chat/completions") if r.header("authorization") == "Bearer sk-landing-snippet"]
    assert sent and sent[-1].json()["messages"] == [{"role": "user", "content": "Hello!"}]


def test_curl_snippet_runs_as_pasted(relay):
    snippet = facts(relay.url)["snippets"]["curl"]
    env = snippet_env() | {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = subprocess.run(["bash", "-c", snippet + " --silent --show-error"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["choices"][0]["message"]["content"] == "echo: Hello!"


# -- languages ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept_language", "query", "expected"),
    [
        ("", "", "en"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "", "zh"),
        ("zh", "", "zh"),
        ("zh-TW,zh;q=0.9", "", "zh"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "", "en"),
        ("fr-FR,fr;q=0.9,zh-CN;q=0.5", "", "zh"),
        ("fr-FR,de;q=0.9", "", "en"),
        ("*", "", "en"),
        ("zh-CN", "en", "en"),
        ("en", "zh", "zh"),
        ("en", "ZH", "zh"),
        ("zh-CN", "xx", "zh"),  # an unknown ?lang= falls back to the header
        ("zh-CN", "<script>", "zh"),
    ],
)
def test_language_is_lang_then_accept_language_then_english(accept_language, query, expected):
    args = {"lang": query} if query else {}
    assert choose_language(args, parse_accept_header(accept_language, LanguageAccept)) == expected


def test_both_languages_say_everything():
    assert TEXTS["en"].keys() == TEXTS["zh"].keys()
    assert all(value.strip() for texts in TEXTS.values() for value in texts.values())


def html_lang(body: str) -> str:
    match = re.search(r'<html lang="([^"]+)">', body)
    assert match
    return match.group(1)


def test_page_speaks_chinese_or_english_by_accept_language_and_the_switch(relay):
    english = page(relay.url).text
    chinese = page(relay.url, **{"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}).text
    assert html_lang(english) == "en" and "The relay is up" in english and "中转" not in english
    assert html_lang(chinese) == "zh-CN" and "中转服务运行中" in chinese and "The relay is up" not in chinese
    assert "直通模式" in chinese and "Pass-through" in english
    # The switch, on both pages: the page's own address with ?lang=, the current language marked.
    for body, current in ((english, "en"), (chinese, "zh")):
        links = re.findall(r'<a href="\?lang=(\w+)"[^>]*?( aria-current="true")?>', body)
        assert sorted(code for code, _ in links) == ["en", "zh"]
        assert [code for code, marked in links if marked] == [current]
    # The switch wins over the header, both ways.
    switched = requests.get(relay.url + "/?lang=en", headers={"Accept-Language": "zh-CN"}, timeout=10).text
    assert html_lang(switched) == "en"
    switched = requests.get(relay.url + "/?lang=zh", headers={"Accept-Language": "en"}, timeout=10).text
    assert html_lang(switched) == "zh-CN"
    # The same facts in both: base URL and snippets (commands and code are not translated).
    assert shown_base_url(chinese) == shown_base_url(english) == relay.url + "/v1"
    for snippet in facts(relay.url)["snippets"].values():
        assert str(escape(snippet)) in chinese
    # JSON is the same whatever the language.
    assert facts(relay.url, **{"Accept-Language": "zh-CN"}) == facts(relay.url)


def test_chinese_page_keeps_the_strict_policy_and_escapes_what_clients_send(start_relay):
    relay = start_relay(TRUSTED_PROXIES="1")
    hostile = '"><script>alert(1)</script>'
    response = requests.get(relay.url + "/?lang=zh", headers={"X-Forwarded-Host": hostile, "Accept": "text/html"},
                            timeout=10)
    assert response.status_code == 200 and html_lang(response.text) == "zh-CN"
    assert hostile not in response.text
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'nonce-" in policy
    assert response.text.count("<script") == 1
