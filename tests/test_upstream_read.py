"""`read_whole`, shared by session chat and billing, against the real fake upstream."""

from __future__ import annotations

import pytest

from proxy.routes import build_routes
from proxy.settings import Settings
from proxy.upstream import Upstream, UpstreamBrokeOff, UpstreamTimeout, read_whole
from tests.session_client import SessionClient, new_session_id


@pytest.fixture
def upstream(fake) -> Upstream:
    settings = Settings.load({"UPSTREAM_URL": fake.url, "UPSTREAM_READ_TIMEOUT": "1"})
    return Upstream(settings, build_routes(settings).values())


def get_models(upstream: Upstream, fake, **headers: str):
    return upstream.send("GET", fake.url + "/v1/models", fake.url, {"Host": fake.url[7:], **headers})


def test_a_whole_answer_is_read_and_its_connection_reused(upstream, fake):
    first = read_whole(get_models(upstream, fake, **{"x-fake-tag": "whole-1"}), 1_000_000)
    second = read_whole(get_models(upstream, fake, **{"x-fake-tag": "whole-2"}), 1_000_000)
    assert first == second and b'"gpt-4o-mini"' in first
    assert fake.by_tag("whole-1").peer == fake.by_tag("whole-2").peer  # one kept-alive connection


def test_an_answer_cut_short_or_too_large_or_stalled(upstream, fake):
    with pytest.raises(UpstreamBrokeOff, match="broke off"):
        read_whole(get_models(upstream, fake, **{"x-fake-cut": "drop"}), 1_000_000)
    with pytest.raises(UpstreamBrokeOff, match="larger than 10 bytes"):
        read_whole(get_models(upstream, fake), 10)
    with pytest.raises(UpstreamTimeout):
        read_whole(get_models(upstream, fake, **{"x-fake-cut": "stall"}), 1_000_000)


def test_a_session_turn_whose_answer_breaks_off_is_a_502_and_changes_nothing(relay):
    client = SessionClient(relay.url)
    sid = new_session_id()
    assert client.chat(sid, "kept").status_code == 200
    answer = client.chat(sid, "lost", headers={"x-fake-cut": "drop"})
    assert answer.status_code == 502 and "broke off its answer" in answer.json()["message"]
    assert [m["content"] for m in client.messages(sid)] == ["kept", "echo: kept"]
