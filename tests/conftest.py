"""Fixtures: a fake upstream on loopback, and the relay under real gunicorn pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.access_secrets import assert_no_key_in_logs
from tests.fake_upstream import FakeUpstream
from tests.fake_websocket import FakeWebSocketUpstream
from tests.redis_server import RedisServer
from tests.relay_server import RelayServer, stop_all


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeUpstream]:
    server = FakeUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def fake_ws() -> Iterator[FakeWebSocketUpstream]:
    server = FakeWebSocketUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory) -> Iterator[Path]:
    """Every relay's log lands here; at the end of the session, once the relays it served have stopped (the
    fixtures that start them depend on this one), no log may hold a key: an error at that teardown."""
    path = tmp_path_factory.mktemp("relay-logs")
    yield path
    assert_no_key_in_logs(path)


def upstream_env(fake: FakeUpstream) -> dict[str, str]:
    """Point every built-in route at the fake, each under its own path so tests can tell them apart."""
    return {
        "UPSTREAM_URL": fake.url,
        "ANTHROPIC_URL": fake.url + "/anthropic-upstream",
        "GEMINI_URL": fake.url + "/gemini-upstream",
    }


@pytest.fixture(scope="session")
def start_relay(fake, logs_dir) -> Iterator[Callable[..., RelayServer]]:
    """Start a relay with extra environment settings; all are stopped at the end of the session."""
    started: list[RelayServer] = []

    def start(**env: str) -> RelayServer:
        server = RelayServer(upstream_env(fake) | env, logs_dir / f"relay-{len(started)}.log")
        started.append(server)
        return server.start()

    yield start
    stop_all(started)


@pytest.fixture(scope="session")
def relay(start_relay) -> RelayServer:
    """The relay with its default settings (heartbeat shortened to keep tests quick)."""
    return start_relay(SSE_HEARTBEAT="1")


@pytest.fixture(scope="session")
def start_redis(tmp_path_factory) -> Iterator[Callable[[], RedisServer]]:
    """Start a fresh redis-server on its own port (call `.stop()` / `.start()` to take it down and up)."""
    started: list[RedisServer] = []

    def start() -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp("redis")).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(start_redis) -> RedisServer:
    """One Redis shared by the tests that only need a working server."""
    return start_redis()
