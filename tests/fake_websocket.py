"""A fake upstream that speaks WebSocket, on 127.0.0.1: Realtime-, Responses- and Gemini Live-shaped sessions.

Built on the `websockets` library (the one the openai SDK uses), with `permessage-deflate` offered as real
servers do. What it does depends on the path:

| path ends with | session |
| --- | --- |
| `/realtime` | sends `session.created` at once; answers `session.update` and `response.create` |
| `/responses` | answers each `response.create` with `response.created`, text deltas and `response.completed` |
| `BidiGenerateContent` | Gemini Live: `setup` → `setupComplete`; `clientContent` → `serverContent` parts |
| anything else | echoes every message (text or binary); the text `close <code>` makes it close with that code |

A handshake with `x-fake-ws-refuse: 403` is refused with that status and an OpenAI-shaped JSON body. Every
connection is recorded (`FakeWebSocketUpstream.records`) with its handshake and when it ended.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response


@dataclass
class WSRecord:
    target: str
    headers: list[tuple[str, str]]
    subprotocol: str | None = None
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    received: int = 0

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]


def _event(payload: dict) -> str:
    return json.dumps(payload)


async def realtime(ws: ServerConnection) -> None:
    session = {"id": "sess_fake", "object": "realtime.session", "type": "realtime", "model": "gpt-realtime"}
    await ws.send(_event({"type": "session.created", "event_id": "event_0", "session": session}))
    async for message in ws:
        event = json.loads(message)
        if event.get("type") == "session.update":
            session = {**session, **event.get("session", {})}
            await ws.send(_event({"type": "session.updated", "event_id": "event_1", "session": session}))
        elif event.get("type") == "response.create":
            response = {"id": "resp_rt", "object": "realtime.response", "status": "in_progress", "output": []}
            await ws.send(_event({"type": "response.created", "event_id": "event_2", "response": response}))
            for index, piece in enumerate(["echo", ": ", "hello"]):
                await ws.send(_event({"type": "response.output_text.delta", "event_id": f"event_d{index}",
                                      "response_id": "resp_rt", "item_id": "item_1", "output_index": 0,
                                      "content_index": 0, "delta": piece}))
            await ws.send(_event({"type": "response.done", "event_id": "event_3",
                                  "response": {**response, "status": "completed"}}))


async def responses(ws: ServerConnection) -> None:
    async for message in ws:
        event = json.loads(message)
        if event.get("type") != "response.create":
            continue
        text = event.get("input") if isinstance(event.get("input"), str) else "hi"
        response = {"id": "resp_ws", "object": "response", "created_at": 1700000000, "status": "in_progress",
                    "model": event.get("model", "gpt-5"), "output": [], "parallel_tool_calls": True,
                    "tool_choice": "auto", "tools": []}
        await ws.send(_event({"type": "response.created", "sequence_number": 0, "response": response}))
        pieces = ["echo", ": ", text]
        for index, piece in enumerate(pieces):
            await ws.send(_event({"type": "response.output_text.delta", "sequence_number": index + 1,
                                  "item_id": "msg_ws", "output_index": 0, "content_index": 0, "delta": piece,
                                  "logprobs": []}))
        done = {**response, "status": "completed", "output": [
            {"type": "message", "id": "msg_ws", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "".join(pieces), "annotations": []}]}]}
        await ws.send(_event({"type": "response.completed", "sequence_number": len(pieces) + 1, "response": done}))


async def gemini_live(ws: ServerConnection) -> None:
    async for message in ws:
        event = json.loads(message)
        if "setup" in event:
            await ws.send(_event({"setupComplete": {}}))
        elif "clientContent" in event:
            text = event["clientContent"]["turns"][0]["parts"][0]["text"]
            for piece in ["echo", ": ", text]:
                await ws.send(_event({"serverContent": {"modelTurn": {"parts": [{"text": piece}]}}}))
            await ws.send(_event({"serverContent": {"turnComplete": True}}))


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        if isinstance(message, str) and message.startswith("close "):
            await ws.close(int(message.split()[1]), "closed by the upstream")
            return
        await ws.send(message)


class FakeWebSocketUpstream:
    def __init__(self, record: bool = True):
        self.record = record
        self.records: list[WSRecord] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Future | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def find(self, path_part: str) -> list[WSRecord]:
        return [record for record in list(self.records) if path_part in record.target]

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        record = WSRecord(request.path, list(request.headers.raw_items()))
        if self.record:
            self.records.append(record)
        connection.record = record  # type: ignore[attr-defined]
        refuse = request.headers.get("x-fake-ws-refuse")
        if refuse:
            body = json.dumps({"error": {"message": "WebSockets are not allowed for this key.",
                                         "type": "invalid_request_error", "param": None,
                                         "code": "websocket_refused"}}).encode()
            headers = Headers([("Content-Type", "application/json"), ("x-fake-refused", "yes"),
                               ("Content-Length", str(len(body)))])
            return Response(int(refuse), "Refused", headers, body)
        return None

    @staticmethod
    def _select_subprotocol(connection: ServerConnection, offered: list[str]) -> str | None:
        return "realtime" if "realtime" in offered else None

    async def _handler(self, ws: ServerConnection) -> None:
        record: WSRecord = ws.record  # type: ignore[attr-defined]
        record.subprotocol = ws.subprotocol
        path = record.path
        try:
            if path.endswith("/realtime"):
                await realtime(ws)
            elif path.endswith("/responses"):
                await responses(ws)
            elif "BidiGenerateContent" in path:
                await gemini_live(ws)
            else:
                await echo(ws)
        except ConnectionClosed:
            pass
        finally:
            record.closed_at = time.monotonic()

    async def serve(self, port: int = 0, ready: Callable[[], None] = lambda: None) -> None:
        """Serve until `stop()`; `ready` is called once the port is bound."""
        self._stop = asyncio.get_running_loop().create_future()
        async with serve(self._handler, "127.0.0.1", port, process_request=self._process_request,
                         select_subprotocol=self._select_subprotocol, max_size=None, ping_interval=None) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            ready()
            await self._stop

    def start(self) -> FakeWebSocketUpstream:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.serve(ready=ready.set))

        threading.Thread(target=run, name="fake-websocket-upstream", daemon=True).start()
        if not ready.wait(10):
            raise RuntimeError("fake WebSocket upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set_result, None)


def main() -> None:
    """Run it as a process for the benchmark: it prints its port once bound, and records nothing."""
    parser = argparse.ArgumentParser(description="Run the fake WebSocket upstream on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    fake = FakeWebSocketUpstream(record=False)
    asyncio.run(fake.serve(args.port, ready=lambda: print(fake.port, flush=True)))


if __name__ == "__main__":
    main()
