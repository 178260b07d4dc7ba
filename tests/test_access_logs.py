"""Nothing about keys in the logs: every relay of the test session writes into `logs_dir`, and the last test
reads them all for every key the tests used (tests/access_secrets.py) and for anything that looks like one."""

from __future__ import annotations

import re

import pytest
import requests

from tests.access_secrets import USED, make_key, telltales
from tests.relay_server import free_port

RELAY_KEY = make_key("relay-debug", "rk")
UPSTREAM = make_key("up-debug")
OWN = make_key("own-debug", "AIza")

# Shapes of keys and of the places they travel in, whoever's test sent them.
KEY_SHAPES = {
    "a bearer token": re.compile(r"Bearer\s+\S"),
    "a key in a query": re.compile(r"[?&](?:key|apiKey|api_key)=[^&\s]"),
    "an sk- key": re.compile(r"\bsk-(?:ant-|proj-|admin-)?[A-Za-z0-9_-]{4,}"),
}


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


@pytest.mark.last
def test_no_key_in_any_relay_log(logs_dir):
    logs = sorted(logs_dir.glob("*.log"))
    assert logs, "no relay ran"
    for path in logs:
        text = path.read_text(errors="replace")
        for index, key in enumerate(USED):
            for telltale in telltales(key):
                assert telltale not in text, f"{path.name} holds access_secrets key #{index} (or its prefix)"
        for shape, pattern in KEY_SHAPES.items():
            found = pattern.search(text)
            assert found is None, f"{path.name} holds {shape} at offset {found.start() if found else 0}"
