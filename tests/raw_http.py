"""A raw-socket client, for what an HTTP library hides: a target sent byte for byte, hanging up mid-stream."""

from __future__ import annotations

import json
import socket


def json_post(path: str, body: dict, headers: dict[str, str]) -> bytes:
    """The bytes of a POST of `body` as JSON, with `headers` after the usual ones."""
    payload = json.dumps(body).encode()
    fields = {"Host": "relay", "Content-Type": "application/json", "Content-Length": str(len(payload)), **headers}
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields.items()) + "\r\n"
    return head.encode() + payload


def open_stream(port: int, path: str, body: dict, headers: dict[str, str]) -> tuple[socket.socket, bytes]:
    """POST `body` as JSON to 127.0.0.1:`port`; return the open socket and what arrived, once an event has."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(json_post(path, body, headers))
    received = b""
    while b"data: " not in received:
        piece = sock.recv(65536)
        if not piece:
            sock.close()
            raise AssertionError(f"the relay closed before the first event: {received[:300]!r}")
        received += piece
    return sock, received


def raw_get(port: int, target: str, headers: dict[str, str] | None = None) -> bytes:
    """One GET with `target` sent byte for byte as written, and `Connection: close`; all the relay answered."""
    fields = {"Host": "relay", "Connection": "close", **(headers or {})}
    head = f"GET {target} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        received = b""
        while piece := sock.recv(65536):
            received += piece
    return received


def split_answer(received: bytes) -> tuple[int, dict[str, str], bytes]:
    """An answer's status, headers (lower-case names) and body."""
    top, _, body = received.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    found = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), found, body


def read_head(conn: socket.socket, limit: int = 65536) -> bytes:
    """A request head read off `conn` up to its blank line (or what came before the peer closed, or `limit`)."""
    head = b""
    while b"\r\n\r\n" not in head and len(head) < limit:
        piece = conn.recv(65536)
        if not piece:
            break
        head += piece
    return head
