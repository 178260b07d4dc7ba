"""The response shape of the session endpoints: `{"code", "message", "data"}`, as in the service they model."""

from __future__ import annotations

import json
from typing import Any

from flask import Response


class Failure(Exception):
    """A request that ends with an error answer: raised anywhere, answered by the blueprint."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def success(data: Any, message: str = "success") -> Response:
    return _reply(200, message, data)


def failure(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _reply(status, message, None, headers)


def _reply(status: int, message: str, data: Any, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"code": status, "message": message, "data": data}, ensure_ascii=False)  # fields in this order
    return Response(body, status=status, headers=headers, mimetype="application/json")
