"""Reading and checking what a client sends to the session endpoints; every problem is a clear 400 or 413."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from flask import request

from proxy.body import BodyTooLarge, ClientBodyError, request_body
from proxy.pace import ClientTooSlow
from proxy.settings import Settings

from .replies import Failure

SESSION_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MODEL_MAX = 200


@dataclass(frozen=True)
class Turn:
    """One checked chat call (the key is apart, in `Credentials`)."""

    session_id: str
    content: str
    model: str
    system: str | None  # None: keep the session's stored system prompt
    stream: bool


def body_limit(settings: Settings) -> int:
    """The largest body a valid call can have: its texts, each character escaped as JSON at worst, plus room."""
    return 64 * 1024 + 12 * (settings.session_max_content + settings.session_max_chars)


def json_body(settings: Settings, required: bool) -> dict[str, Any]:
    """The body as a JSON object; an empty body is `{}` unless `required`."""
    limit = body_limit(settings)
    if (request.content_length or 0) > limit:
        raise Failure(413, f"The request body is larger than {limit} bytes.")
    data = _read(limit)
    if not data.strip():
        if required:
            raise Failure(400, "The body must be a JSON object with apiKey, sessionId and content.")
        return {}
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, absurd nesting
        raise Failure(400, "The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise Failure(400, "The body must be a JSON object.")
    return body


def _read(limit: int) -> bytes:
    """The whole body, which must be complete: a body cut short is refused even if what came is valid JSON."""
    try:
        return request_body(limit).read_all()
    except BodyTooLarge:
        raise Failure(413, f"The request body is larger than {limit} bytes.") from None
    except ClientTooSlow:
        raise Failure(408, "The request body came too slowly; the connection is closed.") from None
    except ClientBodyError:  # the client went away or sent a broken chunk
        raise Failure(400, "The request body could not be read completely.") from None


def session_id(value: Any) -> str:
    if value is None or value == "":
        raise Failure(400, "sessionId is required.")
    if not isinstance(value, str) or not SESSION_ID.fullmatch(value):
        raise Failure(400, "sessionId must be 1 to 64 characters of A-Z a-z 0-9 . _ : - (a UUID is recommended).")
    return value


def turn(body: dict[str, Any], settings: Settings) -> Turn:
    """The chat call's fields, checked in the order a client would fix them."""
    sid = session_id(body.get("sessionId"))
    content = body.get("content")
    if content is None or content == "":
        raise Failure(400, "content is required: the new user message.")
    if not isinstance(content, str):
        raise Failure(400, "content must be a string.")
    if len(content) > settings.session_max_content:
        raise Failure(413, f"content is {len(content)} characters long; the limit is {settings.session_max_content}.")
    model = body.get("model")
    if model is None:
        model = settings.session_model
    elif not isinstance(model, str) or not 0 < len(model) <= MODEL_MAX:
        raise Failure(400, f"model must be a model name (a string of 1 to {MODEL_MAX} characters).")
    system = body.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise Failure(400, "system must be a string.")
        if len(system) > settings.session_max_chars:
            raise Failure(413, f"system is {len(system)} characters long; the limit is {settings.session_max_chars}.")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise Failure(400, "stream must be true or false.")
    return Turn(sid, content, model, system, stream)
