"""Nothing about keys in the logs: every relay of the test session writes into `logs_dir`, which is read, once
every relay has stopped, for every key the tests used and for anything that looks like one (tests/conftest.py's
`logs_dir`, tests/access_secrets.py). Here, the paths that log the most, with keys everywhere."""

from __future__ import annotations

import pytest
import requests

from tests.access_secrets import assert_no_key_in_logs, make_key, telltales
from tests.relay_server import free_port

RELAY_KEY = make_key("relay-debug", "rk")
UPSTREAM = make_key("up-debug")
OWN = make_key("own-debug", "AIza")



def test_a_debug_level_relay_under_errors_and_refusals(start_relay, fake):
    """Exercise the paths that log (debug level, refusals, rotation, unreachable upstream) with keys everywhere."""
    refused = make_key("up-debug-refused")
    relay = start_relay(
        LOG_LEVEL="DEBUG", RELAY_KEYS=RELAY_KEY, OPENAI_API_KEY=f"{refused},{UPSTREAM}", RATE_LIMIT="8/hour",
        GEMINI_URL=f"http://127.0.0.1:{free_port()}",  # nothing listens there: 502
    )
    fake.refuse_key(refused, 401)
    try:
        auth = {"Authorization": f"Bearer {RELAY_KEY}"}
        for _ in range(2):  # one of them is refused on the first key and retried
            r = requests.post(relay.url + "/v1/chat/completions?key=" + RELAY_KEY, headers=auth, timeout=10,
                              json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
        r = requests.get(f"{relay.url}/gemini/v1beta/models?key={RELAY_KEY}", headers={"x-goog-api-key": OWN},
                         timeout=10)
        assert r.status_code == 502
        assert requests.get(relay.url + "/v1/models", headers={"x-api-key": OWN}, timeout=10).status_code == 401
        for _ in range(6):
            last = requests.get(relay.url + "/v1/models", headers=auth, timeout=10)
        assert last.status_code == 429
    finally:
        fake.refuse_key(refused, None)
    assert "upstream key 1 of 2 for openai was refused with 401" in relay.log()


@pytest.mark.parametrize("line", ["a key: {key}", "a prefix: {prefix}", "POST /v1/x?key=abc 200", "Bearer xyz"])
def test_the_log_scan_finds_a_key_its_prefix_or_a_key_shape(tmp_path, line):
    """The scan every session ends with (conftest.py's `logs_dir`) fails on each thing it looks for."""
    key = make_key("scan-planted")
    (tmp_path / "clean.log").write_text("GET /v1/models 200 3ms 97B\n")
    assert_no_key_in_logs(tmp_path)
    (tmp_path / "relay-9.log").write_text(line.format(key=key, prefix=telltales(key)[1]) + "\n")
    with pytest.raises(AssertionError, match="relay-9.log"):
        assert_no_key_in_logs(tmp_path)
