"""Slow clients are cut off: one that stops sending its body, drips it, or stops reading its answer.

The relay here runs with `CLIENT_TIMEOUT=2` (the default is 60 s) and 20 connections per worker, so
that a handful of slow clients would fill it. Each cut also closes the request's upstream connection,
which the fake records (`client_closed_at`).
"""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from tests.test_relay_errors import status_of

LIMIT = 2.0  # CLIENT_TIMEOUT of the relay under test


@pytest.fixture(scope="module")
def slow_relay(start_relay):
    return start_relay(CLIENT_TIMEOUT=str(LIMIT), WORKER_CONNECTIONS="20")


def body_head(tag: str, length: int) -> bytes:
    return (f"POST /v1/upload HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\nx-fake-tag: {tag}\r\n\r\n").encode()


def wait_answer(sock: socket.socket, drip: bool, limit: float) -> tuple[bytes, float]:
    """Read what the relay answers until it closes, dripping a byte every 0.5 s if `drip`; (answer, seconds)."""
    started = time.monotonic()
    sock.settimeout(0.5)
    answer = b""
    while time.monotonic() - started < limit:
        try:
            piece = sock.recv(65536)
        except TimeoutError:
            if drip:
                try:
                    sock.sendall(b" ")
                except OSError:
                    break
            continue
        except ConnectionResetError:
            break
        if not piece:
            break
        answer += piece
    return answer, time.monotonic() - started


def upstream_closed_within(fake, tag: str, seconds: float) -> float:
    """Seconds from the request's arrival upstream to the relay closing that upstream connection."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = fake.tagged(tag)
        if found and found[0].client_closed_at is not None:
            return found[0].client_closed_at - found[0].received_at
        time.sleep(0.05)
    raise AssertionError(f"the upstream connection of {tag} was still open after {seconds} s")


@pytest.mark.parametrize("drip", [False, True], ids=["stalled", "dripping"])
def test_a_slow_small_body_is_cut_before_anything_goes_upstream(slow_relay, fake, drip):
    """A small body (up to 64 KiB) is read whole before its request goes out: nothing of it reaches the upstream."""
    tag = f"slow-body-{'drip' if drip else 'stall'}"
    with socket.create_connection(("127.0.0.1", slow_relay.port), timeout=10) as sock:
        sock.sendall(body_head(tag, 1000) + b'{"input": "')
        answer, took = wait_answer(sock, drip, limit=20)
    print(f"\n{tag}: cut after {took:.1f} s")
    assert status_of(answer) == 408, answer[:300]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "client_timeout"
    # stalled: one read waits CLIENT_TIMEOUT; dripping: CLIENT_TIMEOUT plus 1000 bytes at 1 KiB/s
    assert took < LIMIT + 1 + 4
    time.sleep(0.5)
    assert fake.tagged(tag) == []


def test_a_slow_large_body_is_cut_and_its_upstream_connection_closed(slow_relay, fake):
    """A large body is streamed upstream as it comes; cut off midway, its upstream connection is closed too."""
    tag = "slow-body-large"
    with socket.create_connection(("127.0.0.1", slow_relay.port), timeout=10) as sock:
        sock.sendall(body_head(tag, 3 * 1024 * 1024) + b"x" * (1536 * 1024))  # half of it, then nothing
        answer, took = wait_answer(sock, False, limit=20)
    print(f"\n{tag}: cut after {took:.1f} s")
    assert status_of(answer) == 408, answer[:300]
    assert took < LIMIT + 1 + 4
    assert upstream_closed_within(fake, tag, 5) < LIMIT + 1 + 4


def test_healthz_answers_while_slow_bodies_fill_the_worker(slow_relay):
    socks = []
    try:
        for index in range(20):
            sock = socket.create_connection(("127.0.0.1", slow_relay.port), timeout=10)
            sock.sendall(body_head(f"slow-fill-{index}", 1000) + b"{")
            socks.append(sock)
        time.sleep(0.3)
        started = time.monotonic()
        assert requests.get(slow_relay.url + "/healthz", timeout=15).status_code == 200
        took = time.monotonic() - started
        print(f"\n/healthz behind 20 slow bodies on 20 connections: {took:.1f} s")
        assert took < LIMIT + 1 + 4
    finally:
        for sock in socks:
            sock.close()


def test_a_client_that_stops_reading_is_cut_and_the_upstream_closed(slow_relay, fake):
    tag = "slow-reader-download"
    with socket.create_connection(("127.0.0.1", slow_relay.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET /v1/download?size={256 * 1024 * 1024} HTTP/1.1\r\nHost: relay\r\n"
                     f"x-fake-tag: {tag}\r\n\r\n".encode())
        took = upstream_closed_within(fake, tag, 20)
    print(f"\na client that reads nothing: its upstream closed {took:.1f} s after the request")
    assert took < LIMIT + 4


def test_an_idle_keep_alive_connection_outlives_the_client_timeout(slow_relay):
    """The timeout is for requests in progress; between requests gunicorn's keep-alive (95 s) rules."""
    request = b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n"
    with socket.create_connection(("127.0.0.1", slow_relay.port), timeout=10) as sock:
        for _ in range(2):
            sock.sendall(request)
            answer = b""
            while b'"status"' not in answer:
                piece = sock.recv(65536)
                assert piece, "the relay closed the idle connection"
                answer += piece
            assert status_of(answer) == 200
            time.sleep(LIMIT + 1)
