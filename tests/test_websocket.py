"""WebSockets through the relay under gunicorn: the Realtime API, the Responses API's WebSocket mode, Gemini Live.

Raw sockets first, for what a WebSocket library hides (a handshake with a bad key, a client that drops
without a close frame); then the `websockets` library and the official openai SDK, against a fake upstream
that speaks WebSocket (tests/fake_websocket.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import socket
import struct
import threading
import time

import pytest
import requests
from openai import OpenAI
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.access_secrets import make_key
from tests.fake_upstream import Request
from tests.fake_websocket import FakeWebSocketUpstream, WSRecord
from tests.relay_server import free_port
from tests.test_deploy_proxy import ForwardProxy, TLSFront, certificate  # noqa: F401 (a fixture)

TIMEOUT = 20  # seconds any socket or wait here may take: every loop ends

RELAY_KEY = make_key("relay-ws", "rk")
UPSTREAM_KEY = make_key("up-ws")
GEMINI_KEY = make_key("up-ws-gemini", "AIza")
OWN_KEY = make_key("own-ws")


def ws_env(fake_ws: FakeWebSocketUpstream) -> dict[str, str]:
    return {"UPSTREAM_URL": fake_ws.url, "GEMINI_URL": fake_ws.url + "/gemini-upstream"}


@pytest.fixture(scope="module")
def open_relay(start_relay, fake_ws):
    """Pass-through mode: the client's own key goes upstream."""
    return start_relay(**ws_env(fake_ws))


@pytest.fixture(scope="module")
def keyed_relay(start_relay, fake_ws):
    """Relay-key mode, with the server's own upstream keys and limits on paths and connections."""
    return start_relay(**ws_env(fake_ws), RELAY_KEYS=RELAY_KEY, OPENAI_API_KEY=UPSTREAM_KEY, GEMINI_API_KEY=GEMINI_KEY,
                       ALLOWED_PATHS="/v1/realtime,/v1/responses,/v1/echo*,/gemini/*", RATE_LIMIT="40/hour")


def ws_url(relay, target: str) -> str:
    return relay.url.replace("http://", "ws://") + target


def tagged(fake_ws: FakeWebSocketUpstream, tag: str) -> WSRecord:
    found = fake_ws.find(tag)
    assert len(found) == 1, f"{len(found)} WebSockets reached the upstream with {tag!r}"
    return found[0]


def wait_for(condition, seconds: float = TIMEOUT) -> float:
    """Wait until `condition()` is true; return how long it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, "timed out"
        time.sleep(0.02)
    return time.monotonic() - started


# -- raw sockets -------------------------------------------------------------------------------------------


def raw_handshake(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[socket.socket, bytes, bytes]:
    """Send a WebSocket handshake by hand; return the socket, the answer's head and what followed it."""
    fields = {"Host": "relay", "Upgrade": "websocket", "Connection": "Upgrade",
              "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(), "Sec-WebSocket-Version": "13",
              **(headers or {})}
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall((f"GET {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        assert piece, f"closed before an answer: {data!r}"
        data += piece
    head, _, rest = data.partition(b"\r\n\r\n")
    return sock, head, rest


def read_body(sock: socket.socket, head: bytes, rest: bytes) -> bytes:
    """The rest of a refusal's body, by its Content-Length."""
    length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
    while len(rest) < length:
        piece = sock.recv(65536)
        assert piece, "closed mid-body"
        rest += piece
    return rest


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked frame, as a client must send it (RFC 6455 section 5.2)."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return head + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


def read_frame(sock: socket.socket, buffered: bytes = b"") -> tuple[int, bytes]:
    """(opcode, payload) of one short unmasked frame from the server."""
    data = buffered
    while len(data) < 2 or len(data) < 2 + (data[1] & 0x7F):
        piece = sock.recv(65536)
        assert piece, "closed mid-frame"
        data += piece
    return data[0] & 0x0F, data[2 : 2 + (data[1] & 0x7F)]


def test_wrong_relay_key_is_a_401_before_any_upgrade(keyed_relay, fake_ws):
    for tag, headers in [("nokey", {}), ("wrongkey", {"Authorization": "Bearer rk-not-a-relay-key"}),
                         ("wrongproto", {"Sec-WebSocket-Protocol": "realtime, openai-insecure-api-key.rk-wrong"})]:
        sock, head, rest = raw_handshake(keyed_relay.port, f"/v1/realtime?tag={tag}", headers)
        rest = read_body(sock, head, rest)
        sock.close()
        assert head.startswith(b"HTTP/1.1 401 "), head
        assert b"upgrade: websocket" not in head.lower()
        assert json.loads(rest)["error"]["type"] == "authentication_error"
        assert fake_ws.find(f"tag={tag}") == []


def test_a_client_that_drops_without_a_close_frame_closes_the_upstream(open_relay, fake_ws):
    for tag, linger in [("drop-fin", False), ("drop-rst", True)]:
        sock, head, rest = raw_handshake(open_relay.port, f"/v1/echo?tag={tag}")
        assert head.startswith(b"HTTP/1.1 101 "), head
        sock.sendall(client_frame(b"ping me"))
        assert read_frame(sock, rest) == (0x1, b"ping me")
        record = tagged(fake_ws, tag)
        assert record.closed_at is None
        if linger:  # an abortive close: the client's machine resets the connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        assert wait_for(lambda record=record: record.closed_at is not None, 5) < 2.5


def test_the_upgrade_is_not_relayed_where_the_server_cannot_hand_over_the_socket(fake_ws):
    """A WSGI server that does not hand out the socket (Werkzeug's): a 426 in the OpenAI shape, nothing upstream."""
    from werkzeug.serving import make_server

    from app import create_app

    app = create_app({"UPSTREAM_URL": fake_ws.url})
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sock, head, rest = raw_handshake(server.server_port, "/v1/responses?tag=no-hijack",
                                         {"Authorization": "Bearer sk-x"})
        rest = read_body(sock, head, rest)
        sock.close()
    finally:
        server.shutdown()
    assert head.startswith(b"HTTP/1.1 426 "), head
    error = json.loads(rest)["error"]
    assert error["code"] == "websocket_unsupported" and "HTTP" in error["message"]
    assert fake_ws.find("tag=no-hijack") == []


# -- WebSocket clients --------------------------------------------------------------------------------------


def test_messages_both_ways_with_the_handshake_under_the_usual_header_rules(open_relay, fake_ws):
    headers = {"Authorization": f"Bearer {OWN_KEY}", "OpenAI-Beta": "responses_websockets=2026-02-06",
               "OpenAI-Safety-Identifier": "user-1", "X-Forwarded-For": "203.0.113.9", "Forwarded": "for=1.2.3.4",
               "X-Real-IP": "203.0.113.9"}
    with connect(ws_url(open_relay, "/v1/echo?tag=headers&a=%2F1&b"), additional_headers=headers,
                 open_timeout=TIMEOUT) as ws:
        for index in range(5):
            ws.send(f"text {index}")
            assert ws.recv(TIMEOUT) == f"text {index}"
            ws.send(bytes([index]) * 100)
            assert ws.recv(TIMEOUT) == bytes([index]) * 100
        answered = ws.response.headers
    record = tagged(fake_ws, "tag=headers")
    assert record.target == "/v1/echo?tag=headers&a=%2F1&b"  # path and query as received
    assert record.header("host") == fake_ws.url.removeprefix("http://")
    assert record.header("authorization") == f"Bearer {OWN_KEY}"
    assert record.header("openai-beta") == "responses_websockets=2026-02-06"
    assert record.header("openai-safety-identifier") == "user-1"
    assert record.header("upgrade") == "websocket" and record.header("connection") == "Upgrade"
    names = {name.lower() for name, _ in record.headers}
    assert not names & {"x-forwarded-for", "forwarded", "x-real-ip"}
    # Frames are not decoded: compression is agreed between the client and the upstream.
    assert "permessage-deflate" in record.header("sec-websocket-extensions")
    assert "permessage-deflate" in answered["Sec-WebSocket-Extensions"]
    assert answered["Server"].startswith("Python/") and "websockets" in answered["Server"]  # the upstream's own


def test_closes_travel_both_ways_promptly(open_relay, fake_ws):
    with connect(ws_url(open_relay, "/v1/echo?tag=upstream-closes"), open_timeout=TIMEOUT) as ws:
        ws.send("close 4000")
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(TIMEOUT)
        assert time.monotonic() - started < 2
        assert closed.value.rcvd.code == 4000 and closed.value.rcvd.reason == "closed by the upstream"

    ws = connect(ws_url(open_relay, "/v1/echo?tag=client-closes"), open_timeout=TIMEOUT)
    ws.send("hi")
    assert ws.recv(TIMEOUT) == "hi"
    ws.close(4001, "bye")
    record = tagged(fake_ws, "tag=client-closes")
    assert wait_for(lambda: record.closed_at is not None, 5) < 2
    assert ws.close_code == 4001  # the upstream's answer to the close came back through the relay


def test_an_upstream_refusal_comes_back_as_sent(open_relay, fake_ws):
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(open_relay, "/v1/responses?tag=refused"), open_timeout=TIMEOUT,
                additional_headers={"x-fake-ws-refuse": "403"})
    response = refused.value.response
    assert response.status_code == 403
    assert response.headers["x-fake-refused"] == "yes"
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.body)["error"]["code"] == "websocket_refused"
    assert len(fake_ws.find("tag=refused")) == 1


def test_one_mebibyte_messages_both_ways(open_relay):
    message = os.urandom(1 << 20)  # incompressible
    with connect(ws_url(open_relay, "/v1/echo?tag=large"), max_size=None, open_timeout=TIMEOUT) as ws:
        for _ in range(3):
            ws.send(message)
            assert ws.recv(TIMEOUT) == message
        ws.send("a" * (1 << 20))
        assert ws.recv(TIMEOUT) == "a" * (1 << 20)

    def logged() -> bool:  # the access line is written once the relay has closed both sides
        lines = re.findall(r"GET /v1/echo 101 \d+ms (\d+)B down (\d+)B up websocket", open_relay.log())
        return any(int(down) > 3 << 20 and int(up) > 3 << 20 for down, up in lines)

    wait_for(logged, 10)


def test_an_idle_websocket_is_cut_at_the_limit(start_relay, fake_ws):
    relay = start_relay(**ws_env(fake_ws), WEBSOCKET_IDLE_TIMEOUT="1.5")
    with connect(ws_url(relay, "/v1/echo?tag=busy"), open_timeout=TIMEOUT) as ws:
        for index in range(8):  # 0.4 s apart: never idle for 1.5 s, so never cut, over 3 s
            ws.send(str(index))
            assert ws.recv(TIMEOUT) == str(index)
            time.sleep(0.4)
    with connect(ws_url(relay, "/v1/echo?tag=idle"), open_timeout=TIMEOUT) as ws:
        ws.send("once")
        assert ws.recv(TIMEOUT) == "once"
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            ws.recv(TIMEOUT)
        assert 1.2 < time.monotonic() - started < 6
    record = tagged(fake_ws, "tag=idle")
    assert wait_for(lambda: record.closed_at is not None, 5) < 3


def test_an_idle_limit_of_zero_keeps_a_silent_websocket(start_relay, fake_ws):
    """0 is no limit (a zero socket timeout once closed every WebSocket at its first wait)."""
    relay = start_relay(**ws_env(fake_ws), WEBSOCKET_IDLE_TIMEOUT="0")
    with connect(ws_url(relay, "/v1/echo?tag=no-limit"), open_timeout=TIMEOUT) as ws:
        ws.send("first")
        assert ws.recv(TIMEOUT) == "first"
        time.sleep(2)  # longer than any limit the tunnel could take 0 for
        ws.send("after a silence")
        assert ws.recv(TIMEOUT) == "after a silence"
    record = tagged(fake_ws, "tag=no-limit")
    assert wait_for(lambda: record.closed_at is not None, 5) < 3  # the client's close still ends both sides


def test_a_client_that_stops_reading_is_cut_at_the_idle_limit(start_relay, fake_ws):
    """A client floods the echo and never reads a byte of it: the relay's write to the client makes no progress,
    the client's own writes then stall too, and the relay ends both sides at the limit, not at a socket timeout."""
    relay = start_relay(**ws_env(fake_ws), WEBSOCKET_IDLE_TIMEOUT="1.5")
    sock, head, _ = raw_handshake(relay.port, "/v1/echo?tag=stops-reading")
    assert head.startswith(b"HTTP/1.1 101 ")
    payload = b"x" * 65536
    frame = struct.pack("!BBQ", 0x82, 0x80 | 127, len(payload)) + b"\0\0\0\0" + payload  # a zero mask: as sent
    sock.settimeout(0.5)
    sent = 0
    with contextlib.suppress(TimeoutError):
        for _ in range(2048):  # at most 128 MiB: the loopback buffers both ways fill long before
            sock.sendall(frame)
            sent += 1
    stalled = time.monotonic()
    record = tagged(fake_ws, "tag=stops-reading")
    assert wait_for(lambda: record.closed_at is not None, 10) + (time.monotonic() - stalled) < 6, sent
    assert 8 < sent < 2048  # the echo did stall: more than its first frames went out, not all
    sock.close()


def test_a_write_that_waits_for_a_slow_reader_has_the_whole_limit(start_relay, fake_ws):
    """Each wait of a tunnel's direction has the whole idle limit, however much of it the waits before it used:
    after echoes 0.4 s apart (2.4 s of waiting, under a 3 s limit), the client stops reading for 1.2 s while a
    16 MiB echo comes back, so the relay's write to it waits that long. The direction's kept timer gave each
    wait only what the waits before it had left, and the write was cut, with the tunnel, after about 0.6 s."""
    relay = start_relay(**ws_env(fake_ws), WEBSOCKET_IDLE_TIMEOUT="3")
    sock, head, rest = raw_handshake(relay.port, "/v1/echo?tag=slow-reader")
    assert head.startswith(b"HTTP/1.1 101 ") and not rest
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # the echo backs up into the relay's write
    for index in range(6):
        sock.sendall(client_frame(str(index).encode()))
        assert read_frame(sock) == (0x1, str(index).encode())
        time.sleep(0.4)
    payload = os.urandom(16 << 20)
    frame = struct.pack("!BBQ", 0x82, 0x80 | 127, len(payload)) + b"\0\0\0\0" + payload  # a zero mask: as sent
    sender = threading.Thread(target=sock.sendall, args=(frame,), daemon=True)
    sender.start()
    time.sleep(1.2)  # not reading meanwhile
    expected = 10 + len(payload)  # the echo's head (0x82, 127, 8-byte length), then its payload
    echoed = bytearray()
    for _ in range(10_000):
        if len(echoed) >= expected:
            break
        piece = sock.recv(1 << 20)
        if not piece:
            break
        echoed += piece
    sender.join(TIMEOUT)
    assert len(echoed) == expected and echoed[10:] == payload, f"{len(echoed)} of {expected} bytes, then closed"
    sock.sendall(client_frame(b"still open"))
    assert read_frame(sock) == (0x1, b"still open")
    sock.close()


def test_five_hundred_websockets_at_once_on_one_worker(open_relay):
    count = 500

    async def main() -> None:
        async def one(index: int):
            ws = await async_connect(ws_url(open_relay, f"/v1/echo?tag=many-{index}"), open_timeout=60,
                                     compression=None, ping_interval=None)
            await ws.send(f"first {index}")
            assert await asyncio.wait_for(ws.recv(), 60) == f"first {index}"
            return ws

        sockets = []
        for start in range(0, count, 100):  # opened in batches, so the listen backlog is never the limit
            sockets += await asyncio.gather(*(one(index) for index in range(start, start + 100)))
        assert len(sockets) == count

        async def again(index: int, ws) -> None:  # every one still answers while all are open
            await ws.send(f"again {index}")
            assert await asyncio.wait_for(ws.recv(), 60) == f"again {index}"

        await asyncio.gather(*(again(index, ws) for index, ws in enumerate(sockets)))
        await asyncio.gather(*(ws.close() for ws in sockets))

    asyncio.run(asyncio.wait_for(main(), 240))
    assert len(open_relay.worker_pids()) == 1


# -- the SDK, browsers, Gemini -------------------------------------------------------------------------------


def test_openai_sdk_realtime_connect(open_relay, fake_ws):
    client = OpenAI(base_url=open_relay.url + "/v1", api_key=OWN_KEY, max_retries=0)
    with client.realtime.connect(model="gpt-realtime", extra_query={"tag": "sdk-realtime"}, max_retries=0) as conn:
        assert conn.recv().type == "session.created"
        conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "instructions": "be brief"})
        updated = conn.recv()
        assert updated.type == "session.updated" and updated.session.instructions == "be brief"
        conn.response.create()
        events = [conn.recv() for _ in range(5)]
    assert [event.type for event in events] == ["response.created", *["response.output_text.delta"] * 3,
                                                "response.done"]
    assert "".join(event.delta for event in events[1:4]) == "echo: hello"
    record = tagged(fake_ws, "tag=sdk-realtime")
    assert record.path == "/v1/realtime" and "model=gpt-realtime" in record.target
    assert record.header("authorization") == f"Bearer {OWN_KEY}"


def test_openai_sdk_responses_connect(open_relay, fake_ws):
    client = OpenAI(base_url=open_relay.url + "/v1", api_key=OWN_KEY, max_retries=0)
    with client.responses.connect(extra_query={"tag": "sdk-responses"}, max_retries=0) as conn:
        for turn in ("one", "two"):
            conn.response.create(model="gpt-5", input=turn)
            events = []
            while not events or events[-1].type != "response.completed":
                events.append(conn.recv())
                assert len(events) < 20
            assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == f"echo: {turn}"
            assert events[-1].response.output[0].content[0].text == f"echo: {turn}"
    assert tagged(fake_ws, "tag=sdk-responses").path == "/v1/responses"


def test_browser_handshake_with_the_relay_key_as_a_subprotocol(keyed_relay, fake_ws):
    offered = ["realtime", f"openai-insecure-api-key.{RELAY_KEY}"]
    with connect(ws_url(keyed_relay, "/v1/realtime?model=gpt-realtime&tag=browser"), subprotocols=offered,
                 origin="https://app.example", open_timeout=TIMEOUT) as ws:
        assert ws.subprotocol == "realtime"
        assert json.loads(ws.recv(TIMEOUT))["type"] == "session.created"
    record = tagged(fake_ws, "tag=browser")
    assert record.header("authorization") == f"Bearer {UPSTREAM_KEY}"  # the server's key, where OpenAI reads it
    assert record.header("sec-websocket-protocol") == "realtime"
    assert RELAY_KEY not in json.dumps([record.target, record.headers])


def test_relay_key_in_a_header_or_the_query_is_swapped_for_the_servers_key(keyed_relay, fake_ws):
    for tag, headers, query in [("hdr", {"Authorization": f"Bearer {RELAY_KEY}"}, ""),
                                ("xapi", {"x-api-key": RELAY_KEY}, ""), ("query", {}, f"&key={RELAY_KEY}")]:
        with connect(ws_url(keyed_relay, f"/v1/echo?tag=swap-{tag}{query}"), additional_headers=headers,
                     open_timeout=TIMEOUT) as ws:
            ws.send("hi")
            assert ws.recv(TIMEOUT) == "hi"
        record = tagged(fake_ws, f"tag=swap-{tag}")
        assert record.header("authorization") == f"Bearer {UPSTREAM_KEY}"
        assert RELAY_KEY not in json.dumps([record.target, record.headers])
        assert record.target == f"/v1/echo?tag=swap-{tag}"


def test_gemini_live_through_the_gemini_route_with_a_key_in_the_query(keyed_relay, open_relay, fake_ws):
    live = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
    for relay, key, tag in [(keyed_relay, RELAY_KEY, "gemini-keyed"), (open_relay, GEMINI_KEY, "gemini-own")]:
        with connect(ws_url(relay, f"/gemini{live}?key={key}&tag={tag}"), open_timeout=TIMEOUT) as ws:
            ws.send(json.dumps({"setup": {"model": "models/gemini-live-2.5-flash"}}))
            assert json.loads(ws.recv(TIMEOUT)) == {"setupComplete": {}}
            ws.send(json.dumps({"clientContent": {"turns": [{"role": "user", "parts": [{"text": "hi"}]}],
                                                  "turnComplete": True}}))
            parts = [json.loads(ws.recv(TIMEOUT))["serverContent"] for _ in range(4)]
        assert "".join(p["modelTurn"]["parts"][0]["text"] for p in parts[:3]) == "echo: hi"
        assert parts[3] == {"turnComplete": True}
        record = tagged(fake_ws, f"tag={tag}")
        assert record.path == f"/gemini-upstream{live}"
        if relay is keyed_relay:  # the relay key leaves the query; the server's key goes where Google reads it
            assert record.target == f"/gemini-upstream{live}?tag={tag}"
            assert record.header("x-goog-api-key") == GEMINI_KEY
        else:
            assert record.target == f"/gemini-upstream{live}?key={GEMINI_KEY}&tag={tag}"


def test_allowed_paths_and_rate_limit_apply_to_the_handshake(start_relay, fake_ws):
    relay = start_relay(**ws_env(fake_ws), RELAY_KEYS=RELAY_KEY, OPENAI_API_KEY=UPSTREAM_KEY,
                        ALLOWED_PATHS="/v1/echo*", RATE_LIMIT="3/hour")
    auth = {"Authorization": f"Bearer {RELAY_KEY}"}
    sock, head, _ = raw_handshake(relay.port, "/v1/realtime?tag=not-allowed", auth)
    sock.close()
    assert head.startswith(b"HTTP/1.1 403 ") and fake_ws.find("tag=not-allowed") == []
    with connect(ws_url(relay, "/v1/echo?tag=counted"), additional_headers=auth, open_timeout=TIMEOUT) as ws:
        for index in range(10):  # messages are not requests: one connection is one count
            ws.send(str(index))
            assert ws.recv(TIMEOUT) == str(index)
    for _ in range(2):
        with connect(ws_url(relay, "/v1/echo?tag=counted-more"), additional_headers=auth, open_timeout=TIMEOUT):
            pass
    with pytest.raises(InvalidStatus) as limited:
        connect(ws_url(relay, "/v1/echo?tag=over-limit"), additional_headers=auth, open_timeout=TIMEOUT)
    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"]
    assert fake_ws.find("tag=over-limit") == []


def test_a_websocket_counts_as_one_request_of_its_relay_key_and_in_the_open_websockets_gauge(start_relay, fake_ws):
    """Usage per relay key (issue 14): a WebSocket session is one request, its tokens unknown (frames pass
    undecoded), and /metrics shows it open while it lasts."""
    admin = make_key("ws-admin", "adm")
    relay = start_relay(**ws_env(fake_ws), RELAY_KEYS=f"voice:{RELAY_KEY}", OPENAI_API_KEY=UPSTREAM_KEY,
                        METRICS="1", ADMIN_KEY=admin)
    auth = {"Authorization": f"Bearer {RELAY_KEY}"}

    def open_websockets() -> float:
        text = requests.get(relay.url + "/metrics", headers={"Authorization": f"Bearer {admin}"}, timeout=10).text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("relay_open_websockets"))

    with connect(ws_url(relay, "/v1/echo?tag=counted-usage"), additional_headers=auth, open_timeout=TIMEOUT) as ws:
        for index in range(3):
            ws.send(f"message {index}")
            assert ws.recv(TIMEOUT) == f"message {index}"
        assert open_websockets() == 1
    wait_for(lambda: open_websockets() == 0)
    usage = requests.get(relay.url + "/pro/usage", headers=auth, timeout=10).json()["data"]
    assert (usage["key"], usage["requests"], usage["unknown"], usage["total_tokens"]) == ("voice", 1, 1, 0)
    assert usage["by_route"] == {"v1": {"1xx": 1}}


# -- the Realtime API's WebRTC and SIP setup calls are plain HTTP -------------------------------------------------

SDP_OFFER = b"v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n" \
            b"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n"


async def realtime_calls(req: Request) -> None:
    """Answer an SDP offer as the Realtime API does: 201, application/sdp, the call's id in Location."""
    answer = b"v=0\r\no=- answer-to " + str(len(req.record.body)).encode() + b" 2 IN IP4 127.0.0.1\r\ns=-\r\n"
    await req.send(201, [("Content-Type", "application/sdp"), ("Location", "/v1/realtime/calls/rtc_fake")], answer)


def test_realtime_webrtc_and_client_secret_calls_pass_byte_for_byte(relay, fake):
    fake.route("/realtime/calls", realtime_calls)
    r = requests.post(relay.url + "/v1/realtime/calls?model=gpt-realtime", data=SDP_OFFER, timeout=TIMEOUT,
                      headers={"Authorization": f"Bearer {OWN_KEY}", "Content-Type": "application/sdp",
                               "x-fake-tag": "sdp-offer"})
    sent = fake.by_tag("sdp-offer")
    assert sent.body == SDP_OFFER and sent.header("content-type") == "application/sdp"
    assert r.status_code == 201 and r.headers["Content-Type"] == "application/sdp"
    assert r.headers["Location"] == "/v1/realtime/calls/rtc_fake"
    assert r.content == b"v=0\r\no=- answer-to %d 2 IN IP4 127.0.0.1\r\ns=-\r\n" % len(SDP_OFFER)

    body = json.dumps({"session": {"type": "realtime", "model": "gpt-realtime"}}).encode()
    r = requests.post(relay.url + "/v1/realtime/client_secrets", data=body, timeout=TIMEOUT,
                      headers={"Authorization": f"Bearer {OWN_KEY}", "Content-Type": "application/json",
                               "x-fake-tag": "client-secret"})
    assert r.status_code == 200 and fake.by_tag("client-secret").body == body


def test_wss_upstream_through_the_outbound_proxy_tunnel(start_relay, fake_ws, certificate):  # noqa: F811
    """`HTTPS_PROXY`: the WebSocket goes through a CONNECT tunnel, TLS checked with `REQUESTS_CA_BUNDLE`."""
    front = TLSFront(*certificate, target_port=fake_ws.port).start()
    proxy = ForwardProxy().start()
    try:
        relay = start_relay(UPSTREAM_URL=f"https://localhost:{front.port}", REQUESTS_CA_BUNDLE=str(certificate[0]),
                            HTTPS_PROXY=proxy.url("relay:proxy-secret"), NO_PROXY="", no_proxy="")
        with connect(ws_url(relay, "/v1/echo?tag=tunnel"), open_timeout=TIMEOUT) as ws:
            ws.send("through the tunnel")
            assert ws.recv(TIMEOUT) == "through the tunnel"
        assert [(s.method, s.target) for s in proxy.seen] == [("CONNECT", f"localhost:{front.port}")]
        credentials = base64.b64encode(b"relay:proxy-secret").decode()
        assert proxy.seen[0].headers["Proxy-Authorization"] == f"Basic {credentials}"
        assert tagged(fake_ws, "tag=tunnel").header("host") == f"localhost:{front.port}"
    finally:
        proxy.stop()
        front.stop()
