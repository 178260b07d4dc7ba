"""API keys in a request: where clients put them, checking relay keys, and placing the upstream's key.

SDKs put their key in different places: OpenAI's in `Authorization: Bearer`,
Anthropic's in `x-api-key`, Azure's in `api-key`, Google's in `x-goog-api-key` or
`?key=`. A relay key is accepted in any of them. Relay keys are kept only as
SHA-256 digests and compared with `hmac.compare_digest` against every one of
them, with no early exit, so timing tells neither a key nor which one matched.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote_plus

# Each place a client may put a key: a header (lower case) or, for "?key", the query parameter `key`.
HEADER_PLACES = ("authorization", "x-api-key", "api-key", "x-goog-api-key")
QUERY_PLACE = "?key"
# A browser cannot set headers on a WebSocket: it sends `openai-insecure-api-key.<key>` among its subprotocols.
SUBPROTOCOL_PLACE = "sec-websocket-protocol"
SUBPROTOCOL_KEY = "openai-insecure-api-key."
PLACES = (*HEADER_PLACES, QUERY_PLACE, SUBPROTOCOL_PLACE)

# Where each upstream expects its key; any other route is OpenAI-style (`Authorization: Bearer`).
UPSTREAM_PLACE = {"anthropic": "x-api-key", "gemini": "x-goog-api-key"}


def digest(key: str) -> bytes:
    """The SHA-256 of a key: what the relay keeps and compares instead of the key."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def fingerprint(key: str, kind: str) -> str:
    """A stable, non-reversible name for a key or an address, for counters (`kind` keeps them apart)."""
    return hashlib.sha256(f"{kind}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


class RelayKeys:
    """The tokens from `RELAY_KEYS` that clients must present, held as digests only."""

    def __init__(self, keys: Iterable[str]):
        self._digests = tuple(digest(key) for key in keys)

    @classmethod
    def parse(cls, value: str) -> RelayKeys:
        return cls(key.strip() for key in value.split(",") if key.strip())

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def matches(self, candidate: str) -> bool:
        """Whether `candidate` is one of the relay keys, in time independent of which one."""
        presented = digest(candidate)
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(presented, known)
        return found


def split_list(value: str) -> list[str]:
    """A comma-separated setting as a list of non-empty, stripped items."""
    return [item.strip() for item in value.split(",") if item.strip()]


# What any API key looks like on the wire: visible ASCII, no spaces, of a sane length (it must fit in a header).
KEY_SHAPE = re.compile(r"[\x21-\x7e]{1,512}")


def bearer_token(authorization: str) -> str:
    """The token of an `Authorization: Bearer <token>` value, or "" for any other scheme."""
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def presented(environ: Mapping[str, str]) -> dict[str, str]:
    """Every key the request carries, by place: `{"authorization": "...", "?key": "..."}`."""
    found: dict[str, str] = {}
    for place in HEADER_PLACES:
        value = environ.get("HTTP_" + place.upper().replace("-", "_"), "").strip()
        if place == "authorization":
            value = bearer_token(value)
        if value:
            found[place] = value
    for name, value in query_items(environ.get("QUERY_STRING", "")):
        if name == "key" and value:
            found[QUERY_PLACE] = value
            break
    for entry in environ.get("HTTP_SEC_WEBSOCKET_PROTOCOL", "").split(","):
        if entry.strip().startswith(SUBPROTOCOL_KEY) and entry.strip() != SUBPROTOCOL_KEY:
            found[SUBPROTOCOL_PLACE] = entry.strip()[len(SUBPROTOCOL_KEY) :]
            break
    return found


def query_items(query: str) -> list[tuple[str, str]]:
    return [
        (unquote_plus(name), unquote_plus(value))
        for name, _, value in (item.partition("=") for item in query.split("&") if item)
    ]


def remove_keys(url: str, headers: dict[str, str], places: Iterable[str]) -> str:
    """Remove the keys at `places` from `headers` (in place) and from the URL's query; return the URL.

    The rest of the query goes out byte for byte as the client sent it.
    """
    places = set(places)
    for name in [name for name in headers if name.lower() in places]:
        if name.lower() == SUBPROTOCOL_PLACE:  # only the key's entry goes: the client still asks for the others
            entries = [entry.strip() for entry in headers[name].split(",")]
            kept = [entry for entry in entries if entry and not entry.startswith(SUBPROTOCOL_KEY)]
            if kept:
                headers[name] = ", ".join(kept)
                continue
        del headers[name]
    if QUERY_PLACE in places and "?" in url:
        base, _, query = url.partition("?")
        kept = [item for item in query.split("&") if unquote_plus(item.partition("=")[0]) != "key"]
        url = base + ("?" + "&".join(kept) if kept else "")
    return url


def place_key(headers: dict[str, str], key: str, group: str) -> dict[str, str]:
    """A copy of `headers` with `key` where the upstream of `group` expects it."""
    out = dict(headers)
    place = UPSTREAM_PLACE.get(group, "authorization")
    if place == "authorization":
        out["Authorization"] = f"Bearer {key}"
    else:
        out[place] = key
    return out
