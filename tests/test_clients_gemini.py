"""Google's Gen AI SDK through the relay: streams that go silent, and resumable file uploads.

google-genai reads only `data:` lines of an event stream and parses any other line as
JSON, so a `: keep-alive` comment kills the stream: `/gemini` has no heartbeat.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time

import pytest
from google import genai
from google.genai import errors, types

SILENCE = 2.5  # seconds between two chunks, longer than the test relay's SSE_HEARTBEAT=1
PROMPT = "Why is the sky blue?"


def gemini(base_url: str, api_version: str, headers: dict[str, str] | None = None) -> genai.Client:
    options = types.HttpOptions(base_url=base_url, api_version=api_version, headers=headers or {}, timeout=30_000)
    return genai.Client(api_key="gm-test-key", http_options=options)


def silent_stream_headers(tag: str) -> dict[str, str]:
    return {"x-fake-chunks": "2", "x-fake-delay": str(SILENCE), "x-fake-tag": tag}


def stream_text(client: genai.Client, mode: str) -> str:
    """The streamed answer, read by the SDK's sync or async iterator."""
    if mode == "sync":
        return "".join(chunk.text or "" for chunk in client.models.generate_content_stream(
            model="gemini-2.5-flash", contents=PROMPT))

    async def read() -> str:
        stream = await client.aio.models.generate_content_stream(model="gemini-2.5-flash", contents=PROMPT)
        return "".join([chunk.text or "" async for chunk in stream])

    return asyncio.run(read())


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
def test_a_silent_gemini_stream_completes_through_the_default_route(relay, fake, mode, api_version):
    tag = f"gemini-silent-{mode}-{api_version}"
    started = time.monotonic()
    text = stream_text(gemini(relay.url + "/gemini", api_version, silent_stream_headers(tag)), mode)
    assert text == f"echo: {PROMPT}"
    assert time.monotonic() - started >= SILENCE  # the stream really was silent longer than the heartbeat
    sent = fake.by_tag(tag)
    assert sent.path == f"/gemini-upstream/{api_version}/models/gemini-2.5-flash:streamGenerateContent"
    assert sent.query == "alt=sse"
    assert sent.header("x-goog-api-key") == "gm-test-key"


@pytest.fixture(scope="module")
def relay_with_gemini_heartbeat(start_relay, fake):
    """The same upstream through a ROUTES entry with the heartbeat forced on."""
    return start_relay(SSE_HEARTBEAT="1", ROUTES=f"gemini-beat={fake.url}/gemini-upstream;heartbeat=on")


def test_a_bad_routes_option_stops_the_start_with_a_clear_message(start_relay, fake):
    with pytest.raises(RuntimeError, match="relay exited with") as refused:
        start_relay(ROUTES=f"gem={fake.url}/gemini-upstream;heartbeat=sometimes")
    message = "ROUTES[gem]: unknown option 'heartbeat=sometimes'; the one option is 'heartbeat=on|off'"
    assert message in str(refused.value)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_same_stream_with_a_heartbeat_breaks_the_sdk(relay_with_gemini_heartbeat, mode):
    """What the default prevents: the SDK parses `: keep-alive` as JSON and the stream dies."""
    client = gemini(relay_with_gemini_heartbeat.url + "/gemini-beat", "v1beta", silent_stream_headers(f"beat-{mode}"))
    with pytest.raises(errors.UnknownApiResponseError, match="keep-alive"):
        stream_text(client, mode)


def test_a_resumable_upload_goes_through_the_relay(relay, fake):
    """The upload URL the upstream hands out is relocated under the relay's /gemini, where the SDK sends the bytes."""
    content = bytes(range(256)) * 1000
    line = "POST /gemini/upload/v1beta/files 200"
    before = relay.log().count(line)
    client = gemini(relay.url + "/gemini", "v1beta", {"x-fake-tag": "gemini-upload"})
    uploaded = client.files.upload(file=io.BytesIO(content), config={"mime_type": "text/plain"})
    assert uploaded.name == "files/fake-file-1"
    assert uploaded.size_bytes == len(content)
    assert uploaded.sha256_hash == hashlib.sha256(content).hexdigest()
    assert fake.by_tag("gemini-upload").target == "/gemini-upstream/upload/v1beta/files"
    finish = [r for r in fake.find("/upload/v1beta/files") if r.sha256 == hashlib.sha256(content).hexdigest()]
    assert [r.target for r in finish] == [
        "/gemini-upstream/upload/v1beta/files?upload_id=fake-upload-1&upload_protocol=resumable"
    ]
    assert finish[0].header("x-goog-upload-command") == "upload, finalize"
    assert relay.logged(line, times=before + 2)  # start and finish both went through the relay


def litellm_stream_text(base_url: str, tag: str) -> str:
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # the bundled model list: no download at import
    import litellm

    stream = litellm.completion(model="gemini/gemini-2.5-flash", messages=[{"role": "user", "content": PROMPT}],
                                stream=True, api_key="gm-test-key", api_base=base_url, timeout=30,
                                extra_headers=silent_stream_headers(tag))
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream)


def test_litellm_gemini_provider_reads_a_silent_stream_whole(relay, fake, relay_with_gemini_heartbeat):
    assert litellm_stream_text(relay.url + "/gemini", "litellm-default") == f"echo: {PROMPT}"
    assert fake.by_tag("litellm-default").path == "/gemini-upstream/models/gemini-2.5-flash:streamGenerateContent"
    # With a heartbeat, LiteLLM's parser ends the stream after the first chunk, silently: what the default avoids.
    cut = litellm_stream_text(relay_with_gemini_heartbeat.url + "/gemini-beat", "litellm-beat")
    assert cut != f"echo: {PROMPT}" and f"echo: {PROMPT}".startswith(cut)
