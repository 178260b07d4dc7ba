"""Which path prefix goes to which upstream, and the only way a target URL is built.

A target is always `route.base + rest`, where `base` comes from configuration and
`rest` is the client's path after the prefix, checked first. No header and no
part of the request can change the host, so the relay cannot be turned into an
open proxy towards any other address.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .settings import Settings, SettingsError


@dataclass(frozen=True)
class Route:
    prefix: str  # first path segment the client calls, e.g. "v1"
    base: str  # upstream URL the rest of the path is appended to, no trailing slash
    key_group: str  # which upstream credential serves it: "openai", "anthropic", "gemini" or the prefix
    heartbeat: float = 0.0  # seconds of event-stream silence before a `: keep-alive` comment; 0: never

    @property
    def origin(self) -> str:
        """`scheme://host[:port]` of the upstream, the pool it is served from."""
        parts = urlsplit(self.base)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def host(self) -> str:
        return urlsplit(self.base).netloc


class BadTarget(ValueError):
    """The request's path or target would leave the route's upstream or prefix."""


BUILT_IN_PREFIXES = ("v1", "openai", "dashboard", "anthropic", "gemini")
# The relay's own top-level paths (a test checks this covers every rule of the app): a route may not hide one.
OWN_PATHS = ("pro", "healthz", "metrics", "static", "favicon.ico", "robots.txt")


def build_routes(settings: Settings) -> dict[str, Route]:
    """The route table: built-in prefixes first, then those from `ROUTES`.

    Heartbeats go only where the clients are known to ignore SSE comments: the OpenAI and
    Anthropic SDKs do; Google's Gen AI SDK and LiteLLM's gemini provider break on them.
    """
    beat = settings.sse_heartbeat
    openai = _clean_base(settings.upstream_url, "UPSTREAM_URL")
    routes = {
        "v1": Route("v1", openai + "/v1", "openai", beat),
        "openai": Route("openai", openai, "openai", beat),
        "dashboard": Route("dashboard", openai + "/dashboard", "openai", beat),
        "anthropic": Route("anthropic", _clean_base(settings.anthropic_url, "ANTHROPIC_URL"), "anthropic", beat),
        "gemini": Route("gemini", _clean_base(settings.gemini_url, "GEMINI_URL"), "gemini", 0.0),
    }
    for item in filter(None, (part.strip() for part in settings.routes.split(","))):
        prefix, sep, rest = item.partition("=")
        prefix = prefix.strip().strip("/")
        if not sep or not prefix or not prefix.replace("-", "").replace("_", "").isalnum():
            shown = repr(prefix) if sep else "without '='"  # never the URL: it may hold a password
            raise SettingsError(f"ROUTES entry {shown} must look like 'name=https://host/path'")
        if prefix in BUILT_IN_PREFIXES or prefix in OWN_PATHS:
            raise SettingsError(f"ROUTES name {prefix!r} is taken by the relay itself (/{prefix}); choose another name")
        if prefix in routes:
            raise SettingsError(f"ROUTES name {prefix!r} appears twice")
        url, *options = rest.split(";")
        base = _clean_base(url.strip(), f"ROUTES[{prefix}]")
        heartbeat = _heartbeat_option(options, prefix, default=not _is_google(base))
        routes[prefix] = Route(prefix, base, prefix, beat if heartbeat else 0.0)
    return routes


_SWITCH = {"on": True, "1": True, "true": True, "yes": True, "off": False, "0": False, "false": False, "no": False}


def _heartbeat_option(options: list[str], prefix: str, default: bool) -> bool:
    """A ROUTES entry's `;heartbeat=on|off` (the only option so far), or `default`."""
    heartbeat = default
    for option in filter(None, (o.strip() for o in options)):
        name, _, value = option.partition("=")
        if name.strip().lower() != "heartbeat" or value.strip().lower() not in _SWITCH:
            raise SettingsError(f"ROUTES[{prefix}]: unknown option {option!r}; the one option is 'heartbeat=on|off'")
        heartbeat = _SWITCH[value.strip().lower()]
    return heartbeat


def _is_google(base: str) -> bool:
    """Google's APIs (Gemini, Vertex AI): their SDKs read only `data:` lines, so no heartbeat by default."""
    host = urlsplit(base).hostname or ""
    return host == "googleapis.com" or host.endswith(".googleapis.com")


def _clean_base(url: str, name: str) -> str:
    """`scheme://host[:port]/path` without a trailing slash; a URL the relay cannot use stops the start-up.

    A URL with credentials (`user:pass@host`) is refused rather than supported: the upstream's
    `Authorization` header carries its API key, so Basic auth has no place to go, and a password in a URL
    ends up in messages and logs. The message names the host only.
    """
    parts = urlsplit(url.strip())
    if "@" in parts.netloc:
        shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        raise SettingsError(f"{name}: the URL of {shown} holds credentials (user:password@); remove them, "
                            "the relay sends the upstream's API key itself")
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        shown = f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.netloc else "the value"
        raise SettingsError(f"{name}: {shown} must be an http(s) URL with no query")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def raw_target(environ: dict) -> str:
    """The request target exactly as the client sent it (percent-encoding kept).

    gunicorn gives `RAW_URI`; other servers `REQUEST_URI`; otherwise it is rebuilt
    from the decoded `PATH_INFO`, which loses nothing that matters for routing.
    """
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return raw
    from urllib.parse import quote

    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    path = quote(path.encode("latin-1"), safe="/:@!$&'()*+,;=-._~%")
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def check_target(target: str) -> tuple[str, str]:
    """Split a raw target into (path, query); raise `BadTarget` on any path trick.

    `@` is allowed (Vertex AI model ids: `claude-sonnet-4@20250514`): the target is
    appended to the route's base after its host, so it cannot act as userinfo.
    """
    if not target.startswith("/"):
        raise BadTarget("absolute request targets are not accepted; send a path")
    path, _, query = target.partition("?")
    path = path.partition("#")[0]
    decoded = path
    for _ in range(3):  # also catch double-encoded tricks such as %252e%252e
        if "\\" in decoded or "//" in decoded:
            raise BadTarget("the path may not contain '//' or '\\'")
        if any(seg in (".", "..") for seg in decoded.split("/")):
            raise BadTarget("the path may not contain '.' or '..' segments")
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in decoded):
            raise BadTarget("the path may not contain control characters")
        again = unquote(decoded)
        if again == decoded:
            break
        decoded = again
    return path, query


def upstream_url(route: Route, path: str, query: str) -> str:
    """`route.base` + the path after the prefix + the query, all as received.

    The prefix must be sent as it is: `/%76%31/models` is routed to `/v1` after decoding, but cutting the
    raw path at the prefix's length would send `/v16%31/models`; `/openai%2F@evil.example` would leave the
    route. No client encodes a prefix's plain letters, so such a path is refused rather than guessed at.
    """
    head = f"/{route.prefix}"
    rest = path[len(head) :]  # path is "/<prefix>..."; rest is "" or "/..."
    if not path.startswith(head) or rest[:1] not in ("", "/"):
        raise BadTarget(f"the route prefix must be sent as {head}, not percent-encoded")
    url = route.base + rest + (f"?{query}" if query else "")
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}" != route.origin or not parts.path.startswith(urlsplit(route.base).path):
        raise BadTarget("the target would leave the route's upstream")
    return url
