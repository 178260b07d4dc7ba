"""A small client of the session endpoints, for the session tests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import requests

from tests.fake_upstream import FakeUpstream, Record


def new_key() -> str:
    return f"sk-test-{uuid.uuid4().hex}"


def new_session_id() -> str:
    return str(uuid.uuid4())


class SessionClient:
    """Calls one relay's session endpoints with one key; every upstream call it causes is tagged."""

    def __init__(self, base_url: str, key: str | None = None):
        self.base_url = base_url
        self.key = key or new_key()

    def chat(self, sid: str, content: str, tag: str | None = None, headers: dict[str, str] | None = None,
             timeout: float = 30, **fields) -> requests.Response:
        body = {"apiKey": self.key, "sessionId": sid, "content": content, **fields}
        headers = dict(headers or {})
        if tag:
            headers["x-fake-tag"] = tag
        return requests.post(self.base_url + "/pro/chat/completions", json=body, headers=headers, timeout=timeout)

    def history(self, sid: str) -> requests.Response:
        return requests.get(f"{self.base_url}/pro/sessions/{sid}", headers=self.auth(), timeout=30)

    def messages(self, sid: str) -> list[dict[str, str]] | None:
        """The stored transcript, or None when the relay says there is no such session."""
        response = self.history(sid)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return response.json()["data"]

    def forget(self, sid: str) -> requests.Response:
        return requests.delete(f"{self.base_url}/pro/sessions/{sid}", headers=self.auth(), timeout=30)

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def sent_messages(fake: FakeUpstream, tag: str) -> list[dict[str, str]]:
    """The messages the upstream received in the call tagged `tag`."""
    return fake.by_tag(tag).json()["messages"]


def turn_pairs(*contents: str) -> list[dict[str, str]]:
    """The history the fake's echo replies produce for these user messages."""
    out = []
    for content in contents:
        out += [{"role": "user", "content": content}, {"role": "assistant", "content": f"echo: {content}"}]
    return out


def stream_deltas(body: bytes) -> tuple[str, bool]:
    """The text of a chat-completion event stream and whether it ended with [DONE]."""
    text, done = [], False
    for event in body.split(b"\n\n"):
        if not event.startswith(b"data: "):
            continue
        data = event[6:]
        if data == b"[DONE]":
            done = True
            continue
        for choice in json.loads(data)["choices"]:
            text.append(choice["delta"].get("content") or "")
    return "".join(text), done


def wait_for(condition: Callable[[], bool], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout} s")


def closed_by_relay(fake: FakeUpstream, tag: str) -> Callable[[], bool]:
    def check() -> bool:
        found: list[Record] = [r for r in list(fake.records) if r.header("x-fake-tag") == tag]
        return bool(found) and found[0].client_closed_at is not None

    return check
