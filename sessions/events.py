"""Reading the assistant's reply out of a chat-completion event stream as it passes to the client.

The collector only looks at the bytes; what the client receives is the
upstream's stream unchanged. Only choice 0's `delta.content` is kept.
"""

from __future__ import annotations

import json

MAX_PENDING = 1024 * 1024  # an event longer than this is not one the collector understands


class ReplyCollector:
    def __init__(self) -> None:
        self._pending = b""
        self._parts: list[str] = []
        self.done = False  # `data: [DONE]` seen
        self.finish_reason: str | None = None
        self.broken = False  # an event that could not be read, or an error event

    def feed(self, chunk: bytes) -> None:
        self._pending = (self._pending + chunk).replace(b"\r\n", b"\n")
        while b"\n\n" in self._pending:
            event, _, self._pending = self._pending.partition(b"\n\n")
            self._event(event)
        if len(self._pending) > MAX_PENDING:
            self.broken = True
            self._pending = b""

    @property
    def reply(self) -> str:
        return "".join(self._parts)

    @property
    def complete(self) -> bool:
        """The stream announced its end ([DONE] or a finish reason) and said something, with no error."""
        return (self.done or self.finish_reason is not None) and bool(self._parts) and not self.broken

    def _event(self, event: bytes) -> None:
        lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if not lines:
            return  # a comment (`: keep-alive`) or an event with no data
        data = b"\n".join(lines)
        if data.strip() == b"[DONE]":
            self.done = True
            return
        try:
            payload = json.loads(data)
        except ValueError:
            self.broken = True
            return
        if not isinstance(payload, dict) or "error" in payload:
            self.broken = True
            return
        for choice in payload.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                self._parts.append(content)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
