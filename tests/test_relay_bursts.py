"""New connections that arrive together go in one at a time (proxy/green.py), and every one is answered."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import time
import uuid

from tests.raw_http import json_post, split_answer

COUNT = 80  # streams in the burst
CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "hi"}]}


def stream_request(tag: str, chunks: int = 3) -> bytes:
    headers = {"Authorization": "Bearer sk-test", "x-fake-tag": tag, "x-fake-chunks": str(chunks),
               "x-fake-delay": "0.05", "Connection": "close"}
    return json_post(CHAT, BODY, headers)


def queued_while_stopped(relay, requests: list[bytes]) -> list[socket.socket]:
    """Connections that send `requests` while the relay's worker is stopped, so they reach it all at once."""
    (worker,) = relay.worker_pids()
    sockets = []
    os.kill(worker, signal.SIGSTOP)
    try:
        for request in requests:
            sock = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
            sock.sendall(request)
            sockets.append(sock)
    finally:
        os.kill(worker, signal.SIGCONT)
    return sockets


def read_all(sockets: list[socket.socket], seconds: float = 30) -> list[bytes]:
    """Everything each socket receives until the relay closes it (bounded in time)."""
    received = {sock: b"" for sock in sockets}
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + seconds
        while selector.get_map() and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                piece = key.fileobj.recv(65536)
                received[key.fileobj] += piece
                if not piece:
                    selector.unregister(key.fileobj)
        assert not selector.get_map(), f"{len(selector.get_map())} streams were still open after {seconds} s"
    return [received[sock] for sock in sockets]


def test_a_burst_of_new_connections_is_answered_in_full(start_relay, fake):
    """80 streams wait in the listen queue while the worker is stopped, then reach it all at once: each waits
    for its turn, and each gets its whole stream; none is lost in the queue of turns."""
    relay = start_relay()
    tag = f"burst-{uuid.uuid4().hex[:8]}"
    sockets = queued_while_stopped(relay, [stream_request(f"{tag}-{number}") for number in range(COUNT)])
    try:
        answers = read_all(sockets)
    finally:
        for sock in sockets:
            sock.close()
    for number, answer in enumerate(answers):
        status, headers, body = split_answer(answer)
        assert status == 200 and headers["content-type"] == "text/event-stream", answer[:300]
        assert body.count(b"data: {") == 3 and b"data: [DONE]" in body, body[-300:]
        assert fake.by_tag(f"{tag}-{number}").path == CHAT  # once each


def test_connections_that_leave_while_waiting_for_their_turn(start_relay, fake):
    """Half of a burst hangs up before the worker resumes: the others get their whole streams, and the
    upstream requests of those that left, if sent at all, are cut rather than run to their end (40 events,
    2 s)."""
    relay = start_relay()
    tag = f"leave-{uuid.uuid4().hex[:8]}"
    requests = [stream_request(f"{tag}-{number}", chunks=40 if number % 2 else 3) for number in range(COUNT)]
    sockets = queued_while_stopped(relay, requests)  # the worker is running again from here
    leaving, staying = sockets[1::2], sockets[0::2]
    for sock in leaving:
        sock.close()
    try:
        answers = read_all(staying)
    finally:
        for sock in staying:
            sock.close()
    for answer in answers:
        status, _, body = split_answer(answer)
        assert status == 200 and body.count(b"data: {") == 3 and b"data: [DONE]" in body, answer[-300:]
    deadline = time.monotonic() + 10
    left = [fake.tagged(f"{tag}-{number}") for number in range(1, COUNT, 2)]
    while time.monotonic() < deadline and any(r and r[0].client_closed_at is None for r in left):
        time.sleep(0.1)
        left = [fake.tagged(f"{tag}-{number}") for number in range(1, COUNT, 2)]
    for records in left:
        assert len(records) <= 1
        for record in records:
            assert record.client_closed_at is not None and not record.completed, record.target
