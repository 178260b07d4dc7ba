"""Usage per relay key through the real relay: each API's own usage figures, read as they pass, in /pro/usage."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.access_secrets import make_key

UPSTREAM = {"openai": make_key("up-usage-openai"), "anthropic": make_key("up-usage-anthropic"),
            "gemini": make_key("up-usage-gemini")}
ADMIN = make_key("usage-admin", "adm")
KEYS = {f"user{index}": make_key(f"usage-user{index}", "rk") for index in range(16)}
PLAIN = make_key("usage-plain", "rk")  # given without a label: named by its SHA-256
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
_tags = itertools.count()

# (method path, body, extra headers) -> the figures the fake's real-shaped usage gives (tests/fake_upstream.py USAGE)
CHAT_FIGURES = {"model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5, "cached_tokens": 2,
                "reasoning_tokens": 1}
RESPONSES_FIGURES = {"model": "gpt-4o-mini", "input_tokens": 12, "output_tokens": 6, "cached_tokens": 3,
                     "reasoning_tokens": 2}
ANTHROPIC_FIGURES = {"model": "claude-sonnet-4-5", "input_tokens": 24, "output_tokens": 7, "cached_tokens": 4,
                     "reasoning_tokens": 0}
GEMINI_FIGURES = {"model": "gemini-2.0-flash", "input_tokens": 8, "output_tokens": 6, "cached_tokens": 0,
                  "reasoning_tokens": 2}
GEMINI = "/gemini/v1beta/models/gemini-2.0-flash"
CASES = {
    "chat-json": ("/v1/chat/completions", CHAT, {}, CHAT_FIGURES),
    "chat-stream": ("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}},
                    {}, CHAT_FIGURES),
    "chat-gzip": ("/v1/chat/completions", CHAT, {"x-fake-gzip": "1", "Accept-Encoding": "gzip"}, CHAT_FIGURES),
    "responses-json": ("/v1/responses", {"model": "gpt-4o-mini", "input": "hi"}, {}, RESPONSES_FIGURES),
    "responses-stream": ("/v1/responses", {"model": "gpt-4o-mini", "input": "hi", "stream": True}, {},
                         RESPONSES_FIGURES),
    "embeddings": ("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"]}, {},
                   {"model": "text-embedding-3-small", "input_tokens": 3, "output_tokens": 0, "cached_tokens": 0,
                    "reasoning_tokens": 0}),
    "anthropic-json": ("/anthropic/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 50,
                                                  "messages": CHAT["messages"]}, {}, ANTHROPIC_FIGURES),
    "anthropic-stream": ("/anthropic/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 50, "stream": True,
                                                    "messages": CHAT["messages"]}, {}, ANTHROPIC_FIGURES),
    "gemini-json": (GEMINI + ":generateContent", {"contents": [{"parts": [{"text": "hi"}]}]}, {}, GEMINI_FIGURES),
    "gemini-sse": (GEMINI + ":streamGenerateContent?alt=sse", {"contents": [{"parts": [{"text": "hi"}]}]}, {},
                   GEMINI_FIGURES),
    "gemini-array": (GEMINI + ":streamGenerateContent", {"contents": [{"parts": [{"text": "hi"}]}]}, {},
                     GEMINI_FIGURES),
}
CASE_KEYS = dict(zip(CASES, KEYS.values(), strict=False))  # each case its own relay key, so figures stay apart


def relay_keys() -> str:
    return ",".join([*(f"{label}:{key}" for label, key in KEYS.items()), PLAIN])


@pytest.fixture(scope="module")
def counted(start_relay):
    return start_relay(RELAY_KEYS=relay_keys(), ADMIN_KEY=ADMIN, OPENAI_API_KEY=UPSTREAM["openai"],
                       ANTHROPIC_API_KEY=UPSTREAM["anthropic"], GEMINI_API_KEY=UPSTREAM["gemini"])


def usage(relay, key: str, **params: str) -> requests.Response:
    return requests.get(relay.url + "/pro/usage", params=params, headers={"Authorization": f"Bearer {key}"},
                        timeout=10)


def figures_of(relay, key: str) -> dict:
    r = usage(relay, key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["code"] == 200 and body["message"] == "success"
    return body["data"]


def post(relay, path: str, body: dict, key: str, headers: dict | None = None, **options) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}", "x-fake-tag": f"usage-{next(_tags)}", **(headers or {})}
    return requests.post(relay.url + path, json=body, headers=headers, timeout=20, **options)


def wait_for(check, seconds: float = 5.0):
    """The figures are added when the server closes the body, just after the client has it: poll briefly."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.mark.parametrize("case", list(CASES))
def test_each_apis_usage_read_from_its_answer(counted, case):
    path, body, headers, expected = CASES[case]
    key = CASE_KEYS[case]
    label = next(name for name, value in KEYS.items() if value == key)
    r = post(counted, path, body, key, headers, stream=True)
    raw = r.raw.read(decode_content=False)
    assert r.status_code == 200
    if case == "chat-gzip":  # counted from the decoded copy; the client gets the upstream's gzip bytes
        assert r.headers["Content-Encoding"] == "gzip" and raw[:2] == b"\x1f\x8b"
        assert json.loads(gzip.decompress(raw))["usage"]["prompt_tokens"] == 10
    data = wait_for(lambda: (d := figures_of(counted, key))["requests"] and d)
    today = datetime.now(UTC).date().isoformat()
    total = expected["input_tokens"] + expected["output_tokens"]
    model = {"requests": 1, "input_tokens": expected["input_tokens"], "output_tokens": expected["output_tokens"],
             "total_tokens": total, "cached_tokens": expected["cached_tokens"],
             "reasoning_tokens": expected["reasoning_tokens"]}
    assert data == {
        "key": label, "start_date": today, "end_date": today, **model, "unknown": 0,
        "by_model": {expected["model"]: model},
        "by_route": {path.split("/")[1]: {"2xx": 1}},
        "by_day": [{"date": today, **model, "unknown": 0}],
    }


def test_stream_without_usage_counts_as_unknown_never_zero(counted):
    key = KEYS["user12"]
    r = post(counted, "/v1/chat/completions", {**CHAT, "stream": True}, key)  # no stream_options.include_usage
    assert r.status_code == 200 and b"[DONE]" in r.content
    r = post(counted, "/anthropic/v1/messages", {"model": "c", "max_tokens": 5, "messages": CHAT["messages"]}, key,
             {"x-fake-usage": "none"})
    assert r.status_code == 200 and "usage" not in r.json()
    data = wait_for(lambda: (d := figures_of(counted, key))["requests"] == 2 and d)
    assert data["requests"] == 2 and data["unknown"] == 2
    assert data["total_tokens"] == 0 and data["by_model"] == {}
    assert data["by_route"] == {"v1": {"2xx": 1}, "anthropic": {"2xx": 1}}


def test_stream_cut_short_by_the_upstream_is_unknown(counted):
    key = KEYS["user13"]
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _ = post(counted, "/v1/chat/completions", body, key, {"x-fake-drop-after": "2"}).content
    data = wait_for(lambda: (d := figures_of(counted, key))["requests"] and d)
    assert data["requests"] == 1 and data["unknown"] == 1 and data["total_tokens"] == 0


def test_errors_count_by_status_class_without_tokens(counted):
    key = KEYS["user14"]
    assert post(counted, "/v1/chat/completions", CHAT, key, {"x-fake-status": "429"}).status_code == 429
    assert requests.get(counted.url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    data = wait_for(lambda: (d := figures_of(counted, key))["requests"] == 2 and d)
    assert data["by_route"] == {"v1": {"4xx": 1, "2xx": 1}}
    assert data["unknown"] == 0 and data["total_tokens"] == 0  # neither an error nor a listing spends tokens


def test_two_keys_kept_apart_and_the_admin_sees_every_key(counted):
    alice, bob = KEYS["user15"], PLAIN
    for _ in range(2):
        assert post(counted, "/v1/chat/completions", CHAT, alice).status_code == 200
    assert post(counted, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}, bob).status_code == 200
    plain_label = hashlib.sha256(PLAIN.encode()).hexdigest()[:8]
    assert wait_for(lambda: figures_of(counted, alice)["requests"] == 2)
    mine = figures_of(counted, alice)
    assert mine["key"] == "user15" and mine["input_tokens"] == 20 and list(mine["by_model"]) == ["gpt-4o-mini"]
    theirs = wait_for(lambda: (d := figures_of(counted, bob))["requests"] and d)
    assert theirs["key"] == plain_label and theirs["input_tokens"] == 3 and theirs["output_tokens"] == 0

    r = usage(counted, ADMIN)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert set(data["keys"]) == {*KEYS, plain_label}
    assert data["keys"]["user15"]["total_tokens"] == 30 and data["keys"][plain_label]["total_tokens"] == 3
    assert data["keys"]["user15"]["by_model"] == mine["by_model"]
    text = r.text
    assert all(key not in text for key in [*KEYS.values(), PLAIN, ADMIN])  # labels only, never a key


def test_wrong_keys_get_401_in_the_pro_shape(counted):
    for headers in ({}, {"Authorization": "Bearer rk-not-a-key-of-this-relay"}, {"Authorization": f"Bearer {ADMIN}x"}):
        r = requests.get(counted.url + "/pro/usage", headers=headers, timeout=10)
        assert r.status_code == 401
        body = r.json()
        assert body["code"] == 401 and body["data"] is None and "relay key" in body["message"]


def test_period_parameters_work_as_for_balance(counted):
    key = KEYS["user15"]
    today = datetime.now(UTC).date()
    long_ago = (today - timedelta(days=30)).isoformat()
    data = usage(counted, key, start_date=long_ago, end_date=long_ago).json()["data"]
    assert data["start_date"] == data["end_date"] == long_ago and data["requests"] == 0 and data["by_day"] == []
    data = usage(counted, key, days="7").json()["data"]
    assert data["start_date"] == (today - timedelta(days=6)).isoformat() and data["end_date"] == today.isoformat()
    r = usage(counted, key, start_date="2024-13-01")
    assert r.status_code == 400 and r.json()["code"] == 400 and "start_date" in r.json()["message"]


def test_pass_through_mode_answers_404(relay):
    r = requests.get(relay.url + "/pro/usage", headers={"Authorization": "Bearer sk-anything"}, timeout=10)
    assert r.status_code == 404
    body = r.json()
    assert body["code"] == 404 and body["data"] is None and "RELAY_KEYS" in body["message"]


def test_client_that_leaves_mid_stream_counts_unknown_and_closes_upstream(counted, fake):
    key = KEYS["user11"]
    body = json.dumps({**CHAT, "stream": True, "stream_options": {"include_usage": True}}).encode()
    name = f"usage-leave-{next(_tags)}"
    with socket.create_connection(("127.0.0.1", counted.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + key.encode() + b"\r\nx-fake-tag: " + name.encode() +
                     b"\r\nx-fake-chunks: 50\r\nx-fake-delay: 0.1\r\nContent-Length: " + str(len(body)).encode() +
                     b"\r\n\r\n" + body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    record = wait_for(lambda: fake.by_tag(name).client_closed_at is not None and fake.by_tag(name), 10)
    assert record, "the upstream connection stayed open after the client left"
    data = wait_for(lambda: (d := figures_of(counted, key))["requests"] and d)
    assert data["requests"] == 1 and data["unknown"] == 1 and data["total_tokens"] == 0
