"""New connections that arrive together go in a few at a time, first come first (proxy/green.py), and every one is
answered."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import statistics
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


def test_a_burst_is_let_in_in_the_order_its_connections_came(start_relay, fake):
    """40 connections are accepted and waiting for their requests, which then reach the worker together (it is
    stopped while they are sent, in the order the connections came). They go upstream in that order, the first
    to come first (proxy/green.py: `_arrivals`); in the order their greenlets woke, the event loop's, the last
    went first (libev runs the watchers of one poll from the last to the first)."""
    relay = start_relay()
    (worker,) = relay.worker_pids()
    tag = f"order-{uuid.uuid4().hex[:8]}"
    count = 40
    warm = [socket.create_connection(("127.0.0.1", relay.port), timeout=10) for _ in range(count)]
    try:
        for number, sock in enumerate(warm):  # 40 upstream connections, which the requests below then go on
            sock.sendall(stream_request(f"{tag}-warm-{number}", chunks=10))  # 0.45 s: all 40 open together
        assert all(split_answer(answer)[0] == 200 for answer in read_all(warm))
    finally:
        for sock in warm:
            sock.close()
    sockets = [socket.create_connection(("127.0.0.1", relay.port), timeout=10) for _ in range(count)]
    try:
        time.sleep(0.5)  # each is accepted meanwhile, its greenlet waiting for the request's bytes
        os.kill(worker, signal.SIGSTOP)
        try:
            for number, sock in enumerate(sockets):
                sock.sendall(stream_request(f"{tag}-{number}", chunks=1))
        finally:
            os.kill(worker, signal.SIGCONT)
        answers = read_all(sockets)
    finally:
        for sock in sockets:
            sock.close()
    assert all(split_answer(answer)[0] == 200 for answer in answers)
    records = sorted((fake.by_tag(f"{tag}-{number}") for number in range(count)), key=lambda r: r.received_at)
    warm_peers = {fake.by_tag(f"{tag}-warm-{number}").peer for number in range(count)}
    assert {record.peer for record in records} <= warm_peers  # none waited for a new upstream connection
    upstream_order = [int(record.header("x-fake-tag").rsplit("-", 1)[1]) for record in records]
    assert upstream_order == list(range(count)), " ".join(map(str, upstream_order))


def one_answer(sock: socket.socket) -> bytes:
    """One answer with a Content-Length, read off a kept-alive connection."""
    answer = b""
    for _ in range(100):
        if b"\r\n\r\n" in answer:
            _, headers, body = split_answer(answer)
            if len(body) >= int(headers["content-length"]):
                return answer
        piece = sock.recv(65536)
        if not piece:
            break
        answer += piece
    raise AssertionError(f"no whole answer: {answer[:300]!r}")


KEPT, JOINING = 16, 48  # kept-alive connections of the busy worker in the tests below, and new ones joining it
CHAT_REQUEST = json_post(CHAT, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                         {"Authorization": "Bearer sk-test"})


def kept_alive(relay) -> list[socket.socket]:
    """KEPT connections, each let in by the relay's running worker(s) with one request answered, kept alive."""
    kept = [socket.create_connection(("127.0.0.1", relay.port), timeout=10) for _ in range(KEPT)]
    for sock in kept:
        sock.sendall(CHAT_REQUEST)
        assert split_answer(one_answer(sock))[0] == 200
    return kept


def kept_answers_before_each_new(relay, worker: int, kept: list[socket.socket], ready: int) -> list[int]:
    """With `worker` stopped, `ready` requests are pipelined on each kept-alive connection and JOINING new
    connections send one each; then it is continued, so that all of it reaches it at once. For each new
    connection, in order, how many kept-alive answers had come before its own (every answer is waited for)."""
    os.kill(worker, signal.SIGSTOP)
    try:
        for sock in kept:
            sock.sendall(CHAT_REQUEST * ready)  # each connection has its next request ready at every turn
        new = [socket.create_connection(("127.0.0.1", relay.port), timeout=10) for _ in range(JOINING)]
        for sock in new:
            sock.sendall(CHAT_REQUEST)
    finally:
        os.kill(worker, signal.SIGCONT)
    answered = {sock: 0 for sock in kept + new}
    kept_ahead = {}  # new socket -> the kept-alive connections' answers received before its own
    with selectors.DefaultSelector() as selector:
        for sock in kept + new:
            selector.register(sock, selectors.EVENT_READ)
        received = {sock: b"" for sock in kept + new}
        deadline = time.monotonic() + 30
        while (len(kept_ahead) < len(new) or sum(answered[s] for s in kept) < ready * len(kept)) and \
                time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                sock = key.fileobj
                received[sock] += sock.recv(65536)
                answered[sock] = received[sock].count(b"HTTP/1.1 200 ")
                if sock in new and answered[sock] and sock not in kept_ahead:
                    kept_ahead[sock] = sum(answered[s] for s in kept)
    for sock in kept + new:
        sock.close()
    assert len(kept_ahead) == JOINING and all(answered[s] == ready for s in kept), answered
    return sorted(kept_ahead.values())


def test_new_connections_are_let_in_as_fast_as_kept_alive_ones_go_on(start_relay):
    """A worker busy with kept-alive connections lets new ones in as fast as those start requests (proxy/green.py):
    16 kept-alive connections with 12 requests each ready (pipelined), 48 new connections with one each, all
    reaching the worker at once. Every new one is answered before the kept-alive ones have two thirds of their
    answers; letting four in per turn of the loop, as before, answered the last new ones among the last (173).

    In the median of five rounds: on a loaded machine (the suite's other process, a busy upstream) about one
    round in fifteen let the last new one in after 129-163 answers, where the others took 25-127; under a fresh
    clone's whole suite two rounds of three once did (131), so three were too few to tell the rule."""
    relay = start_relay()
    ready = 12
    (worker,) = relay.worker_pids()
    rounds = [kept_answers_before_each_new(relay, worker, kept_alive(relay), ready) for _ in range(5)]
    assert statistics.median(kept_ahead[-1] for kept_ahead in rounds) < ready * KEPT * 2 / 3, rounds


def test_each_of_several_workers_accepts_a_few_new_connections_per_turn(start_relay):
    """With several workers gunicorn has each accept one new connection per turn of its loop; the relay's take
    four (proxy/green.py: accept_in_turns). One of 2 workers is stopped, so the other takes every connection:
    busy with 16 kept-alive connections that have 48 requests each ready, it is joined by 48 new ones at once.
    Every new one is answered before the kept-alive ones have two thirds of their answers; one per turn
    accepted the last after nearly all of them."""
    relay = start_relay(WEB_CONCURRENCY="2")
    busy, other = relay.worker_pids()
    ready = 48
    os.kill(other, signal.SIGSTOP)  # it accepts nothing meanwhile
    try:
        kept = kept_alive(relay)
        kept_ahead = kept_answers_before_each_new(relay, busy, kept, ready)
    finally:
        os.kill(other, signal.SIGCONT)
    assert kept_ahead[-1] < ready * KEPT * 2 / 3, kept_ahead
