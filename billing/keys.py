"""Which key a billing request is asked with, and what kind of key it is.

`client_key()` is the one place the key is read, so that relay keys (issue 5) can
swap a relay key for the server's own key there. The key is never logged.
"""

from __future__ import annotations

import re
from enum import Enum

from flask import Request

# What any API key looks like on the wire: visible ASCII, no spaces, of a sane length.
_KEY_SHAPE = re.compile(r"[\x21-\x7e]{1,512}")

NO_KEY = "No API key: pass it as ?apiKey=sk-... or in an Authorization: Bearer header."
BAD_KEY = "The API key has characters no API key has (spaces, control or non-ASCII characters)."


class KeyKind(Enum):
    SECRET = "secret"  # sk-..., sk-proj-..., and the keys of OpenAI-compatible upstreams
    SESSION = "session"  # sess-...: a browser session key, the only kind the official credit_grants serves
    ADMIN = "admin"  # sk-admin-...: reads /v1/organization/costs


def client_key(request: Request) -> str:
    """`?apiKey=` (seed 001's way), else the token of `Authorization: Bearer`; "" when neither is given."""
    key = request.args.get("apiKey", "").strip()
    if key:
        return key
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def key_problem(key: str) -> str | None:
    """Why `key` cannot be used (missing, or it could not travel in a header), or None."""
    if not key:
        return NO_KEY
    return None if _KEY_SHAPE.fullmatch(key) else BAD_KEY


def key_kind(key: str) -> KeyKind:
    if key.startswith("sk-admin-"):
        return KeyKind.ADMIN
    if key.startswith("sess-"):
        return KeyKind.SESSION
    return KeyKind.SECRET
