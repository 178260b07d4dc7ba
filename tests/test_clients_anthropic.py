"""The anthropic SDK through the relay: Vertex AI model ids with '@', and message batches whose results
the SDK fetches from the `results_url` it is handed, which must point at the relay."""

from __future__ import annotations

import gzip
import json

import anthropic
import pytest
import requests
from anthropic import AnthropicVertex

from tests.access_secrets import make_key

RELAY_KEY = make_key("relay-batches", "rk")
SERVER_KEY = make_key("up-batches", "sk-ant")
CLIENT_KEY = make_key("client-batches", "sk-ant")
BATCH = "msgbatch_fake01"
RESULTS = f"/anthropic/v1/messages/batches/{BATCH}/results"


@pytest.fixture(scope="module")
def passthrough(start_relay, fake):
    return start_relay(ROUTES=f"vertex={fake.url}/vertex-upstream/v1")


@pytest.fixture(scope="module")
def relay_keyed(start_relay):
    return start_relay(RELAY_KEYS=RELAY_KEY, ANTHROPIC_API_KEY=SERVER_KEY)


def test_vertex_model_ids_with_an_at_sign_reach_the_upstream_unchanged(passthrough, fake):
    client = AnthropicVertex(base_url=passthrough.url + "/vertex", region="us-east5", project_id="proj-1",
                             access_token="ya29.fake-token", max_retries=0)
    message = client.messages.create(model="claude-sonnet-4@20250514", max_tokens=16,
                                     messages=[{"role": "user", "content": "Hi"}],
                                     extra_headers={"x-fake-tag": "vertex-at"})
    path = "/vertex-upstream/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/" \
           "claude-sonnet-4@20250514:rawPredict"
    assert message.content[0].text == f"vertex: {path}"
    sent = fake.by_tag("vertex-at")
    assert sent.target == path
    assert sent.header("authorization") == "Bearer ya29.fake-token"
    assert "model" not in sent.json()  # AnthropicVertex moved it into the path


def credentials(record) -> set[str]:
    """The keys a request carried (this SDK sends its api_key as a Bearer token; the relay its own as x-api-key)."""
    return {record.header("x-api-key"), (record.header("authorization") or "").removeprefix("Bearer ")} - {None, ""}


@pytest.mark.parametrize("mode", ["pass-through", "relay-key"])
def test_batch_results_are_served_through_the_relay(passthrough, relay_keyed, fake, mode):
    relay, key = (passthrough, CLIENT_KEY) if mode == "pass-through" else (relay_keyed, RELAY_KEY)
    client = anthropic.Anthropic(api_key=key, base_url=relay.url + "/anthropic", max_retries=0)
    created = client.messages.batches.create(requests=[{
        "custom_id": "req-1", "params": {"model": "claude-sonnet-4", "max_tokens": 8,
                                         "messages": [{"role": "user", "content": "Hi"}]}}])
    assert created.id == BATCH and created.results_url is None

    batch = client.messages.batches.retrieve(BATCH)
    assert batch.results_url == relay.url + RESULTS
    assert [b.results_url for b in client.messages.batches.list()] == [
        relay.url + RESULTS, relay.url + "/anthropic/v1/messages/batches/msgbatch_2/results"]
    assert client.messages.batches.cancel(BATCH).processing_status == "canceling"

    before = len(fake.find(f"/messages/batches/{BATCH}/results"))
    results = list(client.messages.batches.results(BATCH))
    assert [(r.custom_id, r.result.message.content[0].text) for r in results] == [
        ("req-1", f"result 1 of {BATCH}"), ("req-2", f"result 2 of {BATCH}")]
    fetched = fake.find(f"/messages/batches/{BATCH}/results")[before:]
    assert [r.path for r in fetched] == [f"/anthropic-upstream/v1/messages/batches/{BATCH}/results"]
    assert relay.logged(f"GET {RESULTS} 200")  # the SDK called the relay, which called the upstream
    # The upstream saw only the key it should: the client's own, or the server's in place of the relay key.
    assert credentials(fetched[0]) == {CLIENT_KEY if mode == "pass-through" else SERVER_KEY}
    assert not any(RELAY_KEY in value for r in fake.records for _, value in r.headers)


def test_results_url_follows_the_trusted_public_address_and_gzip(start_relay, fake):
    relay = start_relay(TRUSTED_PROXIES="1")
    headers = {"x-api-key": CLIENT_KEY, "X-Forwarded-Proto": "https", "X-Forwarded-Host": "relay.example.com",
               "Accept-Encoding": "gzip", "x-fake-gzip": "1"}
    with requests.get(relay.url + f"/anthropic/v1/messages/batches/{BATCH}", headers=headers, timeout=10,
                      stream=True) as response:
        raw = response.raw.read(decode_content=False)
    assert response.status_code == 200
    assert "Content-Encoding" not in response.headers  # decoded to be rewritten, sent as identity
    assert int(response.headers["Content-Length"]) == len(raw)
    assert json.loads(raw)["results_url"] == f"https://relay.example.com{RESULTS}"

    # The same answer without the rewrite: the upstream's gzip as sent, for a path that carries no results_url.
    with requests.get(relay.url + "/anthropic/v1/echo", headers=headers, timeout=10, stream=True) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert json.loads(gzip.decompress(response.raw.read(decode_content=False)))["path"].endswith("/v1/echo")


def test_a_host_header_that_is_not_a_host_leaves_results_url_alone(relay, fake):
    """The relay writes its address into answers only when it is a plain host: never quotes or slashes."""
    for host in ('relay.example"x', "relay.example/evil", "a b"):
        response = requests.get(relay.url + f"/anthropic/v1/messages/batches/{BATCH}",
                                headers={"x-api-key": CLIENT_KEY, "Host": host}, timeout=10)
        assert response.status_code == 200, host
        assert response.json()["results_url"] == f"{fake.url}/anthropic-upstream/v1/messages/batches/{BATCH}/results"
