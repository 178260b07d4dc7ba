"""Behind relay keys, an upstream's error body that repeats the server's key reaches the client without it
(issue 9 item 7): plain, gzip-encoded and chunked bodies, the relay's routes and session chat."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.access_secrets import make_key
from tests.fake_upstream import Request
from tests.raw_http import raw_get, split_answer
from tests.session_client import SessionClient, new_session_id

RELAY_KEY = make_key("scrub-relay", "rk")
SERVER_KEY = make_key("up-scrub-openai")
ANTHROPIC_KEY = make_key("up-scrub-anthropic", "sk-ant")
LEAK = {"x-fake-status": "401", "x-fake-echo-auth": "1"}


async def leaky_chunked(req: Request) -> None:
    """A 500 whose chunked body repeats the request's Authorization, split across two chunks."""
    text = f'{{"error": {{"message": "upstream said: {req.h("authorization")}"}}}}'.encode()
    half = len(text) // 2
    req.writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
    for part in (text[:half], text[half:]):
        req.writer.write(b"%x\r\n%s\r\n" % (len(part), part))
    req.writer.write(b"0\r\n\r\n")
    await req.writer.drain()


@pytest.fixture(scope="module")
def keyed_relay(start_relay, fake):
    fake.route("/leaky-chunked", leaky_chunked)
    return start_relay(RELAY_KEYS=RELAY_KEY, OPENAI_API_KEY=SERVER_KEY, ANTHROPIC_API_KEY=ANTHROPIC_KEY)


def readable(headers: dict[str, str], body: bytes) -> bytes:
    """The body as the client would read it: un-chunked and decoded."""
    if headers.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while True:
            size, _, rest = rest.partition(b"\r\n")
            if int(size, 16) == 0:
                break
            out, rest = out + rest[: int(size, 16)], rest[int(size, 16) + 2 :]
        body = out
    return gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body


@pytest.mark.parametrize(("path", "extra", "key"), [
    ("/v1/models", LEAK, SERVER_KEY),
    ("/v1/models", {**LEAK, "x-fake-gzip": "1", "Accept-Encoding": "gzip"}, SERVER_KEY),
    ("/v1/leaky-chunked", {}, SERVER_KEY),
    ("/anthropic/v1/models", LEAK, ANTHROPIC_KEY),
], ids=["plain", "gzip", "chunked", "anthropic"])
def test_an_error_body_reaches_the_client_without_the_servers_key(keyed_relay, path, extra, key):
    answer = raw_get(keyed_relay.port, path, {"Authorization": f"Bearer {RELAY_KEY}", **extra})
    status, headers, body = split_answer(answer)
    assert status in (401, 500)
    text = readable(headers, body)
    assert key.encode() not in text and key[:20].encode() not in text
    assert b"[upstream key removed by the relay]" in text
    assert int(headers["content-length"]) == len(body) and "content-encoding" not in headers
    json.loads(text)  # still the upstream's JSON, with the key replaced


def test_session_chat_does_not_repeat_the_servers_key_from_an_upstream_refusal(keyed_relay):
    client = SessionClient(keyed_relay.url, key="placeholder")
    response = client.chat(new_session_id(), "hi", headers={"Authorization": f"Bearer {RELAY_KEY}", **LEAK})
    assert response.status_code == 401
    assert SERVER_KEY not in response.text and "Incorrect API key provided." in response.json()["message"]
