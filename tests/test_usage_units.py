"""The usage reader, labels and budgets on their own: every split of a stream, bounded memory, hostile bodies."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import pytest

from access.keys import RelayKeys
from access.labels import parse_relay_keys, unlabelled_name
from proxy.settings import SettingsError
from usage.budgets import Budget, parse_budgets
from usage.reader import MAX_LINE, UsageReader

ANTHROPIC_STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"model":"claude-x","usage":'
    b'{"input_tokens":20,"cache_read_input_tokens":4,"cache_creation_input_tokens":1,"output_tokens":1}}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"text":"the \\"usage\\" word"}}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":9}}\n\n'
)


def read(chunks: list[bytes], stream: bool = True, encoding: str = ""):
    reader = UsageReader(stream, encoding)
    for chunk in chunks:
        reader.feed(chunk)
    reader.finish()
    return reader.result()


def test_every_split_of_a_stream_reads_the_same():
    whole = read([ANTHROPIC_STREAM])
    assert (whole.model, whole.input_tokens, whole.output_tokens, whole.cached_tokens) == ("claude-x", 25, 9, 4)
    for cut in range(1, len(ANTHROPIC_STREAM)):
        assert read([ANTHROPIC_STREAM[:cut], ANTHROPIC_STREAM[cut:]]) == whole, cut
    assert read([bytes([byte]) for byte in ANTHROPIC_STREAM]) == whole


def test_null_usage_chunks_are_not_decoded_and_crlf_events_are_read():
    chunks = [b'data: {"model":"m","usage":null,"choices":[]}\r\n\r\n',
              b'data: {"model":"m","usage":{"prompt_tokens":3,"completion_tokens":2}}\r\n\r\ndata: [DONE]\r\n\r\n']
    tokens = read(chunks)
    assert (tokens.model, tokens.input_tokens, tokens.output_tokens) == ("m", 3, 2)
    assert read(chunks[:1]) is None  # null usage only: unknown, not zero


def test_an_endless_line_is_dropped_and_memory_stays_bounded():
    reader = UsageReader(True)
    reader.feed(b'data: {"usage": {"prompt_tokens": 1')
    for _ in range(20):
        reader.feed(b"x" * (MAX_LINE // 8))
        assert len(reader._pending) <= MAX_LINE
    reader.feed(b'}\n\ndata: {"model":"m","usage":{"prompt_tokens":5,"completion_tokens":1}}\n\n')
    reader.finish()
    assert reader.result().input_tokens == 5  # the next event is read again


def test_a_large_json_answer_keeps_only_its_tail():
    vectors = [{"embedding": [0.123456] * 2000, "index": i} for i in range(200)]
    body = json.dumps({"object": "list", "data": vectors, "model": "text-embedding-3-large",
                       "usage": {"prompt_tokens": 77, "total_tokens": 77}}).encode()
    assert len(body) > 2_000_000
    reader = UsageReader(False)
    for start in range(0, len(body), 65536):
        reader.feed(body[start:start + 65536])
        assert len(reader._pending) <= 1024 * 1024 + 65536
    reader.finish()
    tokens = reader.result()
    assert (tokens.model, tokens.input_tokens, tokens.output_tokens) == ("text-embedding-3-large", 77, 0)


def test_gzip_is_read_and_a_gzip_bomb_is_given_up():
    body = gzip.compress(json.dumps({"model": "m", "usage": {"prompt_tokens": 4, "completion_tokens": 2}}).encode())
    assert read([body[:7], body[7:]], stream=False, encoding="gzip").total_tokens == 6
    bomb = gzip.compress(b" " * (200 * 1024 * 1024))
    reader = UsageReader(False, "gzip")
    reader.feed(bomb)
    reader.finish()
    assert reader.result() is None and not reader.readable and reader._pending == b""
    assert read([b"\x00garbage"], stream=False, encoding="gzip") is None
    assert read([b"{}"], stream=False, encoding="br") is None  # not read: unknown


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'{"usage": "x"}', b'{"usage": {"prompt_tokens": -1}}',
                                  b'{"usage": {"prompt_tokens": true}}', b'{"usage": {"input_tokens": 1e400}}'])
def test_lying_bodies_give_unknown(body):
    assert read([body], stream=False) is None


def test_labels():
    keys = parse_relay_keys("alice:rk-alice-0123456789, rk-plain-0123456789 ,bob:rk:with:colons")
    assert [(k.label, k.key) for k in keys] == [
        ("alice", "rk-alice-0123456789"), (unlabelled_name("rk-plain-0123456789"), "rk-plain-0123456789"),
        ("bob", "rk:with:colons")]
    relay_keys = RelayKeys(keys)
    assert relay_keys.label_of("rk:with:colons") == "bob" and relay_keys.label_of("bob:rk:with:colons") is None
    assert relay_keys.label_of("rk-alice-0123456789") == "alice" and relay_keys.matches("rk-plain-0123456789")
    with pytest.raises(SettingsError, match="label") as caught:
        parse_relay_keys("a b:rk-secret-value")
    assert "rk-secret-value" not in str(caught.value)
    with pytest.raises(SettingsError, match="visible ASCII"):
        parse_relay_keys("alice:")


def test_budgets_parse_and_retry_after_is_the_next_utc_period():
    budgets = parse_budgets("alice=2_000_000/month, bob=100000/day", ["alice", "bob"])
    assert budgets == {"alice": [Budget("alice", 2_000_000, "month")], "bob": [Budget("bob", 100_000, "day")]}
    for bad in ("carol=1/day", "alice=1/week", "alice=0/day", "alice"):
        with pytest.raises(SettingsError):
            parse_budgets(bad, ["alice"])
    now = datetime(2024, 2, 29, 23, 59, 30, 500000, tzinfo=UTC)
    assert Budget("a", 1, "day").seconds_left(now) == 30
    assert Budget("a", 1, "month").seconds_left(now) == 30
    assert Budget("a", 1, "month").seconds_left(datetime(2024, 12, 31, 0, 0, tzinfo=UTC)) == 86400
    assert Budget("a", 1, "month").first_day(now.date()).isoformat() == "2024-02-01"
