"""Who a session call is, and which key it uses upstream.

A session belongs to the credential that was checked: the relay key in relay-key
mode (checked by `admit()` from the headers or `?key=`, before the body is read),
the client's own key in pass-through mode (the one the upstream checks). No other
string the client sends, such as a body's `apiKey` beside a relay key, names the
owner. Owners are SHA-256 digests, never keys in clear. The key sent upstream is
the one access control gives: the server's own behind a relay key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import request

import access
from access.keys import KEY_SHAPE, bearer_token

from .replies import Failure


@dataclass(frozen=True)
class Credentials:
    owner: str  # SHA-256 (hex) of the checked credential: what the sessions are filed under
    upstream_key: str = ""  # the key sent upstream

    def __repr__(self) -> str:  # never show the key, even in a traceback
        return f"Credentials(owner={self.owner[:12]}...)"


def admit() -> access.Grant:
    """The checks that need no body (relay key, rate limit): run first, so a refused client is not waited for."""
    try:
        return access.admit("openai")
    except access.AccessDenied as exc:
        raise Failure(exc.status, exc.message, exc.headers) from None


def owner(grant: access.Grant, body: Callable[[], Mapping[str, Any]]) -> str:
    """The owner of the sessions a call may see; the body is read only in pass-through mode, where it names it."""
    return grant.holder or credentials(grant, body()).owner


def credentials(grant: access.Grant, body: Mapping[str, Any]) -> Credentials:
    """The body's `apiKey`, else the `Authorization: Bearer` header; a 400 when it is malformed, or missing
    in pass-through mode (behind a relay key it is only needed for an upstream the relay holds no key for)."""
    key = body.get("apiKey")
    if key is None:
        key = bearer_token(request.headers.get("Authorization", "")) or None
    if not key and not grant.holder:
        raise Failure(400, "An API key is required: send it as apiKey in the body or as 'Authorization: Bearer <key>'.")
    if key is not None and (not isinstance(key, str) or not KEY_SHAPE.fullmatch(key)):
        raise Failure(400, "apiKey must be a string of 1 to 512 printable ASCII characters without spaces.")
    try:
        upstream_key = access.key_for(grant, key)
    except access.AccessDenied as exc:
        raise Failure(exc.status, exc.message, exc.headers) from None
    return Credentials(owner=grant.holder or hashlib.sha256(key.encode()).hexdigest(), upstream_key=upstream_key)
