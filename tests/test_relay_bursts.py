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


def stream_request(tag: str) -> bytes:
    headers = {"Authorization": "Bearer sk-test", "x-fake-tag": tag, "x-fake-chunks": "3", "x-fake-delay": "0.05",
               "Connection": "close"}
    return json_post(CHAT, BODY, headers)


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
    (worker,) = relay.worker_pids()
    tag = f"burst-{uuid.uuid4().hex[:8]}"
    sockets = []
    os.kill(worker, signal.SIGSTOP)
    try:
        for number in range(COUNT):
            sock = socket.create_connection(("127.0.0.1", relay.port), timeout=10)
            sock.sendall(stream_request(f"{tag}-{number}"))
            sockets.append(sock)
    finally:
        os.kill(worker, signal.SIGCONT)
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
