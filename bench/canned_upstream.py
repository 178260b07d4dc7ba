"""The benchmark's fastest upstream: every request gets the same small chat completion, at once.

The fake upstream (`tests/fake_upstream.py`) parses each request into a record and
builds its answer; that caps it near 7,000 req/s on one core here, which would make
the "direct" column measure the fake rather than the connection. This server only
finds where each request ends (head, then a `Content-Length` or chunked body,
skipped as it arrives) and writes a prepared answer, so the direct column
measures the connection, not the upstream. It is also the benchmark's upload
sink. Keep-alive and pipelining are supported.

Run it as `python -m bench.canned_upstream --port N` (it prints the port it bound).
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
MAX_HEAD = 64 * 1024
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
CHUNKED = re.compile(rb"\r\ntransfer-encoding:[^\r]*chunked", re.IGNORECASE)


class CannedProtocol(asyncio.Protocol):
    """One connection: skip each request's body as it arrives, then answer with `ANSWER`.

    Bodies are counted, never stored, so a 200 MiB upload costs no memory here.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()  # an unfinished request head or chunk-size line
        self.state = "head"  # "head", "chunk-size", "chunk-data" or "length" (answer when it is skipped)
        self.left = 0  # bytes to skip in the "length" and "chunk-data" states

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        rest = memoryview(data)
        answers = 0
        while rest:
            if self.state in ("length", "chunk-data"):
                take = min(self.left, len(rest))
                self.left -= take
                rest = rest[take:]
                if not self.left:
                    answers += self.state == "length"
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
                answers += self._start_body(line)
            else:
                size = int(line.split(b";")[0], 16)
                self.state, self.left = ("chunk-data", size + 2) if size else ("length", 2)  # 2: CRLF (no trailers)
        if answers:
            self.transport.write(ANSWER * answers)

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
