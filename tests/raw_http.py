"""A raw-socket client, for what an HTTP library hides: hanging up mid-stream at a chosen moment."""

from __future__ import annotations

import json
import socket


def open_stream(port: int, path: str, body: dict, headers: dict[str, str]) -> tuple[socket.socket, bytes]:
    """POST `body` as JSON to 127.0.0.1:`port`; return the open socket and what arrived, once an event has."""
    payload = json.dumps(body).encode()
    fields = {"Host": "relay", "Content-Type": "application/json", "Content-Length": str(len(payload)), **headers}
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields.items()) + "\r\n"
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head.encode() + payload)
    received = b""
    while b"data: " not in received:
        piece = sock.recv(65536)
        if not piece:
            sock.close()
            raise AssertionError(f"the relay closed before the first event: {received[:300]!r}")
        received += piece
    return sock, received
