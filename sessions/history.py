"""A session's conversation: its system prompt and messages, and how a turn is added and trimmed.

A `Session` is an immutable value. Both stores keep it as one compact JSON text
(`dumps`/`loads`), so the memory store holds no shared mutable object and the
Redis store writes it in one command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

Message = dict[str, str]  # {"role": "user" | "assistant", "content": "..."}


@dataclass(frozen=True)
class Session:
    system: str | None = None
    messages: tuple[Message, ...] = ()  # user/assistant pairs, oldest first, the system prompt apart

    def prompt(self, content: str, system: str | None) -> list[Message]:
        """What the upstream is sent for a new user message: `[system?] + history + user`."""
        head = [{"role": "system", "content": system}] if system is not None else []
        return [*head, *self.messages, {"role": "user", "content": content}]

    def with_turn(self, system: str | None, content: str, reply: str, max_messages: int, max_chars: int) -> Session:
        """This session after a completed turn, trimmed to the limits."""
        messages = [*self.messages, {"role": "user", "content": content}, {"role": "assistant", "content": reply}]
        return Session(system, tuple(trim(messages, max_messages, max_chars)))

    def transcript(self) -> list[Message]:
        """The stored conversation as a client sees it: the system prompt first, if any."""
        head = [{"role": "system", "content": self.system}] if self.system is not None else []
        return [*head, *self.messages]

    def dumps(self) -> str:
        return json.dumps({"system": self.system, "messages": list(self.messages)}, ensure_ascii=False,
                          separators=(",", ":"))

    @classmethod
    def loads(cls, text: str | bytes) -> Session:
        data = json.loads(text)
        return cls(data.get("system"), tuple(data.get("messages") or ()))


def trim(messages: list[Message], max_messages: int, max_chars: int) -> list[Message]:
    """The newest messages within both limits, dropping the oldest whole turns (user + reply) first.

    The limits are hard: a single turn longer than `max_chars` is not kept at all.
    """
    start = 0
    chars = sum(len(message["content"]) for message in messages)
    while start < len(messages) and (len(messages) - start > max_messages or chars > max_chars):
        dropped = messages[start : start + 2]
        chars -= sum(len(message["content"]) for message in dropped)
        start += len(dropped)
    return messages[start:]
