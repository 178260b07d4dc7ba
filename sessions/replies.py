"""The response shape of the session endpoints: `{"code", "message", "data"}`, as in the service they model."""

from __future__ import annotations

from typing import Any

from flask import Response

from proxy.errors import pro_reply


class Failure(Exception):
    """A request that ends with an error answer: raised anywhere, answered by the blueprint."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def success(data: Any, message: str = "success") -> Response:
    return pro_reply(200, message, data)


def failure(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return pro_reply(status, message, None, headers)
