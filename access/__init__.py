"""Access control: relay keys, server-side upstream keys with rotation, rate limits, allowed paths.

`create_app()` builds one `Access` from the settings (`Access.from_settings`) and
keeps it in `app.extensions["access"]`. The relay's routes go through
`Access.admit()`; the relay's own endpoints that call an upstream with a key the
client gave them use `upstream_key()` (balance: its key is in the query), or
`admit()` before reading the body and `key_for()` once it is read (session chat).
"""

from __future__ import annotations

from flask import current_app, request

from .control import Access, AccessDenied, Grant

__all__ = ["Access", "AccessDenied", "Grant", "admit", "current_access", "key_for", "upstream_key"]


def current_access() -> Access:
    """The `Access` of the app handling the current request."""
    return current_app.extensions["access"]


def upstream_key(presented_key: str | None, group: str = "openai") -> str:
    """The key to send upstream for the current request, whose client presented `presented_key`.

    - Pass-through (no `RELAY_KEYS`): `presented_key` itself (or the route group's
      server-side key if the owner set one with `ALLOW_OPEN_RELAY=1`).
    - Relay keys: `presented_key`, or another key of the request (its
      `Authorization: Bearer`, `x-api-key`, `api-key`, `x-goog-api-key`, `?key=`),
      must be a relay key; returns the group's upstream key (`OPENAI_API_KEY`, taken
      in rotation), or, for a group without one, the client's own non-relay key.

    It also counts the request against `RATE_LIMIT`: call it once per client request.
    Raises `AccessDenied` (`.status` 401 or 429, `.message`, `.code`, `.headers` with
    `Retry-After`) when the request may not go upstream. Needs a request context.
    """
    return current_access().upstream_key(presented_key, group, request.environ)


def admit(group: str = "openai", also: str | None = None) -> Grant:
    """Check the current request's relay key (header or `?key=`, or `also`: a body's `apiKey`) and rate limit.

    The grant's `holder` names the relay key that was checked ("" in pass-through mode).
    Raises `AccessDenied`. Counts the request against `RATE_LIMIT`: call it once per request.
    """
    return current_access().admit(request.environ, group, also)


def key_for(grant: Grant, presented_key: str | None) -> str:
    """The key to send upstream for an admitted request whose body (or header) presented `presented_key`."""
    return current_access().key_for(grant, presented_key, request.environ)
