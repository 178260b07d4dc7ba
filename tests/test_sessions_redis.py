"""What only the Redis store does: one history for many relay processes, hashed keys, and Redis going away.

(The cases both stores share run on Redis too, in test_sessions.py.)
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests

from proxy.redis_client import SKIP_FOR
from tests.relay_server import free_port
from tests.session_client import SessionClient, new_session_id, sent_messages, turn_pairs


@pytest.fixture(scope="module")
def two_relays(start_relay, redis_server):
    """Two relay processes on one Redis; the second with two workers of its own."""
    first = start_relay(REDIS_URL=redis_server.url, SESSION_MAX_MESSAGES="40")
    second = start_relay(REDIS_URL=redis_server.url, SESSION_MAX_MESSAGES="40", WEB_CONCURRENCY="2")
    return first, second


def test_one_history_shared_by_two_relay_processes(two_relays, fake):
    first, second = two_relays
    key = SessionClient(first.url).key
    on_first, on_second = SessionClient(first.url, key), SessionClient(second.url, key)
    sid = new_session_id()
    assert on_first.chat(sid, "one", tag=f"{sid}-1").status_code == 200
    assert on_second.chat(sid, "two", tag=f"{sid}-2").status_code == 200
    assert on_first.chat(sid, "three", tag=f"{sid}-3").status_code == 200
    assert sent_messages(fake, f"{sid}-2") == [*turn_pairs("one"), {"role": "user", "content": "two"}]
    assert sent_messages(fake, f"{sid}-3") == [*turn_pairs("one", "two"), {"role": "user", "content": "three"}]
    assert on_second.messages(sid) == turn_pairs("one", "two", "three")
    assert on_second.forget(sid).status_code == 200
    assert on_first.messages(sid) is None


def test_concurrent_turns_from_two_processes_are_serialized(two_relays, fake):
    first, second = two_relays
    key = SessionClient(first.url).key
    clients = [SessionClient(first.url, key), SessionClient(second.url, key)]
    sid = new_session_id()
    contents = [f"p{index:02d}" for index in range(20)]

    def turn(index: int) -> int:
        return clients[index % 2].chat(sid, contents[index], tag=f"{sid}-{index}").status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        assert list(pool.map(turn, range(20))) == [200] * 20
    stored = clients[0].messages(sid)
    users = [message["content"] for message in stored[0::2]]
    assert sorted(users) == contents
    assert stored == turn_pairs(*users)
    seen = sorted(len(sent_messages(fake, f"{sid}-{index}")) for index in range(20))
    assert seen == list(range(1, 40, 2))


def test_several_workers_on_redis_do_not_warn(two_relays):
    assert "sessions are per process" not in two_relays[1].log()


def test_redis_holds_no_key_in_clear_and_expires_sessions(two_relays, redis_server):
    client = SessionClient(two_relays[0].url)
    sid = new_session_id()
    assert client.chat(sid, "hello").status_code == 200
    store = redis.Redis.from_url(redis_server.url)
    digest = hashlib.sha256(client.key.encode()).hexdigest()
    names = [name for name in store.scan_iter(count=1000) if sid.encode() in name]
    assert names == [f"relay:session:{{{digest}:{sid}}}".encode()]  # the lock is gone once the turn ended
    assert client.key.encode() not in names[0] and client.key.encode() not in store.get(names[0])
    assert 0 < store.pttl(names[0]) <= 1800 * 1000
    for name in store.scan_iter(count=1000):
        assert b"sk-test-" not in name


@pytest.mark.parametrize("variable", ["SESSION_STORE", "KV_URL"])
def test_redis_is_chosen_by_session_store_or_kv_url(start_relay, redis_server, variable):
    relay = start_relay(**{variable: redis_server.url})
    client = SessionClient(relay.url)
    sid = new_session_id()
    assert client.chat(sid, "stored in redis").status_code == 200
    store = redis.Redis.from_url(redis_server.url)
    assert any(sid.encode() in name for name in store.scan_iter(count=1000))


def _relay_still_relays(relay) -> None:
    r = requests.post(relay.url + "/v1/chat/completions", headers={"Authorization": "Bearer sk-test-relay"},
                      json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "echo: hi"
    assert requests.get(relay.url + "/healthz", timeout=30).status_code == 200


def _assert_store_down(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["code"] == 503 and response.json()["data"] is None
    assert "session store is unavailable" in response.json()["message"]


def test_redis_stopped_mid_run(start_relay, start_redis, fake):
    server = start_redis()
    relay = start_relay(REDIS_URL=server.url)
    client = SessionClient(relay.url)
    sid = new_session_id()
    assert client.chat(sid, "before").status_code == 200

    server.stop()
    calls = len(fake.find("/chat/completions"))
    _assert_store_down(client.chat(sid, "while down"))
    _assert_store_down(client.chat(sid, "while down", stream=True))
    _assert_store_down(client.history(sid))
    _assert_store_down(client.forget(sid))
    assert len(fake.find("/chat/completions")) == calls  # no upstream call made for a turn that can't be kept
    _relay_still_relays(relay)

    server.start()  # an empty Redis on the same port: the relay reconnects by itself, once its skip is over
    time.sleep(SKIP_FOR)
    r = client.chat(sid, "after", tag=f"{sid}-after")
    assert r.status_code == 200, r.text
    assert sent_messages(fake, f"{sid}-after") == [{"role": "user", "content": "after"}]
    assert client.messages(sid) == turn_pairs("after")


def test_relay_starts_and_relays_while_redis_is_down(start_relay):
    relay = start_relay(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    _relay_still_relays(relay)
    _assert_store_down(SessionClient(relay.url).chat(new_session_id(), "no store"))
