"""An upstream that answers something unreadable gets a 502 that says what it did, not "could not be reached"."""

from __future__ import annotations

import requests

from tests.test_relay_errors import assert_openai_error


def test_a_one_mib_response_header_is_a_502_that_says_so(relay):
    answer = requests.get(relay.url + "/v1/models", headers={"x-fake-header-size": str(1024 * 1024)}, timeout=10)
    assert_openai_error(answer, 502, "upstream_bad_response")
    message = answer.json()["error"]["message"]
    assert "header line longer than the 65536 bytes allowed" in message
    assert "could not be reached" not in message


def test_the_next_request_is_served_normally(relay):
    answer = requests.get(relay.url + "/v1/models", headers={"x-fake-header-size": str(1024 * 1024)}, timeout=10)
    assert answer.status_code == 502
    assert requests.get(relay.url + "/v1/models", timeout=10).status_code == 200
