"""Session chat through the real gunicorn-served relay and the fake upstream, on both stores.

Every test here runs twice: with the in-process memory store and with Redis
(a real redis-server the fixtures start). The fake upstream records what each
turn sent it, so the history a turn carried is checked where it arrives.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.raw_http import open_stream
from tests.relay_server import free_port
from tests.session_client import (
    SessionClient,
    closed_by_relay,
    new_session_id,
    sent_messages,
    stream_deltas,
    turn_pairs,
    wait_for,
)

SECRET_MARKER = "zebra-7781-content"  # a message text that must never reach a log


@pytest.fixture(scope="module", params=["memory", "redis"])
def store_env(request) -> dict[str, str]:
    if request.param == "memory":
        return {}
    return {"REDIS_URL": request.getfixturevalue("redis_server").url}


@pytest.fixture(scope="module")
def main_relay(start_relay, store_env):
    """Default limits, except room for the 40 messages of the concurrency test."""
    return start_relay(SESSION_MAX_MESSAGES="40", SSE_HEARTBEAT="1", **store_env)


@pytest.fixture(scope="module")
def tight_relay(start_relay, store_env):
    """Small limits and short waits, for trimming, expiry, timeouts and the lock wait."""
    return start_relay(SESSION_MAX_MESSAGES="4", SESSION_MAX_CHARS="60", SESSION_MAX_CONTENT="50",
                       SESSION_TTL="4", SESSION_LOCK_WAIT="1", UPSTREAM_READ_TIMEOUT="1", **store_env)


@pytest.fixture
def client(main_relay) -> SessionClient:
    return SessionClient(main_relay.url)


def test_three_turn_conversation_sends_the_whole_history(client, fake):
    sid = new_session_id()
    contents = [f"first {SECRET_MARKER}", "second", "third"]
    for index, content in enumerate(contents):
        r = client.chat(sid, content, tag=f"{sid}-{index}")
        assert r.status_code == 200, r.text
        assert r.json() == {"code": 200, "message": "success", "data": f"echo: {content}"}
        assert sent_messages(fake, f"{sid}-{index}") == turn_pairs(*contents[:index]) + [
            {"role": "user", "content": content}]
    record = fake.by_tag(f"{sid}-2")
    assert record.path == "/v1/chat/completions"
    assert record.header("authorization") == f"Bearer {client.key}"
    assert record.json()["model"] == "gpt-4o-mini"
    assert "stream" not in record.json()
    assert client.messages(sid) == turn_pairs(*contents)


def test_bearer_header_and_curl_style_body_reach_the_same_session(client, main_relay, fake):
    sid = new_session_id()
    assert client.chat(sid, "via body").status_code == 200
    body = json.dumps({"sessionId": sid, "content": "via header"})  # no Content-Type, as `curl -d` sends it
    r = requests.post(main_relay.url + "/pro/chat/completions", data=body,
                      headers=client.auth() | {"x-fake-tag": f"{sid}-h"})
    assert r.status_code == 200, r.text
    assert sent_messages(fake, f"{sid}-h") == turn_pairs("via body") + [{"role": "user", "content": "via header"}]


def test_model_is_passed_on(client, fake):
    sid = new_session_id()
    assert client.chat(sid, "hi", tag=f"{sid}-m", model="gpt-4o").status_code == 200
    assert fake.by_tag(f"{sid}-m").json()["model"] == "gpt-4o"


def test_system_prompt_is_stored_and_sent_first(client, fake):
    sid = new_session_id()
    system = {"role": "system", "content": "Answer briefly."}
    assert client.chat(sid, "one", tag=f"{sid}-1", system="Answer briefly.").status_code == 200
    assert client.chat(sid, "two", tag=f"{sid}-2").status_code == 200
    assert sent_messages(fake, f"{sid}-1") == [system, {"role": "user", "content": "one"}]
    assert sent_messages(fake, f"{sid}-2") == [system, *turn_pairs("one"), {"role": "user", "content": "two"}]
    assert client.messages(sid) == [system, *turn_pairs("one", "two")]

    assert client.chat(sid, "three", tag=f"{sid}-3", system="Answer in French.").status_code == 200
    assert sent_messages(fake, f"{sid}-3")[0] == {"role": "system", "content": "Answer in French."}
    assert client.chat(sid, "four", tag=f"{sid}-4", system="").status_code == 200  # "" clears it
    assert sent_messages(fake, f"{sid}-4") == [*turn_pairs("one", "two", "three"), {"role": "user", "content": "four"}]
    assert client.messages(sid) == turn_pairs("one", "two", "three", "four")


def test_history_is_trimmed_to_the_newest_messages(tight_relay, fake):
    client = SessionClient(tight_relay.url)  # SESSION_MAX_MESSAGES=4
    sid = new_session_id()
    for index, content in enumerate(["a1", "a2", "a3", "a4"]):
        assert client.chat(sid, content, tag=f"{sid}-{index}", system="S").status_code == 200
    system = {"role": "system", "content": "S"}
    assert sent_messages(fake, f"{sid}-2") == [system, *turn_pairs("a1", "a2"), {"role": "user", "content": "a3"}]
    assert sent_messages(fake, f"{sid}-3") == [system, *turn_pairs("a2", "a3"), {"role": "user", "content": "a4"}]
    assert client.messages(sid) == [system, *turn_pairs("a3", "a4")]


def test_history_is_trimmed_to_the_character_limit(tight_relay, fake):
    client = SessionClient(tight_relay.url)  # SESSION_MAX_CHARS=60; a turn here is 20 + 26 characters
    sid = new_session_id()
    first, second = "x" * 20, "y" * 20
    system = "s" * 50  # not counted, never dropped
    assert client.chat(sid, first, system=system).status_code == 200
    assert client.messages(sid) == [{"role": "system", "content": system}, *turn_pairs(first)]
    assert client.chat(sid, second, tag=f"{sid}-2").status_code == 200
    assert sent_messages(fake, f"{sid}-2")[1:] == [*turn_pairs(first), {"role": "user", "content": second}]
    assert client.messages(sid) == [{"role": "system", "content": system}, *turn_pairs(second)]


def test_expiry_slides_with_each_turn(tight_relay, fake):
    client = SessionClient(tight_relay.url)  # SESSION_TTL=4
    sid = new_session_id()
    assert client.chat(sid, "t1").status_code == 200
    time.sleep(2.2)
    assert client.chat(sid, "t2", tag=f"{sid}-2").status_code == 200
    time.sleep(2.2)  # 4.4 s after t1: still alive only because t2 restarted the clock
    assert client.chat(sid, "t3", tag=f"{sid}-3").status_code == 200
    assert sent_messages(fake, f"{sid}-2") == [*turn_pairs("t1"), {"role": "user", "content": "t2"}]
    assert sent_messages(fake, f"{sid}-3") == [*turn_pairs("t1", "t2"), {"role": "user", "content": "t3"}]
    assert client.messages(sid) is not None
    time.sleep(4.5)
    assert client.messages(sid) is None
    assert client.chat(sid, "t4", tag=f"{sid}-4").status_code == 200
    assert sent_messages(fake, f"{sid}-4") == [{"role": "user", "content": "t4"}]


def test_get_and_delete(client, fake):
    sid = new_session_id()
    r = client.history(sid)
    assert r.status_code == 404
    assert r.json()["code"] == 404 and r.json()["data"] is None and sid in r.json()["message"]
    assert client.chat(sid, "remember me").status_code == 200
    r = client.history(sid)
    assert r.json() == {"code": 200, "message": "success", "data": turn_pairs("remember me")}

    r = client.forget(sid)
    assert r.status_code == 200 and r.json() == {"code": 200, "message": "deleted", "data": None}
    assert client.history(sid).status_code == 404
    assert client.forget(sid).status_code == 404
    assert client.chat(sid, "fresh start", tag=f"{sid}-fresh").status_code == 200
    assert sent_messages(fake, f"{sid}-fresh") == [{"role": "user", "content": "fresh start"}]


def test_get_and_delete_check_their_input(client, main_relay):
    assert client.chat(new_session_id(), "x").status_code == 200
    for path in ("/pro/sessions/bad%20id", "/pro/sessions/" + "a" * 65, "/pro/sessions/%C3%A9t%C3%A9"):
        for method in ("GET", "DELETE"):
            r = requests.request(method, main_relay.url + path, headers=client.auth())
            assert r.status_code == 400, r.text
            assert r.json()["data"] is None and "sessionId must be" in r.json()["message"]
    r = requests.get(main_relay.url + "/pro/sessions/abc")
    assert r.status_code == 400 and "API key is required" in r.json()["message"]
    r = requests.delete(main_relay.url + "/pro/sessions/abc", headers={"Authorization": "Bearer two words"})
    assert r.status_code == 400


def test_same_session_id_under_two_keys_is_two_conversations(main_relay, fake):
    alice, bob = SessionClient(main_relay.url), SessionClient(main_relay.url)
    sid = new_session_id()
    assert alice.chat(sid, "alice here").status_code == 200
    assert bob.chat(sid, "bob here", tag=f"{sid}-bob").status_code == 200
    assert sent_messages(fake, f"{sid}-bob") == [{"role": "user", "content": "bob here"}]
    assert alice.messages(sid) == turn_pairs("alice here")
    assert bob.messages(sid) == turn_pairs("bob here")
    assert bob.forget(sid).status_code == 200
    assert bob.forget(sid).status_code == 404
    assert alice.messages(sid) == turn_pairs("alice here")


BAD_REQUESTS = [
    # (what, raw body or a change to a valid body, status, part of the message)
    ("malformed JSON", b'{"apiKey": "sk-x", "sessionId": ', 400, "not valid JSON"),
    ("invalid UTF-8", b'{"apiKey": "\xff\xfe", "sessionId": "s", "content": "c"}', 400, "not valid JSON"),
    ("absurd nesting", b"[" * 100_000, 400, "not valid JSON"),
    ("a JSON array", b"[1, 2]", 400, "JSON object"),
    ("an empty body", b"", 400, "JSON object"),
    ("no key", {"apiKey": None}, 400, "API key is required"),
    ("a key that is not a string", {"apiKey": 12345}, 400, "apiKey must be"),
    ("a key with a space", {"apiKey": "sk bad"}, 400, "apiKey must be"),
    ("no sessionId", {"sessionId": None}, 400, "sessionId is required"),
    ("a sessionId with a slash", {"sessionId": "a/b"}, 400, "sessionId must be"),
    ("a sessionId of 65 characters", {"sessionId": "a" * 65}, 400, "sessionId must be"),
    ("a sessionId that is a number", {"sessionId": 42}, 400, "sessionId must be"),
    ("no content", {"content": None}, 400, "content is required"),
    ("empty content", {"content": ""}, 400, "content is required"),
    ("content that is a list", {"content": ["hi"]}, 400, "content must be a string"),
    ("content over SESSION_MAX_CONTENT", {"content": "x" * 4001}, 413, "the limit is 4000"),
    ("a model that is a number", {"model": 4}, 400, "model must be"),
    ("a system prompt that is an object", {"system": {"a": 1}}, 400, "system must be a string"),
    ("stream that is a string", {"stream": "yes"}, 400, "stream must be true or false"),
    ("a body over the size limit", {"padding": "p" * 500_000}, 413, "larger than"),
]


@pytest.mark.parametrize("what,change,status,message", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_bad_requests_get_a_clear_error_and_change_nothing(client, main_relay, fake, what, change, status, message):
    sid = new_session_id()
    assert client.chat(sid, "kept").status_code == 200
    calls = len(fake.find("/chat/completions"))
    if isinstance(change, bytes):
        r = requests.post(main_relay.url + "/pro/chat/completions", data=change,
                          headers={"Content-Type": "application/json"})
    else:
        body = {"apiKey": client.key, "sessionId": sid, "content": "dropped"} | change
        body = {name: value for name, value in body.items() if value is not None}
        r = requests.post(main_relay.url + "/pro/chat/completions", json=body)
    assert r.status_code == status, r.text
    assert r.json()["code"] == status and r.json()["data"] is None
    assert message in r.json()["message"]
    assert client.messages(sid) == turn_pairs("kept")
    assert len(fake.find("/chat/completions")) == calls  # nothing went upstream


@pytest.mark.parametrize("status,message", [(401, "Incorrect API key provided."),
                                            (429, "Rate limit reached for requests."),
                                            (500, "fake error 500")])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_upstream_refusal_passes_its_status_and_message(client, status, message, stream):
    sid = new_session_id()
    assert client.chat(sid, "kept").status_code == 200
    r = client.chat(sid, "refused", headers={"x-fake-status": str(status)}, stream=stream)
    assert r.status_code == status
    assert r.json() == {"code": status, "message": message, "data": None}
    if status == 429:
        assert r.headers["Retry-After"] == "1"
    assert client.messages(sid) == turn_pairs("kept")


def test_silent_upstream_is_a_504(tight_relay):
    client = SessionClient(tight_relay.url)  # UPSTREAM_READ_TIMEOUT=1
    sid = new_session_id()
    assert client.chat(sid, "kept").status_code == 200
    r = client.chat(sid, "too slow", headers={"x-fake-first-byte-delay": "3"})
    assert r.status_code == 504
    assert r.json()["data"] is None and "did not answer in time" in r.json()["message"]
    assert client.messages(sid) == turn_pairs("kept")


def test_unreachable_upstream_is_a_502(start_relay, store_env, client):
    sid = new_session_id()
    assert client.chat(sid, "kept").status_code == 200
    dead = start_relay(UPSTREAM_URL=f"http://127.0.0.1:{free_port()}", **store_env)
    same_key_on_dead = SessionClient(dead.url, client.key)
    r = same_key_on_dead.chat(sid, "lost")
    assert r.status_code == 502
    assert r.json()["data"] is None and "could not be reached" in r.json()["message"]
    shared = "REDIS_URL" in store_env
    assert same_key_on_dead.messages(sid) == (turn_pairs("kept") if shared else None)
    assert client.messages(sid) == turn_pairs("kept")


def test_twenty_concurrent_turns_all_land_in_order(client, fake):
    sid = new_session_id()
    contents = [f"m{index:02d}" for index in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda index: client.chat(sid, contents[index], tag=f"{sid}-{index}"), range(20)))
    assert [r.status_code for r in answers] == [200] * 20
    stored = client.messages(sid)
    assert len(stored) == 40
    users = [message["content"] for message in stored[0::2]]
    assert sorted(users) == contents
    assert stored == turn_pairs(*users)  # each reply right after its own question
    # Serialized: each turn saw every turn before it, so the upstream got 1, 3, 5 ... 39 messages.
    seen = sorted(len(sent_messages(fake, f"{sid}-{index}")) for index in range(20))
    assert seen == list(range(1, 40, 2))


def test_a_turn_waits_for_the_one_before_it_at_most_the_lock_wait(tight_relay, fake):
    client = SessionClient(tight_relay.url)  # SESSION_LOCK_WAIT=1
    sid = new_session_id()
    slow = requests.post(tight_relay.url + "/pro/chat/completions", stream=True, timeout=30,
                         json={"apiKey": client.key, "sessionId": sid, "content": "slow", "stream": True},
                         headers={"x-fake-chunks": "6", "x-fake-delay": "0.6"})
    chunks = slow.iter_content(chunk_size=None)
    first = next(chunks)
    assert b"data: " in first  # the slow turn holds the session from here on
    started = time.monotonic()
    r = client.chat(sid, "quick")
    assert r.status_code == 409, r.text
    assert r.json()["data"] is None and "still running" in r.json()["message"]
    assert time.monotonic() - started >= 0.8
    text, done = stream_deltas(first + b"".join(chunks))
    assert text == "echo: slow" and done
    assert client.messages(sid) == turn_pairs("slow")
    assert client.chat(sid, "quick").status_code == 200
    assert client.messages(sid) == turn_pairs("slow", "quick")


def test_streamed_turn_is_relayed_as_it_arrives_and_recorded(client, main_relay, fake):
    sid = new_session_id()
    assert client.chat(sid, "before").status_code == 200
    r = requests.post(main_relay.url + "/pro/chat/completions", stream=True, timeout=30,
                      json={"apiKey": client.key, "sessionId": sid, "content": "stream me", "stream": True},
                      headers={"x-fake-chunks": "5", "x-fake-delay": "0.3", "x-fake-tag": f"{sid}-s"})
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/event-stream")
    arrivals, body = [], b""
    for chunk in r.iter_content(chunk_size=None):
        arrivals.append(time.monotonic())
        body += chunk
    text, done = stream_deltas(body)
    assert text == "echo: stream me" and done
    assert arrivals[-1] - arrivals[0] >= 0.6  # the chunks came as the upstream sent them, not all at the end
    sent = fake.by_tag(f"{sid}-s").json()
    assert sent["stream"] is True
    assert sent["messages"] == [*turn_pairs("before"), {"role": "user", "content": "stream me"}]
    assert client.messages(sid) == turn_pairs("before", "stream me")


def test_client_leaving_mid_stream_changes_nothing(client, main_relay, fake):
    sid = new_session_id()
    assert client.chat(sid, "kept").status_code == 200
    tag = f"{sid}-gone"
    sock, first = open_stream(
        main_relay.port, "/pro/chat/completions",
        {"apiKey": client.key, "sessionId": sid, "content": "abandoned", "stream": True},
        {"x-fake-chunks": "20", "x-fake-delay": "0.2", "x-fake-tag": tag})
    sock.close()
    assert first.startswith(b"HTTP/1.1 200")
    wait_for(closed_by_relay(fake, tag), what="the relay closing the upstream stream")
    assert not fake.by_tag(tag).completed
    assert client.messages(sid) == turn_pairs("kept")
    r = client.chat(sid, "next", tag=f"{sid}-next")  # the lock was freed
    assert r.status_code == 200
    assert sent_messages(fake, f"{sid}-next") == [*turn_pairs("kept"), {"role": "user", "content": "next"}]


def test_upstream_dropping_mid_stream_changes_nothing(client, main_relay):
    sid = new_session_id()
    assert client.chat(sid, "kept").status_code == 200
    r = requests.post(main_relay.url + "/pro/chat/completions", stream=True, timeout=30,
                      json={"apiKey": client.key, "sessionId": sid, "content": "dropped", "stream": True},
                      headers={"x-fake-chunks": "6", "x-fake-drop-after": "3"})
    assert r.status_code == 200
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for _ in r.iter_content(chunk_size=None):
            pass
    assert client.messages(sid) == turn_pairs("kept")
    assert client.chat(sid, "next").status_code == 200
    assert client.messages(sid) == turn_pairs("kept", "next")


def test_no_key_and_no_message_reaches_the_logs(main_relay, tight_relay):
    for relay in (main_relay, tight_relay):
        log = relay.log()
        assert "POST /pro/chat/completions 200" in log
        assert "sk-test-" not in log
        assert SECRET_MARKER not in log and "echo:" not in log


def test_memory_store_with_several_workers_warns_at_start(start_relay):
    relay = start_relay(WEB_CONCURRENCY="2")
    wait_for(lambda: relay.log().count("sessions are per process") >= 2, what="a warning from each worker")
    client = SessionClient(relay.url)
    assert client.chat(new_session_id(), "still works").status_code == 200
