"""A keep-alive connection the upstream has closed, or has written to unasked, is never reused (the relay
checks a pooled connection before reuse: proxy/upstream.py).

The upstream here answers one request per connection, keep-alive announced, then, while the connection
sits idle in the relay's pool, closes it, or sends a stray `408` and keeps it open, as servers do when their
idle timeout strikes. The next request must go out on a new connection: sent on the closed one, it would
fail (the relay never retries a request) and the client would get a 502; sent on the other, its client
would get the stray 408 as its answer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
import requests

from tests.raw_http import read_head

ANSWER = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}'
STRAY = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n"


class OneAnswerUpstream:
    """Answers the first request on each connection; a moment later closes it, or sends `stray` and waits."""

    def __init__(self, stray: bytes = b"") -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stray = stray
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        for _ in range(100):
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            read_head(conn)
            conn.sendall(ANSWER)
            time.sleep(0.1)  # the relay has the answer and pools the connection
            if self.stray:
                conn.sendall(self.stray)
                conn.settimeout(3)
                with contextlib.suppress(OSError):  # until the relay closes it (or sends a request on it)
                    conn.recv(65536)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("stray", [b"", STRAY], ids=["closed", "stray-408"])
def test_a_connection_closed_or_written_to_by_the_upstream_is_not_reused(start_relay, stray):
    upstream = OneAnswerUpstream(stray)
    try:
        relay = start_relay(UPSTREAM_URL=f"http://127.0.0.1:{upstream.port}")
        statuses = []
        for _ in range(3):
            statuses.append(requests.get(relay.url + "/v1/models", headers={"Authorization": "Bearer sk-test"},
                                         timeout=10).status_code)
            time.sleep(0.5)  # the upstream has closed the pooled connection, or written to it, by now
        assert statuses == [200, 200, 200]
        assert upstream.connections == 3  # each request on a fresh connection
    finally:
        upstream.close()
