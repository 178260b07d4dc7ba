"""A pooled upstream connection is not reused once it has been idle longer than the upstream keeps it, and
the pool closes the ones past that limit (proxy/idle.py).

Every server, load balancer and NAT gateway on the way drops an idle keep-alive connection after its own
time: Cloudflare (in front of OpenAI) at 400 s, AWS NAT gateways at 350 s, Azure's load balancers at 4 min,
AWS's and nginx's at 60 s, uvicorn and Node at 5 s. A request sent as that happens meets a closed connection
(the relay never sends a request twice, so its client gets a 502) or, where a middlebox dropped it silently,
no answer at all (a 504 after `UPSTREAM_READ_TIMEOUT`). The upstream here models that moment exactly: a
request that reaches a connection idle for `drops_after` seconds or more is the one its timer met; the
connection is closed, or left silent, instead of answered.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import requests

from proxy import idle
from proxy.idle import IdleConnections, announced_idle
from tests.raw_http import read_head
from tests.test_deploy_vercel import NODE

KEY = {"Authorization": "Bearer sk-test"}


class DroppingUpstream:
    """Keep-alive answers (after `delay` s, with `hint` as a `Keep-Alive` header if given); a request on a
    connection idle for `drops_after` s or more is not answered: the connection is closed, or left silent."""

    def __init__(self, drops_after: float, silent: bool = False, hint: str = "", delay: float = 0.0) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.drops_after, self.silent, self.delay = drops_after, silent, delay
        extra = f"Keep-Alive: {hint}\r\n" if hint else ""
        self.answer = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}Content-Length: 2\r\n\r\n{{}}"
        self.connections = 0
        self.closed_by_relay: list[float] = []  # when the relay closed an idle connection (end of file seen)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        for _ in range(200):
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._keep, args=(conn,), daemon=True).start()

    def _keep(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(15)
            idle_since = None
            for _ in range(100):
                try:
                    head = read_head(conn)
                except OSError:
                    return
                if b"\r\n\r\n" not in head:  # the relay closed it
                    self.closed_by_relay.append(time.monotonic())
                    return
                if idle_since is not None and time.monotonic() - idle_since >= self.drops_after:
                    if self.silent:  # a middlebox that dropped it: nothing comes back, until the relay gives up
                        with contextlib.suppress(OSError):
                            conn.recv(65536)
                    return
                time.sleep(self.delay)
                conn.sendall(self.answer.encode())
                idle_since = time.monotonic()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def upstream_of(start_relay):
    """A relay (its settings as keyword arguments) in front of a `DroppingUpstream` (its own, as a dict)."""
    made: list[DroppingUpstream] = []

    def start(upstream: dict, **env: str):
        made.append(DroppingUpstream(**upstream))
        relay = start_relay(UPSTREAM_URL=f"http://127.0.0.1:{made[-1].port}", UPSTREAM_READ_TIMEOUT="3", **env)
        return relay, made[-1]

    yield start
    for upstream in made:
        upstream.close()


def _get(relay) -> int:
    return requests.get(relay.url + "/v1/models", headers=KEY, timeout=10).status_code


@pytest.mark.parametrize("silent", [False, True], ids=["closed", "silent"])
def test_a_connection_idle_past_the_limit_is_not_reused(upstream_of, silent):
    relay, upstream = upstream_of({"drops_after": 1.5, "silent": silent}, UPSTREAM_IDLE_TIMEOUT="1")
    assert _get(relay) == 200
    time.sleep(0.3)
    assert _get(relay) == 200
    assert upstream.connections == 1  # kept alive while under the limit
    time.sleep(1.7)  # past the relay's limit and the upstream's
    assert _get(relay) == 200  # before: 502 (closed) or, after 3 s, 504 (silent)
    assert upstream.connections == 2


def test_the_upstreams_keep_alive_hint_is_kept(upstream_of):
    """Node and others announce their idle limit (`Keep-Alive: timeout=5`); the relay stops reusing a connection
    a second before it, whatever its own limit (50 s by default)."""
    relay, upstream = upstream_of({"drops_after": 2.0, "hint": "timeout=2, max=1000"})
    assert _get(relay) == 200
    time.sleep(0.3)
    assert _get(relay) == 200
    assert upstream.connections == 1
    time.sleep(1.4)  # past the hint less a second, short of the upstream's own limit
    assert _get(relay) == 200
    assert upstream.connections == 2
    time.sleep(2.2)  # past the upstream's limit
    assert _get(relay) == 200
    assert upstream.connections == 3


def test_idle_connections_past_the_limit_are_closed(upstream_of):
    """After a burst the pool holds a connection per request that was in flight; those past the limit are closed
    at the next request's end, not kept (their file descriptors and buffers) until reused."""
    relay, upstream = upstream_of({"drops_after": 60, "delay": 0.5}, UPSTREAM_IDLE_TIMEOUT="1")
    with ThreadPoolExecutor(12) as pool:
        assert list(pool.map(lambda _: _get(relay), range(12))) == [200] * 12
    assert upstream.connections == 12
    time.sleep(1.5)
    assert _get(relay) == 200
    deadline = time.monotonic() + 3
    while len(upstream.closed_by_relay) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(upstream.closed_by_relay) == 12  # 11 in the pool, and the one taken and found too old
    assert upstream.connections == 13


@pytest.mark.parametrize(("header", "seconds"), [
    ("timeout=5, max=1000", 5.0), ("max=100, timeout=3", 3.0), ("Timeout=7", 7.0), ('timeout="9"', 9.0),
    ("timeout=5.5", None), ("timeout=x", None), ("notimeout=5", None), ("max=10", None), ("", None), (None, None),
])
def test_the_announced_idle_time_is_read_from_keep_alive(header, seconds):
    assert announced_idle(header) == seconds


class _Connection:
    def __init__(self, announced: float | None = None) -> None:
        self.announced_idle, self.closed = announced, False

    def close(self) -> None:
        self.closed = True


def test_idle_connections_get_their_time_and_are_closed_past_it(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(idle, "time", SimpleNamespace(monotonic=lambda: now[0]))
    places = IdleConnections.replacing(queue.LifoQueue(4), limit=10)
    places.queue = [None] * 4
    old, hinted, soon = _Connection(), _Connection(announced=3), _Connection(announced=0.5)
    for conn in (places.get(block=False), places.get(block=False), places.get(block=False)):
        assert conn is None  # empty places: urllib3 makes a connection
    places.put(old, block=False)
    places.put(hinted, block=False)
    assert (old.idle_until, hinted.idle_until) == (110.0, 102.0)  # the announced 3 s, less a second
    now[0] = 100.5  # within a second of the last look: no sweep
    places.put(soon, block=False)
    assert soon.idle_until == 100.5 and not soon.closed
    assert places.get(block=False) is soon and soon.closed  # taken past its time: closed, for urllib3 to reopen
    places.put(soon, block=False)
    now[0] = 102.0
    places.put(places.get(block=False), block=False)  # a request's put, a second after the last look
    assert places.queue == [None, old, None, None] and hinted.closed and not old.closed
    now[0] = 110.0
    assert [places.get(block=False), places.get(block=False)] == [None, None]
    assert places.get(block=False) is old and old.closed


def test_no_limit_of_the_relays_own_keeps_the_announced_one():
    places = IdleConnections(2, limit=0)
    places.put(_Connection(), block=False)
    places.put(_Connection(announced=5), block=False)
    assert [conn.idle_until - time.monotonic() < 5 for conn in places.queue] == [False, True]


NODE_SERVER = """
const http = require("http");
let connections = 0;
const server = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => {
    res.setHeader("Content-Type", "application/json");
    res.end(JSON.stringify({connections}));
  });
});
server.on("connection", () => { connections += 1; });
server.keepAliveTimeout = 2000;  // Node's default is 5000; it announces it: "Keep-Alive: timeout=2"
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
setTimeout(() => process.exit(0), 60000);
"""


def test_a_real_node_upstreams_announced_time_is_kept(start_relay):
    """Node's own HTTP server (the pinned Node.js), whose announced idle time the relay keeps to."""
    node = subprocess.Popen([str(NODE), "-e", NODE_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(node.stdout.readline())
        relay = start_relay(UPSTREAM_URL=f"http://127.0.0.1:{port}")

        def connections() -> int:
            answer = requests.get(relay.url + "/v1/models", headers=KEY, timeout=10)
            assert answer.status_code == 200
            return answer.json()["connections"]

        assert connections() == 1
        time.sleep(0.3)
        assert connections() == 1  # reused
        time.sleep(1.4)  # past the announced 2 s less a second: Node still keeps it, the relay does not reuse it
        assert connections() == 2
    finally:
        node.kill()
        node.wait()
