"""Units of the client-body reader and the replay budget (the real-server tests are test_relay_smuggling.py,
test_relay_slow_clients.py and test_relay_replay_budget.py)."""

from __future__ import annotations

import io

import pytest

from proxy.body import BodyTooLarge, ClientBody, ClientBodyError
from proxy.pace import Pace
from proxy.replay import ReplayBudget

NO_PACE = Pace(0, 0)


def test_a_body_shorter_than_its_length_is_an_error_not_a_short_body():
    body = ClientBody(io.BytesIO(b"x" * 300), limit=10_000, length=500, pace=NO_PACE)
    assert body.read(200) == b"x" * 200
    assert body.read(200) == b"x" * 100
    with pytest.raises(ClientBodyError, match="300 of its 500"):
        body.read(200)
    assert not body.complete


def test_a_whole_body_is_read_to_its_end_and_no_further():
    stream = io.BytesIO(b"a" * 500 + b"NEXT REQUEST")
    body = ClientBody(stream, limit=10_000, length=500, pace=NO_PACE)
    assert body.read_all() == b"a" * 500
    assert body.complete
    assert stream.read() == b"NEXT REQUEST"  # what follows the body is left for the server


def test_a_chunked_body_over_the_limit_is_refused():
    body = ClientBody(io.BytesIO(b"x" * 2000), limit=1000, length=None, pace=NO_PACE)
    with pytest.raises(BodyTooLarge):
        body.read_all()


def test_the_pace_allows_the_timeout_plus_a_second_per_min_rate_bytes():
    pace = Pace(60, 1024)
    assert pace.allowance(0) == 60
    assert pace.allowance(512 * 1024 * 1024) == 60 + 512 * 1024  # six days for 512 MiB: never a real upload


def test_the_replay_budget_is_shared_and_given_back():
    budget = ReplayBudget(100)
    with budget.hold(60) as first:
        with budget.hold(60) as second, budget.hold(40) as third:
            assert (first, second, third) == (True, False, True)
        assert budget.held == 60
    assert budget.held == 0
    with budget.hold(None) as asked:
        assert asked is False
