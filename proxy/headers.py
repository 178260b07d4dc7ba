"""Which headers cross the relay, in each direction.

Like any proxy, the relay drops hop-by-hop headers (RFC 9110 section 7.6.1) and
those named by `Connection`. Towards the upstream it also drops the headers that
tell who and where the client is, so the upstream sees neither its IP nor its
country. Everything else, `Authorization` and `OpenAI-*` included, passes as is.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

HOP_BY_HOP = frozenset(
    {
        "connection",
        "expect",  # 100-continue is answered by the server on the client's hop, as nginx does
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Headers that identify the client or its location, added by it or by the hosts in front of us.
CLIENT_IDENTIFYING = frozenset(
    {
        "forwarded",
        "via",
        "x-real-ip",
        "true-client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "cdn-loop",
    }
)
CLIENT_IDENTIFYING_PREFIXES = ("x-forwarded-", "cf-", "x-vercel-", "fly-", "x-envoy-", "x-appengine-")

# Set by the relay itself on the way back; the upstream's own values would clash.
RESPONSE_REPLACED_PREFIXES = ("access-control-",)


# Dropped from every request, whatever else it says.
ALWAYS_DROPPED = HOP_BY_HOP | CLIENT_IDENTIFYING | {"host", "content-length"}


def _connection_tokens(value: str) -> set[str]:
    """The header names a `Connection` value lists (hop-by-hop for this message only), lower-case."""
    return {token.strip().lower() for token in value.split(",")}


def _named_by_connection(headers: Iterable[tuple[str, str]]) -> set[str]:
    named: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            named |= _connection_tokens(value)
    return named


def _header_of(key: str) -> tuple[str, str, bool]:
    """A WSGI environ key's header name (`HTTP_OPENAI_ORGANIZATION`: `Openai-Organization`), the name in
    lower case, and whether it may go upstream whatever else the request says."""
    name = key[5:].replace("_", "-").title()
    lower = name.lower()
    dropped = lower in ALWAYS_DROPPED or lower.startswith("proxy-") or lower.startswith(CLIENT_IDENTIFYING_PREFIXES)
    return name, lower, not dropped


_cached_header_of = functools.lru_cache(maxsize=1024)(_header_of)  # the same few names come with every request


def _from_environ(key: str) -> tuple[str, str, bool]:
    # Names are the client's: only short ones are cached, so that the cache holds at most about 64 KiB.
    return _cached_header_of(key) if len(key) <= 64 else _header_of(key)


def request_headers(environ: dict, upstream_host: str, keep_cookies: bool = False) -> dict[str, str]:
    """The headers to send upstream, from a WSGI environ."""
    named = _connection_tokens(environ.get("HTTP_CONNECTION", ""))  # the server joins repeated ones
    if not keep_cookies:
        named.add("cookie")
    out = {"Host": upstream_host}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name, lower, allowed = _from_environ(key)
            if allowed and lower not in named:
                out[name] = value
    if environ.get("CONTENT_TYPE") and "content-type" not in named:
        out["Content-Type"] = environ["CONTENT_TYPE"]
    return out


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The upstream's response headers that go back to the client, duplicates kept."""
    pairs = list(headers)
    dropped = HOP_BY_HOP | _named_by_connection(pairs)
    return [
        (name, value)
        for name, value in pairs
        if name.lower() not in dropped and not name.lower().startswith(RESPONSE_REPLACED_PREFIXES)
    ]
