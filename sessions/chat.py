"""One chat turn: read the history under the session's lock, ask the upstream, record the turn once complete.

The upstream call goes through the relay's own pool to the `/v1` route's
upstream. A turn is recorded whole or not at all: an upstream error, an
interrupted stream or a client that leaves mid-stream leave the history as it
was. The lock is held for the whole turn, stream included, so concurrent turns
on one session land one after the other.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator

from flask import Response, current_app, request

from access import current_access
from proxy.departure import ClientGone, watch_departure
from proxy.errors import upstream_error_message
from proxy.headers import request_headers
from proxy.relay import client_response
from proxy.routes import Route
from proxy.settings import current_settings
from proxy.streaming import close_body
from proxy.upstream import (
    UpstreamBrokeOff,
    UpstreamFailure,
    UpstreamResponse,
    UpstreamTimeout,
    abort,
    read_whole,
)

from .credentials import Credentials
from .events import ReplyCollector
from .history import Session
from .replies import Failure, success
from .store import SessionLock, SessionStore, StoreUnavailable
from .validation import Turn

log = logging.getLogger("relay.sessions")

MAX_ANSWER_BYTES = 16 * 1024 * 1024  # a non-streamed answer (or an error body) larger than this is refused
# Headers the turn sets itself; the client's other headers pass as they do through the relay.
OWN_HEADERS = frozenset({"authorization", "content-type", "content-length", "accept", "accept-encoding"})


def session_store() -> SessionStore:
    return current_app.extensions["sessions"]


def take_turn(turn: Turn, creds: Credentials) -> Response:
    settings = current_settings()
    route = current_app.extensions["routes"]["v1"]
    lock = session_store().lock((creds.owner, turn.session_id))
    handed_to_stream = False
    try:
        session = lock.read() or Session()
        system = (turn.system if turn.system is not None else session.system) or None  # "" clears it
        upstream = _ask_upstream(route, turn, session.prompt(turn.content, system), creds.upstream_key)

        def record(reply: str) -> None:
            limits = (settings.session_max_messages, settings.session_max_chars)
            lock.write(session.with_turn(system, turn.content, reply, *limits))

        if turn.stream and upstream.headers.get("Content-Type", "").startswith("text/event-stream"):
            response = client_response(upstream, route.heartbeat)  # the v1 route's heartbeat
            response.response = RecordedStream(response.response, upstream, record, lock)
            handed_to_stream = True  # the stream releases the lock when the server closes it
            return response
        reply = _reply_text(upstream, route.host)
        record(reply)
        return success(reply)
    finally:
        if not handed_to_stream:
            lock.release()


class RecordedStream:
    """The upstream's event stream on its way to the client, chunk by chunk; the turn is recorded if it ends cleanly.

    "Cleanly" is: the upstream body ended normally, announced its end ([DONE] or
    a finish reason) and the client took every chunk. The server calls `close()`
    in every case, which frees the upstream connection and the session's lock.
    """

    def __init__(self, body: Iterable[bytes], upstream: UpstreamResponse, record: Callable[[str], None],
                 lock: SessionLock):
        self.body = body
        self.upstream = upstream
        self.record = record
        self.lock = lock
        self.collector = ReplyCollector()
        self.started = False
        self.ended = False

    def __iter__(self) -> Iterator[bytes]:
        self.started = True
        for chunk in self.body:
            self.collector.feed(chunk)
            yield chunk
        self.ended = True
        if not self.collector.complete:
            log.info("a streamed turn ended without a complete reply; it was not recorded")
            return
        try:
            self.record(self.collector.reply)
        except StoreUnavailable as exc:  # the client has its answer; the history stays as it was
            log.warning("a streamed turn could not be recorded: %s", exc)

    def close(self) -> None:
        try:
            if self.started:
                close_body(self.body)  # frees the upstream connection: back to the pool if read to its end, else closed
            else:
                abort(self.upstream)  # the body never began, so it cannot clean up after itself
        finally:
            self.lock.release()


def _ask_upstream(route: Route, turn: Turn, messages: list[dict[str, str]], key: str) -> UpstreamResponse:
    """The upstream's 200 answer, body unread; any other answer or failure is raised as a `Failure`."""
    payload: dict = {"model": turn.model, "messages": messages}
    if turn.stream:
        payload["stream"] = True
    body = json.dumps(payload, ensure_ascii=False).encode()
    headers = {name: value for name, value in request_headers(request.environ, route.host).items()
               if name.lower() not in OWN_HEADERS}
    headers |= {
        "Authorization": f"Bearer {key}",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Accept": "text/event-stream" if turn.stream else "application/json",
        "Accept-Encoding": "identity",  # the relay reads the answer itself
    }
    try:
        with watch_departure(request.environ, lambda: True):  # the client's body was read whole before
            upstream = current_app.extensions["upstream"].send(
                "POST", route.base + "/chat/completions", route.origin, headers, body
            )
    except ClientGone:
        raise Failure(499, "The client closed the connection before the answer.") from None
    except UpstreamFailure as exc:
        raise Failure(exc.status, exc.message(route.host)) from None
    if upstream.status_code != 200:
        raise _refusal(upstream, route.host)
    return upstream


def _read_all(upstream: UpstreamResponse, host: str) -> bytes:
    try:
        return read_whole(upstream, MAX_ANSWER_BYTES)
    except UpstreamTimeout:
        raise Failure(504, f"The upstream {host} stopped answering.") from None
    except UpstreamBrokeOff as exc:
        raise Failure(502, f"The upstream {host} {exc}.") from None


def _refusal(upstream: UpstreamResponse, host: str) -> Failure:
    """The upstream's status and its own error message (OpenAI shape, any upstream key removed), as a `Failure`."""
    status = upstream.status_code
    message = f"The upstream {host} answered {status}."
    with contextlib.suppress(Failure):  # no readable error body: the status says enough
        message = upstream_error_message(current_access().scrub(_read_all(upstream, host))) or message
    headers = {name: upstream.headers[name] for name in ("Retry-After",) if name in upstream.headers}
    return Failure(status if status >= 400 else 502, message, headers)


def _reply_text(upstream: UpstreamResponse, host: str) -> str:
    try:
        answer = json.loads(_read_all(upstream, host))
        content = answer["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        content = None
    if not isinstance(content, str):
        raise Failure(502, "The upstream's answer has no message text.")
    return content
