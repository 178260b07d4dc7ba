"""The session package's parts on their own: trimming, the stream reader, the stores' locks (Redis for real)."""

from __future__ import annotations

import json
import threading
import time

import pytest
import redis

from app import create_app
from proxy.settings import Settings, SettingsError
from sessions import redis_store
from sessions.events import ReplyCollector
from sessions.history import Session, trim
from sessions.open import open_store
from sessions.redis_store import RedisStore, session_key
from sessions.store import MemoryStore, SessionBusy, StoreUnavailable


def pairs(*lengths: int) -> list[dict[str, str]]:
    """User/assistant pairs whose contents have these lengths (user, reply, user, reply...)."""
    return [{"role": "user" if index % 2 == 0 else "assistant", "content": str(index % 10) * length}
            for index, length in enumerate(lengths)]


@pytest.mark.parametrize("lengths,max_messages,max_chars,kept", [
    ((1, 1, 1, 1), 4, 100, 4),        # within both limits: nothing dropped
    ((1, 1, 1, 1, 1, 1), 4, 100, 4),  # too many: the oldest turn goes
    ((1, 1, 1, 1, 1, 1), 5, 100, 4),  # an odd limit still drops whole turns
    ((10, 10, 10, 10), 20, 25, 2),    # too long: the oldest turn goes
    ((10, 10, 10, 10), 20, 40, 4),    # exactly at the limit: kept
    ((30, 30), 20, 50, 0),            # one turn over the limit on its own is not kept
    ((1, 1), 0, 100, 0),              # no history at all
])
def test_trim_drops_the_oldest_whole_turns(lengths, max_messages, max_chars, kept):
    messages = pairs(*lengths)
    assert trim(messages, max_messages, max_chars) == messages[len(messages) - kept:]


def test_session_keeps_its_system_prompt_and_round_trips_as_json():
    session = Session("Réponds en français.", tuple(pairs(3, 3)))
    after = session.with_turn(session.system, "你好", "bonjour", max_messages=2, max_chars=100)
    assert after.system == "Réponds en français."
    assert after.messages == ({"role": "user", "content": "你好"}, {"role": "assistant", "content": "bonjour"})
    assert Session.loads(after.dumps()) == after
    assert "你好" in after.dumps()  # stored as text, not \\u escapes
    assert after.prompt("next", after.system)[0] == {"role": "system", "content": "Réponds en français."}


def chunk_event(content: str | None, finish: str | None = None, index: int = 0) -> bytes:
    delta = {} if content is None else {"content": content}
    payload = {"object": "chat.completion.chunk", "choices": [{"index": index, "delta": delta,
                                                               "finish_reason": finish}]}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def test_reply_collector_reads_a_stream_cut_anywhere():
    stream = (chunk_event("Hel") + b": keep-alive\n\n" + chunk_event("lo", index=1) + chunk_event("lo")
              + chunk_event(None, "stop") + b"data: [DONE]\n\n").replace(b"\n", b"\r\n")
    collector = ReplyCollector()
    for position in range(len(stream)):
        collector.feed(stream[position : position + 1])
    assert collector.reply == "Hello" and collector.done and collector.finish_reason == "stop"
    assert collector.complete


@pytest.mark.parametrize("stream", [
    chunk_event("cut off before the end"),                             # no [DONE], no finish reason
    chunk_event("hi") + b'data: {"error": {"message": "boom"}}\n\n' + b"data: [DONE]\n\n",  # an error event
    chunk_event("hi") + b"data: {not json\n\n" + b"data: [DONE]\n\n",   # an unreadable event
    b"data: [DONE]\n\n",                                               # nothing said
])
def test_reply_collector_refuses_incomplete_streams(stream):
    collector = ReplyCollector()
    collector.feed(stream)
    assert not collector.complete


def test_memory_lock_waits_at_most_the_lock_wait_and_leaves_nothing_behind():
    store = MemoryStore(ttl=60, max_sessions=10, lock_wait=0.3)
    key = ("owner", "sid")
    held = store.lock(key)
    started = time.monotonic()
    with pytest.raises(SessionBusy):
        store.lock(key)
    assert time.monotonic() - started >= 0.25
    got: list[float] = []

    def waiter() -> None:
        with store.lock(key):
            got.append(time.monotonic())

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.1)
    released_at = time.monotonic()
    held.release()
    held.release()  # twice is harmless
    thread.join(5)
    assert got and got[0] >= released_at
    assert store._waiters == {}  # no lock kept for sessions nobody is using


def test_memory_store_is_bounded_by_max_sessions():
    store = MemoryStore(ttl=60, max_sessions=3, lock_wait=1)
    for index in range(5):
        with store.lock(("owner", f"s{index}")) as held:
            held.write(Session(None, tuple(pairs(1, 1))))
    assert len(store) == 3
    assert store.read(("owner", "s0")) is None and store.read(("owner", "s4")) is not None


def test_redis_lock_is_renewed_while_a_long_turn_runs(redis_server, monkeypatch):
    monkeypatch.setattr(redis_store, "LEASE", 0.6)
    monkeypatch.setattr(redis_store, "RENEW_EVERY", 0.2)
    store = RedisStore(redis_server.url, ttl=60, lock_wait=0.2)
    key = ("owner-renew", "sid")
    held = store.lock(key)
    time.sleep(1.5)  # well past the lease: only the renewals keep it
    with pytest.raises(SessionBusy):
        store.lock(key)
    held.write(Session(None, tuple(pairs(2, 2))))
    held.release()
    with store.lock(key) as again:
        assert again.read() == Session(None, tuple(pairs(2, 2)))


def test_redis_turn_that_lost_its_lock_cannot_write(redis_server):
    store = RedisStore(redis_server.url, ttl=60, lock_wait=1)
    key = ("owner-lost", "sid")
    with store.lock(key) as held:
        held.write(Session(None, tuple(pairs(1, 1))))
    held = store.lock(key)
    redis.Redis.from_url(redis_server.url).delete(session_key(key) + ":lock")  # as if the lease had run out
    with pytest.raises(StoreUnavailable):
        held.write(Session(None, tuple(pairs(9, 9, 9, 9))))
    held.release()  # logs, does not raise
    assert store.read(key) == Session(None, tuple(pairs(1, 1)))


def test_redis_store_down_is_store_unavailable():
    from tests.relay_server import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", ttl=60, lock_wait=1)
    with pytest.raises(StoreUnavailable):
        store.read(("owner", "sid"))
    with pytest.raises(StoreUnavailable):
        store.lock(("owner", "sid"))


@pytest.mark.parametrize("config,message", [
    ({"SESSION_STORE": "mysql://db/sessions"}, "SESSION_STORE must be"),
    ({"SESSION_TTL": "0"}, "SESSION_TTL=0 must be at least 1"),
    ({"SESSION_MAX_SESSIONS": "-1"}, "SESSION_MAX_SESSIONS"),
])
def test_bad_store_settings_stop_the_relay_at_start(config, message):
    with pytest.raises(SettingsError, match=message):
        open_store(Settings.load({}, config))
    with pytest.raises(SettingsError, match=message):
        create_app(config)
