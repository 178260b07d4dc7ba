"""Which key a billing request is asked with, and what kind of key it is.

`client_key()` is the one place the key is read; behind a relay key it gives the
server's own key (access control), and the key's kind is read from that key.
The key is never logged.
"""

from __future__ import annotations

from enum import Enum

from flask import Request

import access
from access.keys import KEY_SHAPE, bearer_token

NO_KEY = "No API key: pass it as ?apiKey=sk-... or in an Authorization: Bearer header."
BAD_KEY = "The API key has characters no API key has (spaces, control or non-ASCII characters)."


class KeyKind(Enum):
    SECRET = "secret"  # sk-..., sk-proj-..., and the keys of OpenAI-compatible upstreams
    SESSION = "session"  # sess-...: a browser session key, the only kind the official credit_grants serves
    ADMIN = "admin"  # sk-admin-...: reads /v1/organization/costs


def client_key(request: Request) -> str:
    """The key to ask the upstream with, "" when none was given.

    The client's is `?apiKey=` (seed 001's way), else the token of `Authorization: Bearer`;
    access control swaps a relay key for the server's key, or raises `access.AccessDenied`.
    """
    key = request.args.get("apiKey", "").strip()
    if not key:
        key = bearer_token(request.headers.get("Authorization", ""))
    return access.upstream_key(key)


def key_problem(key: str) -> str | None:
    """Why `key` cannot be used (missing, or it could not travel in a header), or None."""
    if not key:
        return NO_KEY
    return None if KEY_SHAPE.fullmatch(key) else BAD_KEY


def key_kind(key: str) -> KeyKind:
    if key.startswith("sk-admin-"):
        return KeyKind.ADMIN
    if key.startswith("sess-"):
        return KeyKind.SESSION
    return KeyKind.SECRET
