"""Routes the operator configures and the paths clients send: credentials in URLs, names the relay owns,
percent-encoded prefixes, and no header the client did not send (issue 9 items 5, 9, 10; issue 12 item 4)."""

from __future__ import annotations

import json

import openai
import pytest

from app import create_app
from proxy.routes import BUILT_IN_PREFIXES, OWN_PATHS
from tests.raw_http import raw_get, split_answer

PASSWORD = "hunter2-sekrit"


def get(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    status, _, body = split_answer(raw_get(port, target, headers))
    return status, body


@pytest.mark.parametrize("variable", ["ROUTES", "UPSTREAM_URL", "ANTHROPIC_URL", "GEMINI_URL"])
def test_an_upstream_url_with_credentials_stops_the_start_without_showing_them(start_relay, fake, variable):
    url = f"http://relay-user:{PASSWORD}@127.0.0.1:{fake.port}/x"
    value = f"private={url}" if variable == "ROUTES" else url
    with pytest.raises(RuntimeError, match="relay exited with") as refused:
        start_relay(**{variable: value})
    log = str(refused.value)
    assert f"the URL of http://127.0.0.1:{fake.port} holds credentials" in log
    assert PASSWORD not in log and "relay-user" not in log


@pytest.mark.parametrize("name", [*BUILT_IN_PREFIXES, "pro", "healthz"])
def test_a_route_named_like_one_of_the_relays_own_stops_the_start(start_relay, fake, name):
    with pytest.raises(RuntimeError, match="relay exited with") as refused:
        start_relay(ROUTES=f"{name}={fake.url}/elsewhere")
    assert f"ROUTES name {name!r} is taken by the relay itself" in str(refused.value)


def test_own_paths_cover_every_top_level_path_the_app_serves(fake):
    app = create_app({"UPSTREAM_URL": fake.url})
    served = {rule.rule.split("/")[1] for rule in app.url_map.iter_rules() if not rule.endpoint.startswith("relay_")}
    assert served - {""} <= set(OWN_PATHS) | set(BUILT_IN_PREFIXES)


def test_a_percent_encoded_prefix_is_refused_not_cut_at_the_wrong_place(relay, fake):
    status, body = get(relay.port, "/%76%31/models", {"x-fake-tag": "encoded-prefix"})
    assert status == 400
    assert json.loads(body)["error"]["code"] == "invalid_path"
    assert fake.tagged("encoded-prefix") == []
    status, body = get(relay.port, "/v1/%6Dodels", {"x-fake-tag": "encoded-rest"})  # after the prefix: as sent
    assert status == 200
    assert fake.by_tag("encoded-rest").target == "/v1/%6Dodels"


def test_no_accept_encoding_goes_upstream_when_the_client_sent_none(relay, fake):
    status, _ = get(relay.port, "/v1/echo", {"x-fake-tag": "no-accept-encoding"})
    assert status == 200
    assert "accept-encoding" not in fake.by_tag("no-accept-encoding").header_names()
    status, _ = get(relay.port, "/v1/echo", {"x-fake-tag": "own-accept-encoding", "Accept-Encoding": "br"})
    assert fake.by_tag("own-accept-encoding").header("accept-encoding") == "br"


def test_the_openai_sdk_gets_its_own_accept_encoding_through(relay, fake):
    client = openai.OpenAI(base_url=relay.url + "/v1", api_key="sk-sdk-encoding", max_retries=0)
    client.models.list(extra_headers={"x-fake-tag": "sdk-accept-encoding"})
    sdk = openai.OpenAI(api_key="x")._client.headers.get("accept-encoding")  # what the SDK's own client sends
    assert fake.by_tag("sdk-accept-encoding").header("accept-encoding") == sdk
