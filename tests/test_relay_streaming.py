"""Event streams pass chunk by chunk, stay alive when silent, and end the way the upstream ended them."""

from __future__ import annotations

import json
import socket
import threading
import time
import zlib

import pytest
import requests

from tests.raw_http import open_stream

CHAT = "/v1/chat/completions"


def stream_body(content: str = "hello world") -> dict:
    return {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": content}]}


def read_events(response: requests.Response) -> list[tuple[int, bytes]]:
    """(arrival time in ns, raw bytes) for each piece the client receives, as it receives it."""
    pieces = []
    while piece := response.raw.read1(65536, decode_content=False):  # what has arrived, whatever the framing
        pieces.append((time.monotonic_ns(), piece))
    return pieces


def sent_times(body: bytes) -> list[int]:
    return [int(json.loads(line[6:])["sent_ns"]) for line in body.split(b"\n") if line.startswith(b'data: {')]


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_chunks_arrive_as_the_upstream_sends_them(relay, framing):
    headers = {"x-fake-chunks": "10", "x-fake-delay": "0.1", "x-fake-framing": framing}
    with requests.post(relay.url + CHAT, json=stream_body(), headers=headers, stream=True, timeout=10) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert response.headers["Cache-Control"] == "no-cache"
        pieces = []
        for piece in response.iter_content(chunk_size=None):
            pieces.append((time.monotonic_ns(), piece))
    body = b"".join(piece for _, piece in pieces)
    sent = sent_times(body)
    assert len(sent) == 10
    assert body.endswith(b"data: [DONE]\n\n")
    # The first chunk was in the client's hands long before the upstream sent the last one...
    assert pieces[0][0] < sent[-1] - 500_000_000
    # ...and the chunks reached the client spread out, not in one burst at the end.
    assert len(pieces) >= 5
    assert pieces[-1][0] - pieces[0][0] > 500_000_000


def test_heartbeat_on_a_silent_stream_only_between_events(relay):
    # SSE_HEARTBEAT=1 on this relay; the upstream pauses 2.5 s after the first event, then
    # 2.5 s in the middle of the second event: heartbeats may only appear in the first pause.
    headers = {"x-fake-chunks": "3", "x-fake-pause": "2.5"}
    with requests.post(relay.url + CHAT, json=stream_body(), headers=headers, stream=True, timeout=20) as response:
        body = b"".join(piece for _, piece in read_events(response))
    events = body.split(b"\n\n")
    assert 2 <= events.count(b": keep-alive") <= 3, body.decode()  # one per second of the 2.5 s: no more
    data_events = [event for event in events if event.startswith(b"data: ")]
    assert len(data_events) == 4  # 3 chunks + [DONE], none of them broken by a comment

    headers["x-fake-pause-mid-event"] = "1"
    with requests.post(relay.url + CHAT, json=stream_body(), headers=headers, stream=True, timeout=20) as response:
        body = b"".join(piece for _, piece in read_events(response))
    # The only silence was inside the second event: no heartbeat at all, and every event intact.
    assert b": keep-alive" not in body, body.decode()  # the whole body: where the silences fell
    data_events = [event for event in body.split(b"\n\n") if event]
    assert len(data_events) == 4
    assert [json.loads(e[6:])["choices"][0]["index"] for e in data_events[:3]] == [0, 0, 0]


def test_no_heartbeat_in_a_stream_that_is_never_silent_for_the_interval(relay):
    """SSE_HEARTBEAT=1, and events 0.3 s apart for 2.7 s: no silence lasts a second, so no comment. The wait for
    each event is timed by one timer per answer, which gave each wait only what the waits before it had left:
    a heartbeat came after 0.1-0.2 s of silence about once a second, and after `data: [DONE]` now and then."""
    headers = {"x-fake-chunks": "10", "x-fake-delay": "0.3"}
    with requests.post(relay.url + CHAT, json=stream_body(), headers=headers, stream=True, timeout=20) as response:
        body = b"".join(piece for _, piece in read_events(response))
    events = [event for event in body.split(b"\n\n") if event]
    assert b": keep-alive" not in events, body.decode()
    assert len(events) == 11 and events[-1] == b"data: [DONE]"


@pytest.mark.parametrize("framing", [{"x-fake-framing": "length"}, {"x-fake-gzip": "1"}], ids=["length", "gzip"])
def test_no_heartbeat_in_a_stream_with_a_content_length_or_coding(relay, framing):
    """A comment in such a body would break its declared length or its compressed bytes: it goes unchanged.
    (A gzip stream flushed per event never ends in a blank line, so the event-boundary rule kept it whole already.)"""
    headers = {"x-fake-chunks": "3", "x-fake-pause": "1.5", "Accept-Encoding": "gzip"} | framing
    with requests.post(relay.url + CHAT, json=stream_body(), headers=headers, stream=True, timeout=20) as response:
        arrivals = read_events(response)  # as sent, not decoded
    raw = b"".join(piece for _, piece in arrivals)
    body = zlib.decompress(raw, wbits=31) if "x-fake-gzip" in framing else raw
    events = [event for event in body.split(b"\n\n") if event]
    assert len(events) == 4 and events[-1] == b"data: [DONE]"  # no comment, nothing cut
    assert arrivals[-1][0] - arrivals[0][0] > 1_000_000_000  # still streamed: the first event came before the pause


def test_upstream_drop_truncates_the_client_stream(relay):
    headers = {"x-fake-chunks": "6", "x-fake-delay": "0.05", "x-fake-drop-after": "3"}
    with (
        requests.post(relay.url + CHAT, json=stream_body(), headers=headers, stream=True, timeout=10) as response,
        pytest.raises(requests.exceptions.ChunkedEncodingError),
    ):
        for _ in response.iter_content(chunk_size=None):
            pass


def test_upstream_drop_on_a_close_delimited_stream_is_not_a_clean_end(relay):
    """With no framing to break, the relay's chunked response to the client must still lack its last chunk."""
    headers = {"x-fake-chunks": "6", "x-fake-delay": "0.05", "x-fake-drop-after": "3", "x-fake-framing": "close"}
    raw = raw_post(relay.port, CHAT, json.dumps(stream_body()).encode(), headers)
    assert b"Transfer-Encoding: chunked" in raw.split(b"\r\n\r\n", 1)[0]
    # A close-delimited body has no end marker: a drop looks like an end, to the relay as to any
    # client of the upstream. What arrived is passed on, and nothing is invented.
    assert raw.count(b"data: {") == 3
    assert b"[DONE]" not in raw


def raw_post(port: int, path: str, body: bytes, headers: dict[str, str], timeout: float = 10) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode() + body)
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    return data


def seconds_until_the_relay_hangs_up(relay, fake, headers: dict[str, str], limit: float) -> float:
    """Open a stream, leave after its first event, and time how long the upstream stays connected."""
    sock, _ = open_stream(relay.port, CHAT, stream_body(), headers)
    sock.close()
    left_at = time.monotonic()
    record = fake.by_tag(headers["x-fake-tag"])
    while record.client_closed_at is None and time.monotonic() < left_at + limit:
        time.sleep(0.05)
    assert record.client_closed_at is not None, "the relay kept reading from the upstream"
    assert not record.completed
    time.sleep(0.3)
    assert "Traceback" not in relay.log()
    return record.client_closed_at - left_at


def test_client_disconnect_closes_the_upstream(relay, fake):
    """A client that leaves mid-stream: the relay hangs up on the upstream at its next write."""
    headers = {"x-fake-chunks": "100", "x-fake-delay": "0.1", "x-fake-tag": "leaver"}
    assert seconds_until_the_relay_hangs_up(relay, fake, headers, limit=5) < 2.5


def test_client_disconnect_during_silence_is_noticed_at_the_heartbeat(relay, fake):
    # The heartbeat is 1 s on this relay; the upstream would stay silent for 20 s.
    headers = {"x-fake-chunks": "3", "x-fake-pause": "20", "x-fake-tag": "silent-leaver"}
    assert seconds_until_the_relay_hangs_up(relay, fake, headers, limit=8) < 5


def test_200_concurrent_streams_all_complete(relay):
    results: list[bytes | Exception] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        headers = {"x-fake-chunks": "5", "x-fake-delay": "0.2"}
        try:
            with requests.post(relay.url + CHAT, json=stream_body(f"n{index}"), headers=headers, timeout=60) as r:
                outcome = r.content
        except Exception as exc:  # recorded and reported below
            outcome = exc
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors[:3]
    assert len(results) == 200

    def whole(body: bytes) -> bool:
        return body.endswith(b"data: [DONE]\n\n") and body.count(b"data: {") == 5

    unfinished = [body[-300:] for body in results if not whole(body)]
    assert not unfinished, (len(unfinished), unfinished[:3])  # the end of each, to tell what went wrong
    # Served at the same time, not one after another (200 x 0.8 s would be minutes).
    assert time.monotonic() - started < 30
