"""The benchmark's fastest upstream: every request gets the same small chat completion, at once.

The fake upstream (`tests/fake_upstream.py`) parses each request into a record and
builds its answer; that caps it near 7,000 req/s on one core here, which would make
the "direct" column measure the fake rather than the connection. This server only
finds where each request ends (head, then a `Content-Length` or chunked body,
skipped as it arrives) and writes a prepared answer, so the direct column
measures the connection, not the upstream. It is also the benchmark's upload
sink. Keep-alive and pipelining are supported.

Run it as `python -m bench.canned_upstream --port N` (it prints the port it bound). A request whose target
starts with `/api-headers/` is answered with the 23 header lines the OpenAI API sends with a chat completion
(`API_HEADERS`), as a real upstream does, where the plain answer has three.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re

from tests.fake_upstream import new_event_loop

BODY = json.dumps({
    "id": "chatcmpl-canned", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "echo: hello"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
}).encode()
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-request-id: req_canned\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)
# The head of an answer of api.openai.com to a chat completion (as `curl -D -` shows it; the values are
# made up, the names and shapes are the API's), with the rate-limit headers it sends for most models.
API_HEADERS = (
    b"date: Tue, 01 Dec 2026 10:00:00 GMT\r\ncontent-type: application/json\r\n"
    b"access-control-expose-headers: X-Request-ID\r\nopenai-organization: user-abcdefghijklmnopqrstuvwx\r\n"
    b"openai-processing-ms: 412\r\nopenai-project: proj_abcdefghijklmnopqrstuvwx\r\nopenai-version: 2020-10-01\r\n"
    b"x-ratelimit-limit-requests: 10000\r\nx-ratelimit-limit-tokens: 30000000\r\n"
    b"x-ratelimit-remaining-requests: 9999\r\nx-ratelimit-remaining-tokens: 29999994\r\n"
    b"x-ratelimit-reset-requests: 6ms\r\nx-ratelimit-reset-tokens: 0s\r\n"
    b"x-request-id: req_0123456789abcdef0123456789abcdef\r\n"
    b"strict-transport-security: max-age=31536000; includeSubDomains; preload\r\ncf-cache-status: DYNAMIC\r\n"
    b"set-cookie: __cf_bm=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789.AbCdEfGhIjKlMnOp-1764583200-1.0.1.1-AbCdEfGhIjKlMn"
    b"OpQrStUvWxYz0123456789; path=/; expires=Tue, 01-Dec-26 10:30:00 GMT; domain=.api.openai.com; HttpOnly; "
    b"Secure; SameSite=None\r\nx-content-type-options: nosniff\r\n"
    b"set-cookie: _cfuvid=AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-1764583200000-0.0.1.1-604800000; path=/; "
    b"domain=.api.openai.com; HttpOnly; Secure; SameSite=None\r\n"
    b"server: cloudflare\r\ncf-ray: 8e0123456789abcd-SJC\r\nalt-svc: h3=\":443\"; ma=86400\r\n"
)
API_ANSWER = b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (API_HEADERS, len(BODY), BODY)
MAX_HEAD = 64 * 1024
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)
API_TARGET = re.compile(rb"[A-Z]+ /api-headers/")


class CannedProtocol(asyncio.Protocol):
    """One connection: skip each request's body as it arrives, then answer with `ANSWER` (or `API_ANSWER`).

    Bodies are counted, never stored, so a 200 MiB upload costs no memory here.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()  # an unfinished request head or chunk-size line
        self.state = "head"  # "head", "chunk-size", "chunk-data" or "length" (answer when it is skipped)
        self.left = 0  # bytes to skip in the "length" and "chunk-data" states
        self.answer = ANSWER  # the answer to the request being read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        rest = memoryview(data)
        answers: list[bytes] = []
        while rest:
            if self.state in ("length", "chunk-data"):
                take = min(self.left, len(rest))
                self.left -= take
                rest = rest[take:]
                if not self.left:
                    if self.state == "length":
                        answers.append(self.answer)
                    self.state = "head" if self.state == "length" else "chunk-size"
                continue
            self.buffer += rest
            separator = b"\r\n\r\n" if self.state == "head" else b"\r\n"
            end = self.buffer.find(separator)
            if end < 0:
                if len(self.buffer) > MAX_HEAD:
                    self.transport.close()  # not HTTP
                break
            line = bytes(self.buffer[:end])
            rest = memoryview(bytes(self.buffer[end + len(separator) :]))
            self.buffer.clear()
            if self.state == "head":
                self.answer = API_ANSWER if API_TARGET.match(line) else ANSWER
                if self._start_body(line):
                    answers.append(self.answer)
            else:
                size = int(line.split(b";")[0], 16)
                self.state, self.left = ("chunk-data", size + 2) if size else ("length", 2)  # 2: CRLF (no trailers)
        if answers:
            self.transport.write(b"".join(answers))

    def _start_body(self, head: bytes) -> int:
        """Set the state for the body that follows `head`; returns 1 when there is none (answer now)."""
        if match := CONTENT_LENGTH.search(head):
            self.left = int(match[1])
            self.state = "length" if self.left else "head"
            return 0 if self.left else 1
        if CHUNKED.search(head):
            self.state = "chunk-size"
            return 0
        return 1


def main() -> None:
    parser = argparse.ArgumentParser(description="Answer every request with a canned chat completion.")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    loop = new_event_loop()
    server = loop.run_until_complete(loop.create_server(CannedProtocol, "127.0.0.1", args.port, backlog=4096))
    print(server.sockets[0].getsockname()[1], flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
