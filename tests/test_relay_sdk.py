"""The official openai SDK, pointed at the relay, works exactly as against the API."""

from __future__ import annotations

import hashlib
import io
import time

import openai
import pytest

from tests.fake_upstream import pattern_bytes


@pytest.fixture
def client(relay) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test-sdk", base_url=relay.url + "/v1", max_retries=0, timeout=30)


def test_chat_completion(client, fake):
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Hello!"}],
        extra_headers={"x-fake-tag": "sdk-chat"},
    )
    assert completion.choices[0].message.content == "echo: Hello!"
    assert completion.usage.total_tokens == 15
    sent = fake.by_tag("sdk-chat")
    assert sent.header("authorization") == "Bearer sk-test-sdk"
    assert sent.json()["messages"] == [{"role": "user", "content": "Hello!"}]


def test_chat_stream_with_usage(client):
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-fake-chunks": "4"},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: stream me"
    assert chunks[-1].usage.total_tokens == 15
    assert len([c for c in chunks if c.choices]) == 4


def test_responses_stream_typed_events(client):
    events = list(client.responses.create(model="gpt-4o-mini", input="typed", stream=True))
    types = [event.type for event in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: typed"
    assert events[-1].response.output_text == "echo: typed"


def test_file_upload_multipart(client):
    content = bytes(range(256)) * 4096  # 1 MiB
    uploaded = client.files.create(file=("data.jsonl", io.BytesIO(content)), purpose="batch")
    assert uploaded.bytes == len(content)
    assert uploaded.filename == "data.jsonl"
    assert uploaded.purpose == "batch"
    assert uploaded.model_extra["sha256"] == hashlib.sha256(content).hexdigest()


def test_audio_speech_download(client):
    audio = client.audio.speech.create(
        model="gpt-4o-mini-tts", voice="alloy", input="hi", extra_headers={"x-fake-size": "300000"}
    )
    assert audio.content == pattern_bytes(300000)


def test_embeddings_and_models(client):
    embeddings = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [item.index for item in embeddings.data] == [0, 1]
    assert [model.id for model in client.models.list()] == ["gpt-4o-mini", "gpt-4o"]


@pytest.mark.parametrize(
    ("status", "exception"),
    [(401, openai.AuthenticationError), (429, openai.RateLimitError), (500, openai.InternalServerError)],
)
def test_upstream_errors_raise_the_sdk_exception_with_headers(client, status, exception):
    with pytest.raises(exception) as raised:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-status": str(status)},
        )
    error = raised.value
    assert error.status_code == status
    assert error.response.headers["retry-after"] == "1"
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.response.headers["x-request-id"] == "req_fake"
    if status == 429:
        assert error.code == "rate_limit_exceeded"


def test_relay_errors_raise_the_sdk_exception(relay):
    client = openai.OpenAI(api_key="sk-x", base_url=relay.url + "/nope/v1", max_retries=0)
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.list()
    assert raised.value.code == "unknown_route"


def test_sdk_stream_is_not_buffered(client):
    """The SDK's iterator yields the first chunk long before the upstream has sent the last."""
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "slow"}],
        stream=True,
        extra_headers={"x-fake-chunks": "10", "x-fake-delay": "0.1"},
    )
    arrivals = []
    for chunk in stream:
        arrivals.append((time.monotonic_ns(), int(chunk.model_extra["sent_ns"])))
    first_arrival = arrivals[0][0]
    last_sent = arrivals[-1][1]
    assert first_arrival < last_sent - 500_000_000  # held >= 0.5 s before the upstream sent the last chunk
