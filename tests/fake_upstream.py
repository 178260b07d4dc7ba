"""A fake of the OpenAI API (and friends) on 127.0.0.1, for the tests and the benchmark.

A real HTTP/1.1 server on asyncio (uvloop when installed), fast enough that the
benchmark measures the relay and not the fake. Each request may steer the answer
with `x-fake-*` headers:

| header | effect |
| --- | --- |
| `x-fake-status: 429` | answer with that status, an OpenAI error body, `retry-after` and `x-ratelimit-*` |
| `x-fake-chunks: 10`, `x-fake-delay: 0.1` | event streams: number of chunks, seconds between them |
| `x-fake-first-byte-delay: 2` | wait before sending the status line |
| `x-fake-pause: 3` | stream: pause after the first event (`x-fake-pause-mid-event: 1` pauses inside the second) |
| `x-fake-drop-after: 3` | stream: drop the connection after that many events |
| `x-fake-framing: close` | stream ended by closing the connection (`length`: with a `Content-Length`), not chunked |
| `x-fake-gzip: 1` | gzip a JSON answer or a stream (each event flushed) when the client accepts it |
| `x-fake-reply: text` | the assistant's reply (default: `echo: <last user message>`) |
| `x-fake-size: N` | body size of `/audio/speech` and `/download` |
| `x-fake-cut: drop` / `stall` | a JSON answer: send half its body, then drop the connection / go silent for 10 s |
| `x-fake-usage: none` | answer without any usage figures (chat, Responses, Anthropic Messages, Gemini) |
| `x-fake-size: N` on `/events/flood` | an event stream of N bytes (default 100 MiB), as fast as the client takes it |
| `x-fake-header-size: N` | answer with one header of N bytes |
| `x-fake-early: 1` | answer before reading the request body, then read it and keep the connection (legal in HTTP/1.1) |
| `x-fake-echo-auth: 1` | with `x-fake-status`: the error message repeats the request's credential, as a leaky gateway |

Answers carry usage in each API's real shape (`USAGE` below): OpenAI chat completions (the final
chunk of a stream when `stream_options.include_usage`, `"usage":null` in the others), Responses
(`response.completed`), embeddings, Anthropic Messages (`/v1/messages`: `message_start` and
`message_delta` in a stream) and Gemini (`:generateContent`, `:streamGenerateContent`, SSE with
`alt=sse`, else a JSON array).

`FakeUpstream.refuse_key(key, 401)` makes it refuse every request that carries that key.

Every request is recorded (`FakeUpstream.records`), with whether and when the
client closed the connection early. Routes are matched on the path's end, so
`/v1/chat/completions` and `/openai/v1/chat/completions` reach the same handler;
any unknown path answers with an echo of the request. More handlers can be
added with `FakeUpstream.route(suffix)`. Besides OpenAI's endpoints it serves Gemini's
`:streamGenerateContent` / `:generateContent` and resumable `upload/v1beta/files`,
Anthropic-on-Vertex `:rawPredict`, and Anthropic's `messages/batches` (whose
`results_url` is absolute, at this server, as the real API's is).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import hashlib
import json
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

PATTERN = hashlib.sha256(b"fake").digest() * (1024 * 1024 // 32)  # 1 MiB of deterministic bytes
KEEP_BODY = 64 * 1024 * 1024  # bodies up to this size are kept in the record


def pattern_bytes(size: int) -> bytes:
    """The `size` bytes that `/download` and `/audio/speech` send."""
    whole, rest = divmod(size, len(PATTERN))
    return PATTERN * whole + PATTERN[:rest]


@dataclass
class Record:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    body_len: int = 0
    sha256: str = ""
    received_at: float = field(default_factory=time.monotonic)
    client_closed_at: float | None = None  # when the client hung up before the answer was complete
    peer: tuple = ()  # the client's (address, port): two requests with one peer came over one connection
    completed: bool = False

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def header_names(self) -> set[str]:
        return {key.lower() for key, _ in self.headers}

    def json(self):
        return json.loads(self.body)


class Request:
    def __init__(self, record: Record, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.record = record
        self.reader = reader
        self.writer = writer
        self.close_after = False

    def h(self, name: str, default: str = "") -> str:
        return self.record.header(name) or default

    def client_gone(self) -> bool:
        """True once the client has closed its side (checked while answering).

        asyncio hands the peer's FIN to the reader without a read pending, and a client
        waiting for this answer sends nothing else, so an empty reader at EOF means it left.
        """
        if self.reader.at_eof() or self.writer.transport.is_closing():
            if self.record.client_closed_at is None:
                self.record.client_closed_at = time.monotonic()
            return True
        return False

    async def send(self, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        head = [f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}"]
        head += [f"{k}: {v}" for k, v in headers]
        if not any(k.lower() == "content-length" for k, _ in headers):
            head.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await self.writer.drain()

    async def json(self, payload, status: int = 200, headers: list[tuple[str, str]] | None = None) -> None:
        body = json.dumps(payload).encode()
        headers = [("Content-Type", "application/json"), ("x-request-id", "req_fake"), *(headers or [])]
        if self.h("x-fake-gzip") == "1" and "gzip" in self.h("accept-encoding"):
            body = gzip.compress(body, mtime=0)
            headers.append(("Content-Encoding", "gzip"))
        cut = self.h("x-fake-cut")
        if cut:
            await self.send(status, [*headers, ("Content-Length", str(len(body)))], body[: len(body) // 2])
            if cut == "stall":
                await self._sleep(10)
            self.writer.transport.abort()
            self.close_after = True
            return
        await self.send(status, headers, body)

    async def stream(self, events: list[bytes], content_type: str = "text/event-stream") -> None:
        """Send `events` one by one, as the x-fake-* headers say (delays, pauses, drops, framing)."""
        delay = float(self.h("x-fake-delay", "0"))
        pause = float(self.h("x-fake-pause", "0"))
        mid_event = self.h("x-fake-pause-mid-event") == "1"
        drop_after = int(self.h("x-fake-drop-after", "-1"))
        framing = self.h("x-fake-framing", "chunked")
        close_framing = framing == "close"
        headers = ["HTTP/1.1 200 OK", f"Content-Type: {content_type}", "x-request-id: req_fake_stream"]
        if framing == "length":  # each __SENT_NS__ becomes a clock reading of the same number of digits
            grows = len(str(time.monotonic_ns())) - len(b"__SENT_NS__")
            headers.append(f"Content-Length: {sum(len(e) + e.count(b'__SENT_NS__') * grows for e in events)}")
        else:
            headers.append("Connection: close" if close_framing else "Transfer-Encoding: chunked")
        packer = None
        if self.h("x-fake-gzip") == "1" and "gzip" in self.h("accept-encoding"):  # each event flushed whole
            packer = zlib.compressobj(wbits=31)
            headers.append("Content-Encoding: gzip")
        self.writer.write(("\r\n".join(headers) + "\r\n\r\n").encode())
        self.close_after = close_framing

        def frame(data: bytes) -> bytes:
            if packer is not None:
                data = packer.compress(data) + packer.flush(zlib.Z_SYNC_FLUSH)
            return b"%x\r\n%s\r\n" % (len(data), data) if framing == "chunked" else data

        for index, event in enumerate(events):
            if index == drop_after:
                self.writer.transport.abort()
                self.close_after = True
                return
            if self.client_gone():
                self.close_after = True
                return
            event = event.replace(b"__SENT_NS__", str(time.monotonic_ns()).encode())
            if index == 1 and pause and mid_event:
                half = len(event) // 2
                self.writer.write(frame(event[:half]))
                await self.writer.drain()
                await self._sleep(pause)
                self.writer.write(frame(event[half:]))
            else:
                self.writer.write(frame(event))
            try:
                await self.writer.drain()
            except ConnectionError:
                self.client_gone()
                self.close_after = True
                return
            if index == 0 and pause and not mid_event:
                await self._sleep(pause)
            elif delay and index < len(events) - 1:
                await self._sleep(delay)
        if packer is not None:
            rest = packer.flush()
            self.writer.write(b"%x\r\n%s\r\n" % (len(rest), rest) if framing == "chunked" else rest)
        if framing == "chunked":
            self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, noticing a client that hangs up meanwhile."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.client_gone():
                return
            await asyncio.sleep(min(left, 0.02))


Handler = Callable[[Request], Awaitable[None]]

REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
           403: "Forbidden", 404: "Not Found", 413: "Payload Too Large", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def sse(payload) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def split_reply(reply: str, count: int) -> list[str]:
    count = max(1, count)
    size = max(1, -(-len(reply) // count))
    pieces = [reply[i : i + size] for i in range(0, len(reply), size)] or [""]
    return pieces + [""] * (count - len(pieces))


def last_user_message(messages: list) -> str:
    for message in reversed(messages or []):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


# Each API's usage as its answers carry it (the figures the usage tests expect).
USAGE = {
    "chat": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
             "prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 1, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                           "rejected_prediction_tokens": 0}},
    "responses": {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 3}, "output_tokens": 6,
                  "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 18},
    "embeddings": {"prompt_tokens": 3, "total_tokens": 3},
    "anthropic": {"input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4,
                  "output_tokens": 7, "service_tier": "standard"},
    "gemini": {"promptTokenCount": 8, "candidatesTokenCount": 4, "totalTokenCount": 14, "thoughtsTokenCount": 2,
               "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}]},
}


def with_usage(req: Request, answer: dict, name: str, field: str = "usage") -> dict:
    """`answer` with the API's usage under `field`, unless the request said `x-fake-usage: none`."""
    return answer if req.h("x-fake-usage") == "none" else {**answer, field: USAGE[name]}


async def chat_completions(req: Request) -> None:
    payload = req.record.json() if req.record.body else {}
    model = payload.get("model", "gpt-4o-mini")
    reply = req.h("x-fake-reply") or f"echo: {last_user_message(payload.get('messages'))}"
    usage = with_usage(req, {}, "chat").get("usage")
    if not payload.get("stream"):
        await req.json(with_usage(req, {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
        }, "chat"))
        return
    pieces = split_reply(reply, int(req.h("x-fake-chunks", "5")))
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": model,
            "sent_ns": "__SENT_NS__"}
    include_usage = (payload.get("stream_options") or {}).get("include_usage")
    if include_usage:
        base["usage"] = None  # as the API does: every chunk has "usage":null, the last one the figures
    events = []
    for index, piece in enumerate(pieces):
        delta = {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
        finish = "stop" if index == len(pieces) - 1 else None
        events.append(sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
    if include_usage and usage:
        events.append(sse({**base, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    await req.stream(events)


async def responses(req: Request) -> None:
    payload = req.record.json() if req.record.body else {}
    text = payload.get("input") if isinstance(payload.get("input"), str) else "hi"
    reply = req.h("x-fake-reply") or f"echo: {text}"
    response = {"id": "resp_fake", "object": "response", "created_at": 1700000000, "status": "completed",
                "model": payload.get("model", "gpt-4o-mini"), "output": [
                    {"type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
                     "content": [{"type": "output_text", "text": reply, "annotations": []}]}],
                "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "usage": None}
    response = with_usage(req, response, "responses")
    if not payload.get("stream"):
        await req.json(response)
        return
    events = [b"event: response.created\n" + sse({"type": "response.created", "sequence_number": 0,
              "response": {**response, "status": "in_progress", "output": [], "usage": None}})]
    for index, piece in enumerate(split_reply(reply, int(req.h("x-fake-chunks", "5")))):
        events.append(b"event: response.output_text.delta\n" + sse({
            "type": "response.output_text.delta", "sequence_number": index + 1, "item_id": "msg_fake",
            "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []}))
    events.append(b"event: response.completed\n" + sse({"type": "response.completed",
                  "sequence_number": len(events), "response": response}))
    await req.stream(events)


async def embeddings(req: Request) -> None:
    payload = req.record.json()
    inputs = payload["input"] if isinstance(payload["input"], list) else [payload["input"]]
    await req.json({"object": "list", "model": payload.get("model", "text-embedding-3-small"),
                    "data": [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                             for i in range(len(inputs))],
                    "usage": USAGE["embeddings"]})


def named_sse(name: str, payload: dict) -> bytes:
    return f"event: {name}\n".encode() + sse(payload)


async def anthropic_messages(req: Request) -> None:
    """Anthropic's Messages API: a message, or its event stream (usage in message_start and message_delta)."""
    payload = req.record.json() if req.record.body else {}
    model = payload.get("model", "claude-sonnet-4-5")
    reply = req.h("x-fake-reply") or f"echo: {last_user_message(payload.get('messages'))}"
    message = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
               "content": [{"type": "text", "text": reply}], "stop_reason": "end_turn", "stop_sequence": None}
    if not payload.get("stream"):
        await req.json(with_usage(req, message, "anthropic"))
        return
    usage = with_usage(req, {}, "anthropic").get("usage")
    start = {**message, "content": [], "stop_reason": None}
    if usage:
        start["usage"] = {**usage, "output_tokens": 1}
    events = [named_sse("message_start", {"type": "message_start", "message": start}),
              named_sse("content_block_start", {"type": "content_block_start", "index": 0,
                                                "content_block": {"type": "text", "text": ""}}),
              named_sse("ping", {"type": "ping"})]
    for piece in split_reply(reply, int(req.h("x-fake-chunks", "5"))):
        events.append(named_sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                        "delta": {"type": "text_delta", "text": piece}}))
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}}
    if usage:
        delta["usage"] = {"output_tokens": usage["output_tokens"]}
    events += [named_sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
               named_sse("message_delta", delta), named_sse("message_stop", {"type": "message_stop"})]
    await req.stream(events)


def gemini_chunk(req: Request, text: str, usage: dict | None, final: bool) -> dict:
    """One `GenerateContentResponse` as the Gemini API sends it, for the model named in the path."""
    candidate = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if final:
        candidate["finishReason"] = "STOP"
    chunk = {"candidates": [candidate], "modelVersion": gemini_model(req), "responseId": "fake-gemini"}
    return chunk if usage is None or req.h("x-fake-usage") == "none" else {**chunk, "usageMetadata": usage}


def gemini_request(req: Request) -> bool:
    """A Gemini generation request (a body with `contents`); anything else at these paths is echoed."""
    try:
        return "contents" in req.record.json()
    except ValueError:
        return False


async def gemini_generate(req: Request) -> None:
    if not gemini_request(req):
        await echo(req)
        return
    await req.json(gemini_chunk(req, gemini_reply(req), USAGE["gemini"], True))


async def gemini_stream(req: Request) -> None:
    """streamGenerateContent: SSE with `alt=sse` (events end with CRLF CRLF, as Google's do), else a JSON array.

    Every chunk carries the running usageMetadata, the last one the final figures."""
    if not gemini_request(req):
        await echo(req)
        return
    pieces = split_reply(gemini_reply(req), int(req.h("x-fake-chunks", "3")))
    final = USAGE["gemini"]
    chunks = []
    for index, piece in enumerate(pieces):
        last = index == len(pieces) - 1
        running = final if last else {"promptTokenCount": final["promptTokenCount"], "candidatesTokenCount": index + 1,
                                      "totalTokenCount": final["promptTokenCount"] + index + 1}
        chunks.append(gemini_chunk(req, piece, running, last))
    if "alt=sse" in req.record.query:
        await req.stream([b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n" for chunk in chunks])
    else:
        parts = [b"[" + json.dumps(chunks[0], indent=2).encode()]
        parts += [b",\r\n" + json.dumps(chunk, indent=2).encode() for chunk in chunks[1:]]
        await req.stream([*parts, b"]"], content_type="application/json")


MODELS = [{"id": "gpt-4o-mini", "object": "model", "created": 1700000000, "owned_by": "openai"},
          {"id": "gpt-4o", "object": "model", "created": 1700000000, "owned_by": "openai"}]


async def models(req: Request) -> None:
    await req.json({"object": "list", "data": MODELS})


async def files(req: Request) -> None:
    """Multipart upload: answers with the uploaded file's byte count and sha256."""
    content_type = req.h("content-type")
    boundary = content_type.partition("boundary=")[2].strip('"').encode()
    filename, content, purpose = "", b"", ""
    for part in req.record.body.split(b"--" + boundary):
        head, _, data = part.partition(b"\r\n\r\n")
        data = data[:-2] if data.endswith(b"\r\n") else data
        if b'name="file"' in head:
            filename = head.partition(b'filename="')[2].partition(b'"')[0].decode()
            content = data
        elif b'name="purpose"' in head:
            purpose = data.decode()
    await req.json({"id": "file-fake", "object": "file", "bytes": len(content), "created_at": 1700000000,
                    "filename": filename, "purpose": purpose or "assistants", "status": "processed",
                    "sha256": hashlib.sha256(content).hexdigest()})


async def speech(req: Request) -> None:
    await req.send(200, [("Content-Type", "audio/mpeg")], pattern_bytes(int(req.h("x-fake-size", "4096"))))


async def download(req: Request) -> None:
    size = int(req.h("x-fake-size") or parse_qs(req.record.query).get("size", ["1048576"])[0])
    req.writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
                     .encode())
    sent = 0
    while sent < size:
        piece = PATTERN[: min(len(PATTERN), size - sent)]
        req.writer.write(piece)
        sent += len(piece)
        await req.writer.drain()


async def event_flood(req: Request) -> None:
    """`x-fake-size` bytes (default 100 MiB) of 1 KiB events, chunked, as fast as the client takes them."""
    size = int(req.h("x-fake-size", str(100 * 1024 * 1024)))
    event = b"data: " + b"x" * 1016 + b"\n\n"
    batch = b"".join(b"%x\r\n%s\r\n" % (len(event), event) for _ in range(64))  # 64 events per write
    req.writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(size // (64 * len(event))):
        if req.client_gone():
            req.close_after = True
            return
        req.writer.write(batch)
        try:
            await req.writer.drain()
        except ConnectionError:
            req.client_gone()
            req.close_after = True
            return
    req.writer.write(b"0\r\n\r\n")
    await req.writer.drain()


async def upload(req: Request) -> None:
    await req.json({"bytes": req.record.body_len, "sha256": req.record.sha256})


async def echo(req: Request) -> None:
    rec = req.record
    await req.json({"method": rec.method, "target": rec.target, "path": rec.path, "query": rec.query,
                    "headers": rec.headers, "body_len": rec.body_len, "sha256": rec.sha256,
                    "body_b64": base64.b64encode(rec.body[:65536]).decode()})


async def error(req: Request, status: int) -> None:
    types = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
             429: "rate_limit_error"}
    codes = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
    messages = {401: "Incorrect API key provided.", 429: "Rate limit reached for requests."}
    headers = [("retry-after", "1"), ("x-ratelimit-limit-requests", "500"),
               ("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-reset-requests", "1s")]
    message = messages.get(status, f"fake error {status}")
    if req.h("x-fake-echo-auth") == "1":
        message += f" You sent: {req.h('authorization')} {req.h('x-api-key')} {req.h('x-goog-api-key')}"
    await req.json({"error": {"message": message,
                              "type": types.get(status, "server_error"), "param": None,
                              "code": codes.get(status)}}, status=status, headers=headers)


def gemini_text(payload: dict) -> str:
    for content in reversed(payload.get("contents") or []):
        texts = [part.get("text", "") for part in content.get("parts", []) if isinstance(part, dict)]
        if content.get("role", "user") == "user" and texts:
            return "".join(texts)
    return ""


def gemini_model(req: Request) -> str:
    return req.record.path.rpartition("/models/")[2].partition(":")[0] or "gemini-2.5-flash"


def gemini_reply(req: Request) -> str:
    return req.h("x-fake-reply") or f"echo: {gemini_text(req.record.json())}"


async def gemini_upload(req: Request) -> None:
    """Gemini's resumable upload: `start` answers with `x-goog-upload-url` at this server; `upload, finalize`
    there answers with the file."""
    command = req.h("x-goog-upload-command")
    if command == "start":
        url = f"http://{req.h('host')}{req.record.path}?upload_id=fake-upload-1&upload_protocol=resumable"
        await req.send(200, [("x-goog-upload-url", url), ("x-goog-upload-status", "active"),
                             ("x-goog-upload-chunk-granularity", "8388608"), ("Content-Type", "text/plain")])
        return
    digest = hashlib.sha256(req.record.body).hexdigest()
    file = {"name": "files/fake-file-1", "displayName": digest, "mimeType": "text/plain",
            "sizeBytes": str(req.record.body_len), "state": "ACTIVE",
            "uri": f"http://{req.h('host')}/v1beta/files/fake-file-1", "sha256Hash": digest}
    status = "final" if "finalize" in command else "active"
    await req.json({"file": file}, headers=[("x-goog-upload-status", status)])


def anthropic_message(model: str, text: str) -> dict:
    return {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 2}}


async def vertex_raw_predict(req: Request) -> None:
    """Anthropic on Vertex AI: `.../publishers/anthropic/models/<model>@<version>:rawPredict`."""
    model = req.record.path.rpartition("/models/")[2].partition(":")[0]
    await req.json(anthropic_message(model, f"vertex: {req.record.path}"))


BATCH_ID = "msgbatch_fake01"


def anthropic_batch(base: str, batch_id: str, status: str) -> dict:
    """A message batch; once ended, its `results_url` is absolute, at this server, as the real API's is."""
    ended = status == "ended"
    return {"id": batch_id, "type": "message_batch", "processing_status": status,
            "request_counts": {"processing": 0 if ended else 2, "succeeded": 2 if ended else 0, "errored": 0,
                               "canceled": 0, "expired": 0},
            "ended_at": "2026-01-01T00:10:00Z" if ended else None, "created_at": "2026-01-01T00:00:00Z",
            "expires_at": "2026-01-02T00:00:00Z", "archived_at": None, "cancel_initiated_at": None,
            "results_url": f"{base}/{batch_id}/results" if ended else None}


async def anthropic_batches(req: Request) -> None:
    """`/v1/messages/batches`: create (POST), list (GET); `/<id>`: retrieve; `/<id>/cancel`; `/<id>/results`."""
    path = req.record.path
    head, _, tail = path.partition("/messages/batches")
    base = f"http://{req.h('host')}{head}/messages/batches"
    parts = [part for part in tail.split("/") if part]
    if not parts and req.record.method == "POST":
        await req.json(anthropic_batch(base, BATCH_ID, "in_progress"))
    elif not parts:
        batches = [anthropic_batch(base, BATCH_ID, "ended"), anthropic_batch(base, "msgbatch_2", "ended")]
        await req.json({"data": batches, "has_more": False, "first_id": BATCH_ID, "last_id": "msgbatch_2"})
    elif parts[1:] == ["results"]:
        lines = [json.dumps({"custom_id": f"req-{n}", "result": {
            "type": "succeeded", "message": anthropic_message("claude-sonnet-4", f"result {n} of {parts[0]}")}})
            for n in (1, 2)]
        await req.send(200, [("Content-Type", "application/binary")], "\n".join(lines).encode() + b"\n")
    elif parts[1:] == ["cancel"]:
        await req.json(anthropic_batch(base, parts[0], "canceling"))
    else:
        await req.json(anthropic_batch(base, parts[0], "ended"))


class FakeUpstream:
    """The server; run it in a background thread (`start()`) or as a process (`python -m tests.fake_upstream`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, record: bool = True):
        self.host = host
        self.port = port
        self.record = record
        self.records: list[Record] = []
        self.handlers: dict[str, Handler] = {}
        self.refused_keys: dict[str, int] = {}
        for suffix, handler in [("/chat/completions", chat_completions), ("/responses", responses),
                                ("/embeddings", embeddings), ("/models", models),
                                ("/upload/v1beta/files", gemini_upload), ("/files", files),
                                ("/audio/speech", speech), ("/download", download), ("/upload", upload),
                                ("/v1/messages", anthropic_messages),
                                (":streamGenerateContent", gemini_stream), (":generateContent", gemini_generate),
                                (":rawPredict", vertex_raw_predict), ("/events/flood", event_flood)]:
            self.route(suffix, handler)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def route(self, suffix: str, handler: Handler) -> None:
        """Serve paths that end with `suffix` (query string aside) with `handler`."""
        self.handlers[suffix] = handler

    def refuse_key(self, key: str, status: int | None) -> None:
        """Answer `status` (401, 429...) to the requests that carry `key` as their credential; None: stop."""
        if status is None:
            self.refused_keys.pop(key, None)
        else:
            self.refused_keys[key] = status

    def _refusal(self, record: Record) -> str:
        bearer = (record.header("authorization") or "").removeprefix("Bearer ")
        sent = {bearer, record.header("x-api-key"), record.header("x-goog-api-key")}
        return next((str(status) for key, status in self.refused_keys.items() if key in sent), "")

    def find(self, path_part: str) -> list[Record]:
        """The records whose path contains `path_part`, oldest first."""
        return [r for r in list(self.records) if path_part in r.path]

    def tagged(self, tag: str) -> list[Record]:
        """The records sent with header `x-fake-tag: <tag>`: for checking that nothing reached the upstream."""
        return [r for r in list(self.records) if r.header("x-fake-tag") == tag]

    def by_tag(self, tag: str) -> Record:
        """The one record sent with header `x-fake-tag: <tag>`."""
        found = [r for r in list(self.records) if r.header("x-fake-tag") == tag]
        assert len(found) == 1, f"{len(found)} requests tagged {tag!r}"
        return found[0]

    # -- running -------------------------------------------------------------

    async def serve(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.host, self.port, limit=1 << 20, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> FakeUpstream:
        ready = threading.Event()

        def run() -> None:
            self._loop = new_event_loop()
            self._loop.run_until_complete(self.serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop and self._server:
            self._loop.call_soon_threadsafe(self._server.close)
            self._loop.call_soon_threadsafe(self._loop.stop)

    # -- HTTP ----------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record = None
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers = [tuple(p.strip() for p in line.split(":", 1)) for line in lines[1:] if ":" in line]
                record = Record(method, target, headers, peer=writer.get_extra_info("peername"))
                if self.record:
                    self.records.append(record)
                req = Request(record, reader, writer)
                if record.header("x-fake-early") == "1":  # whatever follows the declared body is the next request
                    await self._dispatch(req)
                    await self._read_body(reader, record)
                else:
                    await self._read_body(reader, record)
                    await self._dispatch(req)
                record.completed = record.client_closed_at is None
                if req.close_after or (record.header("connection") or "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if record is not None and not record.completed and record.client_closed_at is None:
                record.client_closed_at = time.monotonic()  # the relay left mid-request (mid-body, mid-answer)
            if not writer.transport.is_closing():
                writer.close()

    async def _read_body(self, reader: asyncio.StreamReader, record: Record) -> None:
        digest = hashlib.sha256()
        kept: list[bytes] = []

        def take(data: bytes) -> None:
            digest.update(data)
            record.body_len += len(data)
            if record.body_len <= KEEP_BODY:
                kept.append(data)

        length = record.header("content-length")
        if length is not None:
            left = int(length)
            while left:
                data = await reader.read(min(left, 1 << 20))
                if not data:
                    raise asyncio.IncompleteReadError(b"", left)
                take(data)
                left -= len(data)
        elif "chunked" in (record.header("transfer-encoding") or "").lower():
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                take(await reader.readexactly(size))
                await reader.readexactly(2)
        record.body = b"".join(kept) if record.body_len <= KEEP_BODY else b""
        record.sha256 = digest.hexdigest()

    async def _dispatch(self, req: Request) -> None:
        first_byte_delay = float(req.h("x-fake-first-byte-delay", "0"))
        if first_byte_delay:
            await req._sleep(first_byte_delay)
            if req.client_gone():
                req.close_after = True
                return
        padding = int(req.h("x-fake-header-size", "0"))
        if padding:
            await req.send(200, [("Content-Type", "application/json"), ("x-fake-padding", "a" * padding)], b"{}")
            return
        status = req.h("x-fake-status") or self._refusal(req.record)
        if status:
            await error(req, int(status))
            return
        path = urlsplit(req.record.target).path
        if "/messages/batches" in path:
            await anthropic_batches(req)
            return
        for suffix, handler in self.handlers.items():
            if path.endswith(suffix):
                await handler(req)
                return
        await echo(req)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's when it is installed (the benchmark's servers must be fast), else asyncio's."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the fake upstream on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    fake = FakeUpstream(port=args.port, record=False)
    loop = new_event_loop()
    loop.run_until_complete(fake.serve())
    print(fake.port, flush=True)
    loop.run_forever()


if __name__ == "__main__":
    main()
