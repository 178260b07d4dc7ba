"""Access control: relay keys, server-side upstream keys with rotation, rate limits, allowed paths.

`create_app()` builds one `Access` from the settings (`Access.from_settings`) and
keeps it in `app.extensions["access"]`. The relay's routes go through
`Access.admit()`; the relay's own endpoints that call an upstream with a key the
client gave them (session chat, balance) use `upstream_key()`.
"""

from __future__ import annotations

from flask import current_app, request

from .control import Access, AccessDenied, Grant

__all__ = ["Access", "AccessDenied", "Grant", "current_access", "upstream_key"]


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
