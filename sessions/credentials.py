"""Which key a session call uses, and under which name its sessions are filed.

`credentials()` is the one place the key is read. The key the client presents
names its sessions (by its SHA-256, never in clear); the key sent upstream is the
one access control gives for it: the same key in pass-through mode, the server's
own key behind a relay key. Sessions stay filed under the key the client presented,
since a server-side key rotates and is shared by every relay-key holder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import request

import access
from access.keys import KEY_SHAPE, bearer_token

from .replies import Failure


@dataclass(frozen=True)
class Credentials:
    owner: str  # SHA-256 (hex) of the presented key: what the sessions are filed under
    upstream_key: str = ""  # the key sent upstream

    def __repr__(self) -> str:  # never show the key, even in a traceback
        return f"Credentials(owner={self.owner[:12]}...)"


def credentials(body: Mapping[str, Any]) -> Credentials:
    """The body's `apiKey`, else the `Authorization: Bearer` header; a 400 when there is none or it is malformed."""
    key = body.get("apiKey")
    if key is None:
        key = bearer_token(request.headers.get("Authorization", "")) or None
    if not key:
        raise Failure(400, "An API key is required: send it as apiKey in the body or as 'Authorization: Bearer <key>'.")
    if not isinstance(key, str) or not KEY_SHAPE.fullmatch(key):
        raise Failure(400, "apiKey must be a string of 1 to 512 printable ASCII characters without spaces.")
    try:
        upstream_key = access.upstream_key(key)
    except access.AccessDenied as exc:
        raise Failure(exc.status, exc.message, exc.headers) from None
    return Credentials(owner=hashlib.sha256(key.encode()).hexdigest(), upstream_key=upstream_key)
