"""A keep-alive connection the upstream has closed is never reused (urllib3 checks a pooled one before reuse).

The upstream here answers one request per connection, keep-alive announced, then closes the connection
while it sits idle in the relay's pool. The next request must go out on a new connection: sent on the
closed one, it would fail (the relay never retries a request) and the client would get a 502.
"""

from __future__ import annotations

import socket
import threading
import time

import requests

ANSWER = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}'


class OneAnswerUpstream:
    """Answers the first request on each connection, then closes it a moment later."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        for _ in range(100):
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.settimeout(5)
                head = b""
                while b"\r\n\r\n" not in head and len(head) < 65536:
                    piece = conn.recv(65536)
                    if not piece:
                        break
                    head += piece
                conn.sendall(ANSWER)
                time.sleep(0.1)  # the relay has the answer and pools the connection; then it is closed

    def close(self) -> None:
        self.sock.close()


def test_a_connection_closed_by_the_upstream_is_not_reused(start_relay):
    upstream = OneAnswerUpstream()
    try:
        relay = start_relay(UPSTREAM_URL=f"http://127.0.0.1:{upstream.port}")
        statuses = []
        for _ in range(3):
            statuses.append(requests.get(relay.url + "/v1/models", headers={"Authorization": "Bearer sk-test"},
                                         timeout=10).status_code)
            time.sleep(0.5)  # the upstream has closed the pooled connection by now
        assert statuses == [200, 200, 200]
        assert upstream.connections == 3  # each request on a fresh connection
    finally:
        upstream.close()
