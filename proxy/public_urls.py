"""Absolute upstream URLs that an API hands to its clients, pointed back at the relay.

Some answers carry a URL the client calls next: Anthropic's message batches a
`results_url`, Gemini's resumable uploads an `x-goog-upload-url` header. At the
upstream's address, the client would go around the relay: one that can only reach
the relay fails, and in relay-key mode it would send its relay key to the upstream.
A URL under the route's upstream base becomes the same path under the relay's
public address (as the landing page shows it) and the route's prefix; any other URL
is left alone, since the relay forwards to no other host.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .routes import Route
from .trust import TrustedProxies

# Response headers that hold a URL to call next (Gemini's resumable upload protocol).
URL_HEADERS = frozenset({"x-goog-upload-url", "x-goog-upload-control-url"})

# JSON fields that hold a URL to call next, by the endpoint (the path after the route's prefix) that answers them.
BODY_FIELDS = ((re.compile(r"/messages/batches(/[^/]+(/cancel)?)?$"), "results_url"),)  # Anthropic batches

# A Host (or trusted X-Forwarded-Host) the relay is willing to write into an answer: name or IP, and a port.
_HOST = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


@dataclass(frozen=True)
class Relocation:
    """How one answer's upstream URLs become relay URLs."""

    upstream_base: str  # the route's base, e.g. "https://api.anthropic.com"
    public_base: str  # the same route at the relay, e.g. "https://relay.example.com/anthropic"
    body_field: str | None = None  # the JSON field to relocate in this endpoint's answers, if any

    def url(self, value: str) -> str:
        rest = value[len(self.upstream_base) :]
        if value.startswith(self.upstream_base) and rest[:1] in ("", "/", "?"):
            return self.public_base + rest
        return value

    def headers(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(name, self.url(value) if name.lower() in URL_HEADERS else value) for name, value in headers]

    def body(self, body: bytes) -> bytes:
        return relocate_json_field(body, self.body_field, self.url) if self.body_field else body


def relocation_for(route: Route, path: str, answer_headers: Mapping[str, str], environ: dict,
                   proxies: TrustedProxies) -> Relocation | None:
    """The relocation for an answer to `path` on `route` with these headers; None when it has nothing to
    relocate, or when the relay's own address is not a plain host."""
    rest = path[len(route.prefix) + 1 :]
    field = next((name for pattern, name in BODY_FIELDS if pattern.search(rest)), None)
    if field is None and not any(name in answer_headers for name in URL_HEADERS):
        return None
    public = proxies.public_base_url(environ)
    if not _HOST.fullmatch(public.partition("://")[2]):
        return None
    return Relocation(route.base, f"{public}/{route.prefix}", field)


def relocate_json_field(body: bytes, field: str, relocate: Callable[[str], str]) -> bytes:
    """`body` with every string value of `field` (at any depth) passed through `relocate`.

    Only the URLs change: each is replaced where it stands, so the rest of the body keeps its
    bytes; a body that is not JSON, or has nothing to change, comes back as it was.
    """
    try:
        document = json.loads(body)
    except ValueError:
        return body
    changes = {old: new for old in _values_of(document, field) if (new := relocate(old)) != old}
    for old, new in changes.items():
        quoted = json.dumps(old).encode()
        if quoted not in body:  # written another way (escaped '/', say): write the whole document anew
            return json.dumps(_replaced(document, field, changes)).encode()
        body = body.replace(quoted, json.dumps(new).encode())
    return body


def _values_of(node: object, field: str) -> list[str]:
    if isinstance(node, dict):
        found = [node[field]] if isinstance(node.get(field), str) else []
        return found + [value for child in node.values() for value in _values_of(child, field)]
    if isinstance(node, list):
        return [value for child in node for value in _values_of(child, field)]
    return []


def _replaced(node: object, field: str, changes: dict[str, str]) -> object:
    if isinstance(node, dict):
        return {key: changes.get(value, value) if key == field and isinstance(value, str)
                else _replaced(value, field, changes) for key, value in node.items()}
    if isinstance(node, list):
        return [_replaced(child, field, changes) for child in node]
    return node
