"""Unit tests of the relay's pure helpers; the behaviour is tested through the real server elsewhere."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from proxy.headers import request_headers, response_headers
from proxy.public_urls import Relocation
from proxy.routes import BadTarget, build_routes, check_target, upstream_url
from proxy.settings import Settings, SettingsError
from proxy.upstream import Upstream


def test_settings_from_environment_and_overrides():
    settings = Settings.load({"SSE_HEARTBEAT": "5", "MAX_BODY_BYTES": "10"}, {"max_body_bytes": 20})
    assert settings.sse_heartbeat == 5.0
    assert settings.max_body_bytes == 20
    assert Settings.load({"REDIS_URL": "redis://r:6379/0"}).session_store == "redis://r:6379/0"
    with pytest.raises(SettingsError, match="MAX_BODY_BYTES"):
        Settings.load({"MAX_BODY_BYTES": "lots"})


@pytest.mark.parametrize(
    ("name", "value"),
    [("UPSTREAM_READ_TIMEOUT", "0"), ("UPSTREAM_CONNECT_TIMEOUT", "-1"), ("UPSTREAM_READ_TIMEOUT", "inf"),
     ("WEBSOCKET_IDLE_TIMEOUT", "-5"), ("CLIENT_TIMEOUT", "nan"), ("SSE_HEARTBEAT", "-0.5"),
     ("REDIS_TIMEOUT", "0"), ("KEY_COOLDOWN", "-1"), ("SESSION_LOCK_WAIT", "inf"),
     ("UPSTREAM_IDLE_TIMEOUT", "-1")],
)
def test_seconds_the_relay_cannot_use_are_refused(name, value):
    with pytest.raises(SettingsError, match=f"{name}=.* must be a number of seconds"):
        Settings.load({name: value})


def test_zero_turns_off_the_limits_that_may_be_off():
    settings = Settings.load({"WEBSOCKET_IDLE_TIMEOUT": "0", "CLIENT_TIMEOUT": "0", "SSE_HEARTBEAT": "0",
                              "UPSTREAM_IDLE_TIMEOUT": "0"})
    assert (settings.websocket_idle_timeout, settings.client_timeout, settings.sse_heartbeat,
            settings.upstream_idle_timeout) == (0, 0, 0, 0)


def test_route_table_and_bad_route_settings():
    routes = build_routes(Settings.load({"UPSTREAM_URL": "https://one.example/base/", "ROUTES": "groq=https://g.example/openai"}))
    assert routes["v1"].base == "https://one.example/base/v1"
    assert routes["openai"].base == "https://one.example/base"
    assert routes["groq"].base == "https://g.example/openai"
    assert routes["groq"].key_group == "groq"
    for bad in ("noequals", "x=ftp://h", "=https://h", "a b=https://h", "x=https://h;heartbeat=maybe",
                "x=https://h;beat=on", "x=https://h;heartbeat"):
        with pytest.raises(SettingsError):
            build_routes(Settings.load({"ROUTES": bad}))


def test_heartbeat_per_route():
    routes = build_routes(Settings.load({"SSE_HEARTBEAT": "7", "ROUTES": (
        "groq=https://g.example/openai, quiet=https://q.example;heartbeat=off, "
        "vertex=https://us-east5-aiplatform.googleapis.com/v1,"
        "loud=https://generativelanguage.googleapis.com ; heartbeat=on"
    )}))
    beats = {prefix: route.heartbeat for prefix, route in routes.items()}
    assert beats == {"v1": 7, "openai": 7, "dashboard": 7, "anthropic": 7, "gemini": 0,
                     "groq": 7, "quiet": 0, "vertex": 0, "loud": 7}
    assert routes["loud"].base == "https://generativelanguage.googleapis.com"
    with pytest.raises(SettingsError, match=r"ROUTES\[x\]: unknown option 'heartbeat=sometimes'"):
        build_routes(Settings.load({"ROUTES": "x=https://h;heartbeat=sometimes"}))
    assert build_routes(Settings.load({"SSE_HEARTBEAT": "0", "ROUTES": "x=https://h;heartbeat=on"}))["x"].heartbeat == 0


def test_relocating_urls_in_json_keeps_every_other_byte():
    base = "https://api.anthropic.com"
    relocation = Relocation(base, "https://relay.example/anthropic", "results_url")
    body = (b'{"id": "b1",\n  "results_url": "https://api.anthropic.com/v1/messages/batches/b1/results",'
            b' "note": "caf\\u00e9", "other": "https://files.example/x"}')
    assert relocation.body(body) == body.replace(b"https://api.anthropic.com", b"https://relay.example/anthropic")
    listed = b'{"data": [{"results_url": "https:\\/\\/api.anthropic.com\\/v1\\/r"}, {"results_url": null}]}'
    assert json.loads(relocation.body(listed)) == {"data": [{"results_url": "https://relay.example/anthropic/v1/r"},
                                                            {"results_url": None}]}
    for untouched in (b'{"results_url": "https://api.anthropic.com.evil.example/r"}', b"not json", b"[1, 2]",
                      b'{"results_url": "https://other.example/v1/r"}'):
        assert relocation.body(untouched) == untouched
    assert Relocation(base, "https://relay.example/anthropic").body(body) == body  # no field for this endpoint
    assert relocation.headers([("X-Goog-Upload-URL", base + "/upload?id=1"), ("Location", base + "/x")]) == [
        ("X-Goog-Upload-URL", "https://relay.example/anthropic/upload?id=1"), ("Location", base + "/x")]


def test_target_checks():
    assert check_target("/v1/models?x=%2F") == ("/v1/models", "x=%2F")
    assert check_target("/v1/models/claude-sonnet-4@20250514:rawPredict")[0].endswith("@20250514:rawPredict")
    for bad in ("http://evil/v1", "/v1/../x", "/v1/%2E%2E/x", "/v1//x", "/v1/a\\b", "/v1/%00", "/v1/%5C", "/v1/%2F%2F"):
        with pytest.raises(BadTarget):
            check_target(bad)
    routes = build_routes(Settings.load({}))
    assert upstream_url(routes["v1"], "/v1/@evil.example/x", "") == "https://api.openai.com/v1/@evil.example/x"
    for path in ("/openai%2F@evil.example/x", "/openai@evil.example/x", "/openaix"):  # the prefix must end at '/'
        with pytest.raises(BadTarget):
            upstream_url(routes["openai"], path, "")
    assert upstream_url(routes["gemini"], "/gemini/v1beta/m:gen", "alt=sse") == (
        "https://generativelanguage.googleapis.com/v1beta/m:gen?alt=sse"
    )
    assert upstream_url(routes["v1"], "/v1", "") == "https://api.openai.com/v1"


def test_header_rules():
    environ = {
        "HTTP_CONNECTION": "close, X-Hop",
        "HTTP_X_HOP": "1",
        "HTTP_AUTHORIZATION": "Bearer k",
        "HTTP_X_FORWARDED_FOR": "1.2.3.4",
        "HTTP_COOKIE": "a=b",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "2",
    }
    assert request_headers(environ, "api.example") == {
        "Host": "api.example", "Authorization": "Bearer k", "Content-Type": "application/json"
    }
    assert "Cookie" in request_headers(environ, "api.example", keep_cookies=True)
    upstream = [("Set-Cookie", "a"), ("Set-Cookie", "b"), ("Connection", "x-gone"), ("X-Gone", "1"),
                ("Transfer-Encoding", "chunked"), ("Access-Control-Allow-Origin", "*"), ("x-request-id", "r")]
    kept = response_headers(upstream)
    assert kept == [("Set-Cookie", "a"), ("Set-Cookie", "b"), ("x-request-id", "r")]


def test_upstream_send_adds_no_header_of_its_own():
    with socket.create_server(("127.0.0.1", 0)) as server:
        origin = f"http://127.0.0.1:{server.getsockname()[1]}"
        settings = Settings.load({"UPSTREAM_URL": origin})
        upstream = Upstream(settings, build_routes(settings).values())
        seen: list[bytes] = []

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5)
                while b"\r\n\r\n" not in b"".join(seen):
                    seen.append(conn.recv(65536))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Two: a\r\nx-two: b\r\n\r\nok")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        response = upstream.send("GET", origin + "/v1/a%2Fb?x=%20&x=1#frag", origin, {"Host": "h.example"})
        thread.join(5)
        # The target as given (fragment aside), and no header urllib3 would add (User-Agent, Accept-Encoding).
        assert b"".join(seen) == b"GET /v1/a%2Fb?x=%20&x=1 HTTP/1.1\r\nHost: h.example\r\n\r\n"
        assert response.status_code == 200 and response.headers["x-two"] == "a, b"
        assert response.raw.read() == b"ok"
        response.close()


def test_a_socks_proxy_is_refused_at_start_up(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    monkeypatch.setenv("HTTPS_PROXY", "socks5://user:secret@127.0.0.1:1080")
    settings = Settings.load({})
    with pytest.raises(SettingsError, match="only http") as refused:
        Upstream(settings, build_routes(settings).values())
    assert "secret" not in str(refused.value)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")  # with NO_PROXY beside it: accepted
    upstream = Upstream(settings, build_routes(settings).values())
    assert upstream._proxies["https://api.openai.com"]["https"] == "http://127.0.0.1:3128"


def test_redis_py_loads_only_when_something_is_kept_in_redis():
    """redis-py is a tenth of the app's import time (a Vercel cold start, each worker's boot): only an app that
    keeps something in Redis loads it (here it never connects: the client connects on first use)."""
    from tests.relay_server import clean_environ, run_python

    def loads_redis(**env: str) -> bool:
        done = run_python("import sys, app; assert app.app; print('redis' in sys.modules)", env=clean_environ() | env)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.strip() == "True"

    assert not loads_redis(RATE_LIMIT="5/second", RELAY_KEYS="team=sk-relay-units-0123456789")
    assert loads_redis(SESSION_STORE="redis://127.0.0.1:9/0")
    assert loads_redis(REDIS_URL="redis://127.0.0.1:9/0", RATE_LIMIT="5/second")
