"""The upstream's billing API, asked with the client's key through the relay's shared pool.

A `BillingUpstream` holds everything it needs (pool, route, headers), so its calls
can run in worker threads, which have no app or request context. Answers are
small JSON documents: each is read whole, then its connection goes back to the
pool. Every way a call can fail becomes a `BillingError` carrying the status the
relay answers with; each endpoint words it in its own error shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from flask import Request, current_app

from access import current_access
from proxy.errors import upstream_error_message
from proxy.routes import Route
from proxy.upstream import (
    Upstream,
    UpstreamBrokeOff,
    UpstreamFailure,
    UpstreamResponse,
    UpstreamTimeout,
    read_whole,
)

MAX_ANSWER_BYTES = 8 * 1024 * 1024
FORWARDED_HEADERS = ("OpenAI-Organization", "OpenAI-Project")  # select which organization's billing is read
SESSION_KEY_HINT = (
    "(The official API serves billing only to browser session keys. Ask with an admin key (sk-admin-...) "
    "to get what was used from /v1/organization/costs, or point the relay at an upstream that serves "
    "/v1/dashboard/billing, such as one-api or new-api.)"
)


class BillingError(Exception):
    """A billing query failed; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Answer:
    """One upstream answer, read whole."""

    status: int
    body: bytes
    content_type: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json_object(self, what: str) -> dict[str, Any]:
        try:
            document = json.loads(self.body)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise BillingError(502, f"The upstream's {what} answer is not a JSON object.")
        return document

    def failure(self, what: str) -> BillingError:
        """The error for a refused query: the upstream's status and words, with a hint for the session-key refusal.

        A refusal sent with a 2xx status (one-api and new-api answer some errors with 200) is a 502.
        """
        words = upstream_error_message(self.body)
        message = words or f"The upstream answered the {what} query with HTTP {self.status}."
        if "session key" in message.lower():
            message = f"{message} {SESSION_KEY_HINT}"
        return BillingError(self.status if 400 <= self.status <= 599 else 502, message)


class BillingUpstream:
    """The billing endpoints of the relay's OpenAI route, as seen with one key."""

    def __init__(self, pool: Upstream, route: Route, key: str, extra_headers: Mapping[str, str],
                 scrub: Callable[[bytes], bytes] = lambda body: body):
        self.pool = pool
        self.route = route
        self.scrub = scrub  # removes the relay's upstream keys from what a refusal says
        self.headers = {"Host": route.host, "Accept": "application/json", **extra_headers}
        self.headers["Authorization"] = f"Bearer {key}"

    @classmethod
    def for_request(cls, request: Request, key: str) -> BillingUpstream:
        extra = {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}
        return cls(current_app.extensions["upstream"], current_app.extensions["routes"]["openai"], key, extra,
                   current_access().scrub)

    def get(self, path: str, params: Mapping[str, str | int] | None = None) -> Answer:
        """GET `path` (with `params`) under the route's base; raise `BillingError` when no answer comes."""
        url = self.route.base + path + (f"?{urlencode(params)}" if params else "")
        try:
            response = self.pool.send("GET", url, self.route.origin, dict(self.headers))
        except UpstreamFailure as exc:
            raise BillingError(exc.status, exc.message(self.route.host)) from None
        return self._read_whole(response)

    def get_json(self, path: str, what: str, params: Mapping[str, str | int] | None = None) -> dict[str, Any]:
        """The JSON object of a successful answer; `BillingError` for a refusal or anything else."""
        answer = self.get(path, params)
        if not answer.ok:
            raise answer.failure(what)
        document = answer.json_object(what)
        if "error" in document and upstream_error_message(answer.body):
            raise answer.failure(what)
        return document

    def _read_whole(self, response: UpstreamResponse) -> Answer:
        try:
            body = read_whole(response, MAX_ANSWER_BYTES)
        except UpstreamTimeout:
            raise BillingError(504, f"The upstream {self.route.host} did not answer in time.") from None
        except UpstreamBrokeOff as exc:
            raise BillingError(502, f"The upstream {self.route.host} {exc}.") from None
        if not 200 <= response.status_code < 300:
            body = self.scrub(body)
        return Answer(response.status_code, body, response.headers.get("Content-Type", ""))
