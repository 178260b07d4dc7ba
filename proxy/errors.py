"""Errors the relay makes itself, in the OpenAI error shape, so SDKs raise the matching exception."""

from __future__ import annotations

from flask import Response, json

# The `type` the OpenAI API uses for each status the relay produces.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def openai_error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> Response:
    """`{"error": {"message", "type", "param", "code"}}` with `status`."""
    body = {"error": {"message": message, "type": _TYPES.get(status, "api_error"), "param": None, "code": code}}
    return Response(json.dumps(body), status=status, headers=headers, mimetype="application/json")
