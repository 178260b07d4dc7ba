"""Who a session call is, and which key it uses upstream.

A session belongs to the credential that was checked: the relay key in relay-key
mode (checked by `admit()` from the headers or `?key=` before the body is read, or
from the body's `apiKey` when the call carries no key elsewhere),
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
from access import current_access
from access.keys import KEY_SHAPE, bearer_token, presented

from .replies import Failure


@dataclass(frozen=True)
class Credentials:
    owner: str  # SHA-256 (hex) of the checked credential: what the sessions are filed under
    upstream_key: str = ""  # the key sent upstream

    def __repr__(self) -> str:  # never show the key, even in a traceback
        return f"Credentials(owner={self.owner[:12]}...)"


def admit() -> access.Grant | None:
    """The checks that need no body (relay key, rate limit): run first, so a refused client is not waited for.

    In relay-key mode, a call that carries no key in its headers or query may carry its relay key as the
    body's `apiKey`, as seed-style clients do: it is admitted once its body (small, and read within the
    client timeouts) is read, by `admit_body()`; None says so. A wrong key in a header is refused at once.
    """
    if current_access().requires_relay_key and not presented(request.environ):
        return None
    return _admitted(None)


def admit_body(grant: access.Grant | None, body: Mapping[str, Any]) -> access.Grant:
    """The grant of a call, with the body's `apiKey` as its relay key when `admit()` found none before the body."""
    if grant is not None:
        return grant
    key = body.get("apiKey")
    return _admitted(key if isinstance(key, str) else None)


def _admitted(also: str | None) -> access.Grant:
    try:
        return access.admit("openai", also=also)
    except access.AccessDenied as exc:
        raise Failure(exc.status, exc.message, exc.headers) from None


def owner(grant: access.Grant | None, body: Callable[[], Mapping[str, Any]]) -> str:
    """The owner of the sessions a call may see; the body is read only when it names the owner (pass-through
    mode) or carries the relay key."""
    if grant is not None and grant.holder:
        return grant.holder
    document = body()
    grant = admit_body(grant, document)
    return grant.holder or credentials(grant, document).owner


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
