"""A TLS Redis with a self-signed certificate, as Heroku's add-on serves: REDIS_TLS_VERIFY=0 makes it usable."""

from __future__ import annotations

import pytest

from proxy.redis_client import redis_client
from tests.redis_server import RedisServer
from tests.session_client import SessionClient, new_session_id


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis-tls"), tls=True).start()
    yield server
    server.stop()


def test_sessions_and_limits_on_a_self_signed_tls_redis(start_relay, tls_redis):
    relay = start_relay(REDIS_URL=tls_redis.url, REDIS_TLS_VERIFY="0", RATE_LIMIT="2/minute")
    client = SessionClient(relay.url)
    sid = new_session_id()
    answers = [client.chat(sid, f"over tls {n}") for n in range(3)]  # RATE_LIMIT counts each turn
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].json()["data"] == "echo: over tls 0"
    assert answers[1].json()["data"] == "echo: over tls 1"
    stored = redis_client(tls_redis.url, verify_tls=False)
    assert any(key.startswith(b"relay:session:") for key in stored.keys("*"))
    assert any(key.startswith(b"relay:ratelimit") for key in stored.keys("*"))


def test_the_certificate_is_checked_by_default(start_relay, tls_redis):
    relay = start_relay(REDIS_URL=tls_redis.url)
    answer = SessionClient(relay.url).chat(new_session_id(), "hi")
    assert answer.status_code == 503
    assert answer.json()["data"] is None
