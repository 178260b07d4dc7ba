"""Safe defaults: a relay holding upstream keys refuses to start without relay keys, unless told it is meant;
a setting the relay cannot use stops the start with a message that names it."""

from __future__ import annotations

import itertools

import pytest
import requests

from tests.access_secrets import make_key, telltales

OPEN_KEY = make_key("up-open-relay")
REFUSED = {
    "OPENAI_API_KEY": make_key("up-refused-openai"),
    "ANTHROPIC_API_KEY": make_key("up-refused-anthropic", "sk-ant"),
    "GROQ_API_KEY": make_key("up-refused-groq", "gsk"),
}
_tags = itertools.count()


@pytest.mark.parametrize("name", list(REFUSED))
def test_upstream_keys_without_relay_keys_refuse_to_start(start_relay, fake, name):
    env = {name: REFUSED[name], "ROUTES": f"groq={fake.url}/groq"}
    with pytest.raises(RuntimeError) as refused:
        start_relay(**env)
    log = str(refused.value)
    assert log.startswith("relay exited with")  # gunicorn itself stopped, it is not serving
    assert f"{name} set but RELAY_KEYS is not" in log
    assert "ALLOW_OPEN_RELAY=1" in log
    assert not any(telltale in log for telltale in telltales(REFUSED[name]))


def test_allow_open_relay_serves_everyone_with_the_owners_key(start_relay, fake):
    relay = start_relay(OPENAI_API_KEY=OPEN_KEY, ALLOW_OPEN_RELAY="1")
    for headers in [{}, {"Authorization": "Bearer sk-someone-elses"}]:
        name = f"access-open-{next(_tags)}"
        r = requests.get(relay.url + "/v1/models", headers=headers | {"x-fake-tag": name}, timeout=10)
        assert r.status_code == 200, r.text
        assert fake.by_tag(name).header("authorization") == f"Bearer {OPEN_KEY}"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RATE_LIMIT": "60/fortnight"}, "RATE_LIMIT entry '60/fortnight' must look like 60/minute"),
        ({"TRUSTED_PROXIES": "heroku"}, "TRUSTED_PROXIES"),
        ({"ALLOWED_PATHS": "v1/chat/*"}, "ALLOWED_PATHS entry 'v1/chat/*' must be a path glob"),
        ({"KEY_COOLDOWN": "soon"}, "KEY_COOLDOWN='soon' is not a valid float"),
    ],
)
def test_malformed_access_settings_stop_the_start_with_a_clear_message(start_relay, env, message):
    with pytest.raises(RuntimeError, match="relay exited with") as refused:
        start_relay(**env)
    assert message in str(refused.value)


@pytest.mark.parametrize("env", [{"UPSTREAM_READ_TIMEOUT": "0"}, {"WEBSOCKET_IDLE_TIMEOUT": "-1"}])
def test_a_number_of_seconds_the_relay_cannot_use_stops_the_start(start_relay, env):
    """0 upstream seconds once gave urllib3's traceback; a negative idle limit started, then failed every WebSocket."""
    ((name, value),) = env.items()
    with pytest.raises(RuntimeError, match="relay exited with") as refused:
        start_relay(**env)
    assert f"{name}={float(value)!r} must be a number of seconds" in str(refused.value)
