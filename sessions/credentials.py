"""Which key a session call uses, and under which name its sessions are filed.

`credentials()` is the one place the key is read. The key the client presents
names its sessions (by its SHA-256, never in clear); the key sent upstream is
the same key today (access control may swap a relay key for a server-side key
here, while sessions stay filed under the key the client presented).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import request

from .replies import Failure

# Printable ASCII without spaces: what fits in an `Authorization` header and what API keys are made of.
KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,512}")


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
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
    if not key:
        raise Failure(400, "An API key is required: send it as apiKey in the body or as 'Authorization: Bearer <key>'.")
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise Failure(400, "apiKey must be a string of 1 to 512 printable ASCII characters without spaces.")
    return Credentials(owner=hashlib.sha256(key.encode()).hexdigest(), upstream_key=key)
