"""The transparent relay: one client request in, one upstream request out, the answer streamed back."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import Response, current_app, g, request
from urllib3.response import HTTPResponse

from .body import BodyTooLarge, ClientBody, ClientBodyError, request_body
from .departure import ClientGone, watch_departure
from .errors import openai_error
from .headers import request_headers, response_headers
from .pace import ClientTooSlow
from .public_urls import Relocation, relocation_for
from .replay import REPLAY_LIMIT, ReplayBudget
from .routes import Route, upstream_url
from .settings import current_settings
from .streaming import relay_body
from .upstream import (
    Upstream,
    UpstreamBrokeOff,
    UpstreamFailure,
    UpstreamResponse,
    UpstreamTimeout,
    abort,
    read_whole,
)

if TYPE_CHECKING:  # access/ and usage/ import proxy/: the app's Access and Usage are found through current_app
    from access import Access, Grant
    from usage.meter import Usage

# Answers the relay changes are read whole, decoded, up to this size. Relocated answers (proxy/public_urls.py)
# announced larger pass unchanged; error bodies scrubbed of keys have no such way out: one larger is a 502.
CHANGED_BODY_LIMIT = 8 * 1024 * 1024

# A body this small is read whole before it goes upstream, outside the replay budget: gunicorn holds it
# already (it reads 8 KiB and more at a time), it then goes out with the request head in one write, and the
# client's departure can be watched from the start (proxy/departure.py).
SMALL_BODY = 64 * 1024

BodyChange = Callable[[bytes], bytes]  # the whole, decoded body in; the body to send out
DECODABLE = frozenset(HTTPResponse.CONTENT_DECODERS)  # gzip, deflate, and br / zstd when their library is installed


class RelayResponse(Response):
    """A response that adds nothing of its own: no default Content-Type, no computed length."""

    default_mimetype = None
    automatically_set_content_length = False


def upstream_pool() -> Upstream:
    return current_app.extensions["upstream"]


def replay_budget() -> ReplayBudget:
    return current_app.extensions["replay_budget"]


def access_control() -> Access:
    return current_app.extensions["access"]


def usage_meter() -> Usage:
    return current_app.extensions["usage"]


def relay(route: Route) -> Response:
    """Forward the current request to `route`'s upstream and stream its answer back."""
    settings = current_settings()
    path, query = g.target  # already checked by the app's guard: a path trick never gets here
    grant = access_control().admit(request.environ, route.key_group)  # AccessDenied: 401 or 429
    usage_meter().admit(grant, route)  # usage/: 429 over the key's token budget; counts the answer once sent
    headers = request_headers(request.environ, route.host)
    url = grant.strip(upstream_url(route, path, query), headers)

    body: ClientBody | None = None
    length = request.content_length
    if length is not None:
        if length > settings.max_body_bytes:
            return _too_large(settings.max_body_bytes)
        headers["Content-Length"] = str(length)
        body = request_body(settings.max_body_bytes) if length else None
    elif "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        body = request_body(settings.max_body_bytes)  # sent on chunked

    try:
        upstream = send_body(route, grant, url, headers, body)
    except BodyTooLarge:
        return _too_large(settings.max_body_bytes)
    except ClientBodyError:
        return openai_error(400, "The request body could not be read completely.", "incomplete_body")
    except ClientTooSlow:
        return openai_error(408, "The request body came too slowly; the connection is closed.", "client_timeout")
    except ClientGone:
        return openai_error(499, "The client closed the connection before the answer.", "client_gone")
    except UpstreamFailure as exc:
        return openai_error(exc.status, exc.message(route.host), exc.code)
    if body is not None and not body.complete:
        abort(upstream)  # the upstream answered without the whole body: its connection cannot be reused
        return openai_error(502, f"The upstream {route.host} answered before it had the whole request body.",
                            "upstream_early_answer")
    relocation = relocation_for(route, path, upstream.headers, request.environ, access_control().proxies)
    # Behind a relay key, an error body could repeat the server's key (a leaky upstream, an echoing gateway).
    scrub = access_control().scrub if grant.ring is not None and upstream.status_code >= 400 else None
    return client_response(upstream, route.heartbeat, relocation, scrub)


def send_body(
    route: Route, grant: Grant, url: str, headers: dict[str, str], body: ClientBody | None
) -> UpstreamResponse:
    """Send the request, its body held in memory if small or for a retry if the budget allows, streamed
    otherwise; a client that leaves while the upstream has the request interrupts it (`ClientGone`)."""
    length = body.length if body is not None else None
    replayable = length is not None and SMALL_BODY < length <= REPLAY_LIMIT and grant.may_retry
    with replay_budget().hold(length if replayable else None) as held:
        small = length is not None and length <= SMALL_BODY
        sent = body.read_all() if held or small else body
        with watch_departure(request.environ, lambda: body is None or body.complete):
            return send_with_keys(route, grant, url, headers, sent)


def send_with_keys(
    route: Route, grant: Grant, url: str, headers: dict[str, str], body: bytes | ClientBody | None
) -> UpstreamResponse:
    """Send the request with each upstream key in turn while the upstream refuses the key (401, 429).

    A retry happens before anything is sent to the client, and only for a body held in memory.
    """
    def send(key: str | None) -> UpstreamResponse:
        return upstream_pool().send(request.method, url, route.origin, grant.with_key(headers, key), body)

    *first, last = grant.attempts()
    for key in first:
        upstream = send(key)
        if not grant.refused(key, upstream.status_code) or isinstance(body, ClientBody):
            return upstream
        abort(upstream)  # refused before any byte went to the client: try the next key
    upstream = send(last)
    grant.refused(last, upstream.status_code)
    return upstream


def client_response(upstream: UpstreamResponse, heartbeat: float, relocation: Relocation | None = None,
                    scrub: BodyChange | None = None) -> Response:
    """The upstream's status, headers and body, as they arrive; upstream URLs in them relocated to the relay,
    and, given `scrub`, the body read whole and scrubbed (unless it is an event stream)."""
    headers = response_headers(upstream.raw.headers.items())
    if relocation is not None:
        headers = relocation.headers(headers)
    if request.method == "HEAD" or upstream.status_code in (204, 304):
        upstream.raw.read()
        upstream.close()
        return RelayResponse([], status=upstream.status_code, headers=headers)
    if upstream.headers.get("Content-Type", "").startswith("text/event-stream"):
        headers.append(("X-Accel-Buffering", "no"))
        if "Cache-Control" not in upstream.headers:
            headers.append(("Cache-Control", "no-cache"))
        if "Content-Length" in upstream.headers or _codings(upstream):
            heartbeat = 0  # a comment would break the declared length, or the compressed bytes
    else:
        # The one point where an answer is read whole and changed: error bodies to scrub (all of them) and
        # small JSON bodies to relocate (see proxy/public_urls.py), when their encoding can be read.
        relocating = relocation is not None and relocation.body_field is not None and _small_json(upstream)
        relocate = [relocation.body] if relocating else []
        if scrub is not None:  # every error body: one that cannot be read is not sent as it is
            return _changed_body(upstream, headers, [scrub, *relocate])
        if relocate and _undecodable(upstream) is None:  # one in an unknown encoding passes unchanged
            return _changed_body(upstream, headers, relocate)
        heartbeat = 0
    body = relay_body(upstream, heartbeat)
    return RelayResponse(body, status=upstream.status_code, headers=headers, direct_passthrough=True)


def _small_json(upstream: UpstreamResponse) -> bool:
    length = upstream.headers.get("Content-Length", "")
    is_json = upstream.headers.get("Content-Type", "").split(";")[0].strip().lower() == "application/json"
    return is_json and (not length or (length.isdigit() and int(length) <= CHANGED_BODY_LIMIT))


def _codings(upstream: UpstreamResponse) -> list[str]:
    """The answer's content codings (gzip...), lower-case, `identity` left out."""
    tokens = (token.strip().lower() for token in upstream.headers.get("Content-Encoding", "").split(","))
    return [token for token in tokens if token and token != "identity"]


def _undecodable(upstream: UpstreamResponse) -> str | None:
    """The answer's content codings urllib3 cannot decode (br without brotli...), or None."""
    return ", ".join(token for token in _codings(upstream) if token not in DECODABLE) or None


def _changed_body(upstream: UpstreamResponse, headers: list[tuple[str, str]], changes: list[BodyChange]) -> Response:
    """The upstream's body read whole (decoded, so no `Content-Encoding`), changed, with its new length.

    A body that cannot be read whole and decoded is not sent as it is either: 502 (or 504 for a silence).
    """
    unknown = _undecodable(upstream)
    if unknown:
        abort(upstream)
        return openai_error(502, f"The upstream answered in an encoding the relay cannot read ({unknown}).",
                            "upstream_broke_off")
    try:
        body = read_whole(upstream, CHANGED_BODY_LIMIT)
    except UpstreamTimeout:
        return openai_error(504, "The upstream stopped answering.", "upstream_timeout")
    except UpstreamBrokeOff as exc:
        return openai_error(502, f"The upstream {exc}.", "upstream_broke_off")
    for change in changes:
        body = change(body)
    kept = [(name, value) for name, value in headers if name.lower() not in ("content-length", "content-encoding")]
    kept.append(("Content-Length", str(len(body))))
    return RelayResponse([body], status=upstream.status_code, headers=kept)


def _too_large(limit: int) -> Response:
    message = f"The request body is larger than the relay's limit of {limit} bytes."
    return openai_error(413, message, "request_too_large")
