"""The relay's own answers: errors in the OpenAI shape, so SDKs raise the matching exception,
and the `{"code", "message", "data"}` shape of the `/pro/...` endpoints, as in the service they model."""

from __future__ import annotations

from typing import Any

from flask import Response, json

# The `type` the OpenAI API uses for each status the relay produces.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Response:
    """`{"error": {"message", "type", "param", "code"}}` with `status`."""
    body = {"error": {"message": message, "type": _TYPES.get(status, "api_error"), "param": None, "code": code}}
    return Response(json.dumps(body), status=status, headers=headers, mimetype="application/json")


def upstream_error_message(body: bytes) -> str:
    """The words of an upstream's error body (`{"error": {"message"}}`, `{"error": "..."}` or `{"message"}`), or ""."""
    try:
        document = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(document, dict):
        return ""
    error = document.get("error")
    message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str):
        message = document.get("message")
    return message.strip()[:1000] if isinstance(message, str) else ""


def pro_reply(status: int, message: str, data: Any = None, headers: dict[str, str] | None = None) -> Response:
    """`{"code": status, "message", "data"}` with `status`, fields in that order."""
    body = json.dumps({"code": status, "message": message, "data": data}, ensure_ascii=False, sort_keys=False)
    return Response(body, status=status, headers=headers, mimetype="application/json")
