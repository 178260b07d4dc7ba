"""Reading the tokens an answer used from its own usage fields, as its bytes pass to the client.

`UsageReader.feed(chunk)` is called with each chunk *after* it was handed on, and
never holds anything back. Two ways of reading:

- event streams (`text/event-stream`): line by line. Only a line that mentions
  `"usage` (and not only as `"usage":null`) is decoded as JSON; every other line
  costs one substring search. At most one partial line is kept between chunks,
  and a line longer than `MAX_LINE` is skipped, so memory per stream is bounded.
- JSON answers: kept whole up to `MAX_JSON` and decoded at the end; past that,
  only the last `TAIL` bytes are kept and the usage object is found in them
  (embeddings put `model` and `usage` after their vectors).

gzip- and deflate-encoded answers are decoded for reading only (the client gets
the bytes as they came), at most `MAX_DECODED` bytes of output, in bounded steps.
Other encodings (br, zstd) are not read: their tokens are unknown.

What is read, whichever API: OpenAI chat completions and embeddings (`usage`:
prompt/completion tokens), Responses (`usage`, or `response.usage` of the
`response.*` events), Anthropic Messages (`usage`; `message.usage` of
`message_start`, then `message_delta`'s), Gemini (`usageMetadata`). Stream events
refine the figures field by field, last value wins: Anthropic's delta carries the
running output count, Gemini repeats the running totals in each chunk.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from typing import Any

MAX_LINE = 1024 * 1024  # an event line longer than this is not read
MAX_JSON = 1024 * 1024  # JSON answers up to this size are decoded whole
TAIL = 64 * 1024  # of a larger JSON answer, the last bytes are searched for its usage
MAX_DECODED = 64 * 1024 * 1024  # gzip: stop reading after this much output (a bomb costs no more)
DECODE_STEP = 256 * 1024
MAX_MODEL = 100
MAX_TOKENS = 10**12

_USAGE = b'"usage'
_NULL_USAGE = b'"usage":null'
_TAIL_USAGE = re.compile(rb'"(usage|usageMetadata)"\s*:\s*\{')
_TAIL_MODEL = re.compile(rb'"(model|modelVersion)"\s*:\s*"([^"\\]{1,100})"')


@dataclass(frozen=True)
class Tokens:
    """What one answer used, in the OpenAI sense: input counts cached tokens, output counts reasoning tokens."""

    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _count(document: Any, *path: str) -> int | None:
    for name in path:
        if not isinstance(document, dict):
            return None
        document = document.get(name)
    if isinstance(document, int) and not isinstance(document, bool) and 0 <= document < MAX_TOKENS:
        return document
    return None


def _model(value: Any) -> str:
    if isinstance(value, str) and value.isprintable():
        return value[:MAX_MODEL]
    return ""


class UsageReader:
    """Collects the usage of one answer; `result()` is its `Tokens`, or None when the answer reported none."""

    def __init__(self, stream: bool, encoding: str = ""):
        self.stream = stream
        self.model = ""
        self.raw: dict[str, Any] = {}  # the usage fields seen so far, merged
        self.gemini = False
        self.readable = encoding in ("", "identity", "gzip", "x-gzip", "deflate")
        self._decoder = zlib.decompressobj(47) if encoding in ("gzip", "x-gzip", "deflate") else None  # 47: auto
        self._decoded = 0
        self._pending = b""  # the event stream's partial last line, or the JSON body so far
        self._skipping = False  # inside an event line too long to read
        self._tail_only = False  # the JSON body outgrew MAX_JSON: only its tail is kept

    # -- feeding -------------------------------------------------------------------------------------------

    def feed(self, chunk: bytes) -> None:
        if not self.readable or not chunk:
            return
        if self._decoder is None:
            self._take(chunk)
            return
        try:
            data = chunk
            while data and self.readable:
                piece = self._decoder.decompress(data, DECODE_STEP)
                data = self._decoder.unconsumed_tail
                self._decoded += len(piece)
                if self._decoded > MAX_DECODED:
                    self._give_up()
                    return
                self._take(piece)
        except zlib.error:
            self._give_up()

    def _give_up(self) -> None:
        self.readable = False
        self._pending = b""
        self._decoder = None

    def _take(self, data: bytes) -> None:
        if self.stream:
            self._take_lines(data)
        else:
            self._take_json(data)

    def _take_lines(self, data: bytes) -> None:
        if self._skipping:
            end = data.find(b"\n")
            if end < 0:
                return
            self._skipping = False
            data = data[end + 1 :]
        last = data.rfind(b"\n")
        if last < 0:
            self._keep_partial(data)
            return
        block = self._pending + data[:last] if self._pending else data[:last]
        self._pending = b""
        self._keep_partial(data[last + 1 :])
        if _USAGE in block:
            for line in block.split(b"\n"):
                self._line(line)

    def _keep_partial(self, data: bytes) -> None:
        if len(self._pending) + len(data) > MAX_LINE:
            self._pending, self._skipping = b"", True
        elif data:
            self._pending += data

    def _line(self, line: bytes) -> None:
        if line.count(_USAGE) <= line.count(_NULL_USAGE):
            return
        line = line.strip()
        if line.startswith(b"data:"):
            self._document(_decode(line[5:]))

    def _take_json(self, data: bytes) -> None:
        self._pending += data
        if len(self._pending) > MAX_JSON:
            self._tail_only = True
            self._pending = self._pending[-TAIL:]

    # -- reading -------------------------------------------------------------------------------------------

    def _document(self, document: Any) -> None:
        """Take the usage of one JSON document: an answer, a stream event, or an element of Gemini's array."""
        if isinstance(document, list):  # Gemini's streamGenerateContent without alt=sse: a JSON array
            for item in document:
                self._document(item)
            return
        if not isinstance(document, dict):
            return
        usage, model = document.get("usage"), document.get("model")
        inner = document.get("message") if document.get("type") == "message_start" else None
        if inner is None and str(document.get("type", "")).startswith("response."):
            inner = document.get("response")
        if isinstance(inner, dict):
            usage, model = inner.get("usage"), inner.get("model")
        if not isinstance(usage, dict) and isinstance(document.get("usageMetadata"), dict):
            usage, model, self.gemini = document["usageMetadata"], document.get("modelVersion"), True
        if isinstance(usage, dict):
            self.raw.update(usage)
            self.model = _model(model) or self.model

    def finish(self) -> None:
        """The answer has ended: read what is left (the JSON body, an event stream's unterminated last line)."""
        if not self.readable:
            return
        if self._decoder is not None:
            self._take(self._decoder.flush(DECODE_STEP))
        pending, self._pending = self._pending, b""
        if self.stream:
            if not self._skipping:
                self._line(pending)
        elif self._tail_only:
            self._read_tail(pending)
        else:
            self._document(_decode(pending))

    def _read_tail(self, tail: bytes) -> None:
        found = list(_TAIL_USAGE.finditer(tail))
        if not found:
            return
        usage = found[-1]
        self.gemini = usage.group(1) == b"usageMetadata"
        models = list(_TAIL_MODEL.finditer(tail))
        try:
            value, _ = json.JSONDecoder().raw_decode(tail[usage.end() - 1 :].decode("utf-8", "replace"))
        except ValueError:
            return
        if isinstance(value, dict):
            self.raw.update(value)
            if models:
                self.model = _model(models[-1].group(2).decode("utf-8", "replace"))

    def result(self) -> Tokens | None:
        raw = self.raw
        if self.gemini:
            prompt, candidates = _count(raw, "promptTokenCount"), _count(raw, "candidatesTokenCount")
            if prompt is None and candidates is None:
                return None
            tools, thoughts = _count(raw, "toolUsePromptTokenCount") or 0, _count(raw, "thoughtsTokenCount") or 0
            return Tokens(self.model, (prompt or 0) + tools, (candidates or 0) + thoughts,
                          _count(raw, "cachedContentTokenCount") or 0, thoughts)
        if "prompt_tokens" in raw:  # OpenAI chat completions, completions, embeddings
            prompt = _count(raw, "prompt_tokens")
            if prompt is None:
                return None
            return Tokens(self.model, prompt, _count(raw, "completion_tokens") or 0,
                          _count(raw, "prompt_tokens_details", "cached_tokens") or 0,
                          _count(raw, "completion_tokens_details", "reasoning_tokens") or 0)
        given, output = _count(raw, "input_tokens"), _count(raw, "output_tokens")
        if given is None and output is None:
            return None
        if "input_tokens_details" in raw or "output_tokens_details" in raw or "total_tokens" in raw:  # Responses
            return Tokens(self.model, given or 0, output or 0,
                          _count(raw, "input_tokens_details", "cached_tokens") or 0,
                          _count(raw, "output_tokens_details", "reasoning_tokens") or 0)
        # Anthropic: input_tokens leaves out the cache's; counted in, as OpenAI's prompt_tokens does.
        cache_read = _count(raw, "cache_read_input_tokens") or 0
        cache_write = _count(raw, "cache_creation_input_tokens") or 0
        return Tokens(self.model, (given or 0) + cache_read + cache_write, output or 0, cache_read)


def _decode(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:  # UnicodeDecodeError included
        return None
