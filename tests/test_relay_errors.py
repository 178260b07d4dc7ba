"""When things go wrong: clear errors in the OpenAI shape, never a 500, never a request to another host."""

from __future__ import annotations

import re
import socket
import time

import pytest
import requests

from tests.relay_server import free_port


def raw_request(port: int, request: bytes, timeout: float = 10) -> bytes:
    """Send bytes exactly as given and return all the relay answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                piece = sock.recv(65536)
            except TimeoutError:
                break
            if not piece:
                break
            data += piece
    return data


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def assert_openai_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert set(error) == {"message", "type", "param", "code"}


def test_upstream_unreachable_is_502(start_relay):
    relay = start_relay(UPSTREAM_URL=f"http://127.0.0.1:{free_port()}")
    response = requests.get(relay.url + "/v1/models", timeout=10)
    assert_openai_error(response, 502, "upstream_unreachable")


def test_upstream_silent_before_headers_is_504(start_relay, fake):
    relay = start_relay(UPSTREAM_READ_TIMEOUT="1")
    started = time.monotonic()
    response = requests.get(relay.url + "/v1/models", headers={"x-fake-first-byte-delay": "5"}, timeout=10)
    assert_openai_error(response, 504, "upstream_timeout")
    assert time.monotonic() - started < 4


def test_upstream_silent_mid_stream_cuts_the_stream(start_relay):
    relay = start_relay(UPSTREAM_READ_TIMEOUT="1", SSE_HEARTBEAT="0")
    body = {"stream": True, "messages": [{"role": "user", "content": "x"}]}
    headers = {"x-fake-chunks": "3", "x-fake-pause": "4"}
    with (
        requests.post(relay.url + "/v1/chat/completions", json=body, headers=headers, stream=True, timeout=10) as r,
        pytest.raises(requests.exceptions.ChunkedEncodingError),
    ):
        for _ in r.iter_content(None):
            pass


def test_upstream_silent_mid_stream_cuts_the_stream_through_its_heartbeats(start_relay, fake):
    """Heartbeats keep the client's side alive; they do not reset the upstream's read timeout."""
    relay = start_relay(UPSTREAM_READ_TIMEOUT="2", SSE_HEARTBEAT="0.5")
    body = {"stream": True, "messages": [{"role": "user", "content": "x"}]}
    headers = {"x-fake-chunks": "3", "x-fake-pause": "20", "x-fake-tag": "silent-past-timeout"}
    started = time.monotonic()
    pieces = []
    with (
        requests.post(relay.url + "/v1/chat/completions", json=body, headers=headers, stream=True, timeout=10) as r,
        pytest.raises(requests.exceptions.ChunkedEncodingError),
    ):
        for piece in r.iter_content(None):
            pieces.append(piece)
    cut_after = time.monotonic() - started
    assert b"".join(pieces).count(b": keep-alive") >= 2
    assert 1.9 < cut_after < 5
    record = fake.by_tag("silent-past-timeout")
    deadline = time.monotonic() + 3
    while record.client_closed_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert record.client_closed_at is not None  # the relay hung up on the upstream


@pytest.mark.parametrize(
    "target",
    [
        "http://evil.example/v1/models",
        "https://evil.example:443/v1/models",
        "//evil.example/v1/models",
        "/v1//evil.example/models",
        "/v1/../../etc/passwd",
        "/v1/%2e%2e/%2e%2e/admin",
        "/v1/%252e%252e/admin",
        "/v1/models/..%2F..%2Fadmin",
        "/openai%2F@evil.example/models",
        "/openai%2f%40evil.example/models",
        "/v1/models\\..\\admin",
        "/openai/..",
    ],
)
def test_path_tricks_are_refused_and_never_reach_any_host(relay, fake, target):
    tag = f"trick-{target}"
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-fake-tag: {tag}\r\nConnection: close\r\n\r\n"
    answer = raw_request(relay.port, request.encode())
    assert status_of(answer) == 400
    assert b'"invalid_path"' in answer or b'"invalid_request_error"' in answer
    time.sleep(0.05)
    assert fake.tagged(tag) == []


@pytest.mark.parametrize(
    ("target", "status", "reaches"),
    [
        ("/v1/@evil.example/x", 200, "/v1/@evil.example/x"),
        ("/v1/models/claude-sonnet-4@20250514:rawPredict", 200, "/v1/models/claude-sonnet-4@20250514:rawPredict"),
        ("/v1/%40evil.example/models", 200, "/v1/%40evil.example/models"),
        ("/v1@evil.example/models", 404, None),
        ("/v1%40evil.example/models", 404, None),
        ("/openai@evil.example/v1/models", 404, None),
    ],
)
def test_an_at_sign_in_the_path_never_changes_the_host(relay, fake, target, status, reaches):
    """'@' is allowed in paths (Vertex AI model ids), and still only the route's upstream is ever asked."""
    tag = f"at-{target}"
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-fake-tag: {tag}\r\nConnection: close\r\n\r\n"
    answer = raw_request(relay.port, request.encode())
    assert status_of(answer) == status
    time.sleep(0.05)
    if reaches is None:
        assert fake.tagged(tag) == []
    else:
        sent = fake.by_tag(tag)
        assert sent.target == reaches
        assert sent.header("host") == f"127.0.0.1:{fake.port}"  # the route's upstream, nobody else


def test_host_headers_cannot_redirect_the_relay(relay, fake):
    response = requests.get(
        relay.url + "/v1/echo",
        headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example", "X-Original-URL": "http://evil.example/"},
        timeout=10,
    )
    assert response.status_code == 200  # still served by the configured upstream, the fake
    assert response.json()["path"] == "/v1/echo"


def test_unknown_route_is_404(relay):
    response = requests.post(relay.url + "/v2/chat/completions", json={}, timeout=10)
    assert_openai_error(response, 404, "unknown_route")
    assert "/v1/" in response.json()["error"]["message"]


def test_body_over_the_limit_is_413_with_content_length(start_relay, fake):
    relay = start_relay(MAX_BODY_BYTES="1000")
    response = requests.post(relay.url + "/v1/upload", data=b"x" * 1001, headers={"x-fake-tag": "big"}, timeout=10)
    assert_openai_error(response, 413, "request_too_large")
    time.sleep(0.05)
    assert fake.tagged("big") == []  # refused before anything went upstream
    assert requests.post(relay.url + "/v1/upload", data=b"x" * 1000, timeout=10).json()["bytes"] == 1000


def test_chunked_body_over_the_limit_is_413(start_relay):
    relay = start_relay(MAX_BODY_BYTES="100000")

    def blocks():
        for _ in range(20):
            yield b"y" * 10000

    response = requests.post(relay.url + "/v1/upload", data=blocks(), timeout=10)
    assert_openai_error(response, 413, "request_too_large")


def test_cors_preflight_is_answered_by_the_relay(relay, fake):
    response = requests.options(
        relay.url + "/v1/chat/completions",
        headers={
            "x-fake-tag": "preflight",
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os, openai-organization",
        },
        timeout=10,
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "x-stainless-os" in response.headers["Access-Control-Allow-Headers"]
    time.sleep(0.05)
    assert fake.tagged("preflight") == []


def test_cors_headers_on_relayed_answers_expose_the_useful_ones(relay):
    response = requests.post(
        relay.url + "/v1/chat/completions", json={}, headers={"Origin": "https://app.example", "x-fake-status": "429"}
    )
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    exposed = {name.strip().lower() for name in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"x-request-id", "retry-after", "x-ratelimit-remaining-requests"} <= exposed


def test_cors_origin_list(start_relay):
    relay = start_relay(CORS_ORIGINS="https://good.example, https://also.example")
    preflight = {"Access-Control-Request-Method": "POST"}
    good = requests.options(relay.url + "/v1/x", headers={"Origin": "https://good.example", **preflight})
    bad = requests.options(relay.url + "/v1/x", headers={"Origin": "https://bad.example", **preflight})
    assert good.headers["Access-Control-Allow-Origin"] == "https://good.example"
    assert "Access-Control-Allow-Origin" not in bad.headers


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /v1/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nabc\r\n",
        b"POST /v1/upload HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\nConnection: close\r\n\r\n",
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header\r\nConnection: close\r\n\r\n",
        b"GET /v1/\x00models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"NOT-HTTP\r\n\r\n",
    ],
)
def test_malformed_requests_never_cause_a_500(relay, request_bytes):
    answer = raw_request(relay.port, request_bytes, timeout=5)
    if answer:  # gunicorn may also just close the connection on garbage
        assert 400 <= status_of(answer) < 500
        assert b"Traceback" not in answer


def test_client_that_stops_sending_its_body_loses_nothing_upstream(relay, fake):
    """A body cut short by the client: the relay gives up on it, and the upstream gets no complete request."""
    with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nx-fake-tag: cut\r\n\r\n")
        sock.sendall(b"z" * 1000)
    time.sleep(1)
    assert all(record.body_len < 100000 for record in fake.records if record.header("x-fake-tag") == "cut")


def test_healthz(relay):
    answer = requests.get(relay.url + "/healthz", timeout=5).json()
    assert answer["status"] == "ok"
    assert answer["version"]
    assert answer["routes"] == ["/v1", "/openai", "/dashboard", "/anthropic", "/gemini"]


def test_access_log_has_one_line_per_request_and_no_secrets(start_relay):
    relay = start_relay()
    secret = "sk-proj-SECRETSECRET123"
    requests.get(relay.url + f"/v1/models?key={secret}&after=x", headers={"Authorization": f"Bearer {secret}"})
    requests.post(relay.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": secret}]},
                  headers={"x-api-key": secret, "x-fake-status": "401"})
    requests.get(relay.url + "/v1/download?size=5000")
    time.sleep(0.3)
    log = relay.log()
    assert secret not in log
    lines = [line for line in log.splitlines() if "relay.access" in line]
    assert re.search(r"GET /v1/models 200 \d+ms \d+B$", lines[-3])
    assert re.search(r"POST /v1/chat/completions 401 \d+ms \d+B$", lines[-2])
    assert re.search(r"GET /v1/download 200 \d+ms 5000B$", lines[-1])


@pytest.mark.parametrize(("path", "status"), [("/pro/chat/completions", 405), ("/pro/nope", 404)])
def test_pro_routes_answer_routing_errors_in_their_own_shape(relay, path, status):
    response = requests.get(relay.url + path, timeout=10)
    assert response.status_code == status
    body = response.json()
    assert list(body) == ["code", "message", "data"]
    assert body["code"] == status and body["data"] is None and body["message"]
