"""Usage of one relayed request: its key's budget checked before, its answer counted after.

`Usage.admit(grant, route)` is called by the relay right after access control.
It refuses a key whose budget is spent (a 429, nothing goes upstream), then asks
Flask to hand it the response once the relay has made it, whatever it is (the
upstream's answer, a 502/504 of the relay's own). The response body is wrapped in
a `MeteredBody`: each chunk goes to the server first and is read afterwards, and
the figures are added when the server closes the body, after the client has it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING

from flask import Response, after_this_request, request

from proxy.settings import Settings, SettingsError
from proxy.streaming import UpstreamDropped, close_body

from . import metrics
from .budgets import Budget, parse_budgets
from .reader import Tokens, UsageReader
from .store import UsageStore, make_store

if TYPE_CHECKING:
    from access import Access, Grant
    from proxy.routes import Route

log = logging.getLogger("relay.usage")

READ_TYPES = ("application/json", "text/event-stream")
KINDS = ("input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Usage:
    def __init__(self, store: UsageStore, budgets: dict[str, list[Budget]], labels: list[str], counting: bool = True,
                 metrics_on: bool = False):
        self.store = store
        self.budgets = budgets
        self.labels = labels
        self.counting = counting
        self.metrics_on = metrics_on

    @classmethod
    def from_settings(cls, settings: Settings, access: Access) -> Usage:
        if settings.usage_retention_days < 1:
            raise SettingsError("USAGE_RETENTION_DAYS must be a whole number of days, 1 or more")
        labels = access.relay_keys.labels
        budgets = parse_budgets(settings.key_budgets, labels)
        if budgets and not settings.count_usage:
            raise SettingsError("KEY_BUDGETS needs usage counting: remove COUNT_USAGE=0")
        store = make_store(settings.redis_url, settings.usage_retention_days, settings.redis_tls_verify)
        return cls(store, budgets, labels, settings.count_usage, settings.metrics)

    # -- before ---------------------------------------------------------------------------------------------

    def admit(self, grant: Grant, route: Route) -> None:
        """Refuse a key over its budget (`AccessDenied`, a 429); have its answer counted once sent."""
        if grant.label is not None:
            self.check_budget(grant.label)
        if self.counting and (grant.label is not None or self.metrics_on):
            after_this_request(partial(self.observe, grant.label, route.prefix))

    def check_budget(self, label: str) -> None:
        from access import AccessDenied  # access/ imports usage.metrics

        now = utc_now()
        for budget in self.budgets.get(label, ()):
            used = self.store.tokens(label, budget.first_day(now.date()), now.date())
            if used >= budget.tokens:
                metrics.refusals.labels("budget").inc()
                wait = budget.seconds_left(now)
                message = (f"Token budget of {budget} reached for this relay key ({used} used). "
                           f"Retry after {wait} s, when the next {budget.period} starts (UTC).")
                raise AccessDenied(429, message, "token_budget_exceeded", {"Retry-After": str(wait)})

    # -- after ----------------------------------------------------------------------------------------------

    def observe(self, label: str | None, prefix: str, response: Response) -> Response:
        status = response.status_code
        if not response.direct_passthrough and status in (502, 504):  # the relay's own: no answer came
            metrics.upstream_errors.labels(prefix, "unreachable" if status == 502 else "timeout").inc()
        reader = None
        content_type = response.headers.get("Content-Type", "")
        if 200 <= status < 300 and request.method == "POST" and content_type.startswith(READ_TYPES):
            reader = UsageReader(content_type.startswith("text/event-stream"),
                                 response.headers.get("Content-Encoding", "").strip().lower())
        response.response = MeteredBody(response.response, reader, prefix, partial(self.count, label, prefix, status))
        return response

    def count(self, label: str | None, prefix: str, status: int, reader: UsageReader | None, complete: bool) -> None:
        """Add one answer's figures; called when the server closes its body (never raises)."""
        try:
            tokens = reader.result() if reader is not None else None
            if tokens is not None and self.metrics_on:
                for kind in KINDS:
                    if value := getattr(tokens, kind):
                        metrics.tokens_total.labels(tokens.model or "unknown", label or "", kind).inc(value)
            if label is not None:
                unknown = reader is not None and (tokens is None or not complete)
                self.store.add(label, utc_now().date(), figures(prefix, status, tokens, unknown))
        except Exception:  # counting must never break a response that has been sent
            log.exception("usage of a request could not be counted")

    def count_websocket(self, label: str | None, prefix: str, status: int) -> None:
        """One WebSocket session: a request whose tokens are not read (frames pass undecoded)."""
        if self.counting and label is not None:
            self.store.add(label, utc_now().date(), figures(prefix, status, None, True))


def figures(prefix: str, status: int, tokens: Tokens | None, unknown: bool) -> dict[str, int]:
    """The counters one request adds to its key's day (see store.py)."""
    out = {"requests": 1, f"route|{prefix}|{status // 100}xx": 1}
    if unknown:
        out["unknown"] = 1
    if tokens is not None:
        model = tokens.model or "unknown"
        out[f"model|{model}|requests"] = 1
        for kind in (*KINDS, "total_tokens"):
            if value := getattr(tokens, kind):
                out[kind] = value
                out[f"model|{model}|{kind}"] = value
    return out


class MeteredBody:
    """The response body, chunk by chunk: handed on first, read after; counted when the server closes it."""

    def __init__(self, body: Iterable[bytes], reader: UsageReader | None, prefix: str,
                 done: Callable[[UsageReader | None, bool], None]):
        self.body = body
        self.reader = reader
        self.prefix = prefix
        self.done = done
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        reader = self.reader
        try:
            if reader is None:
                yield from self.body
            else:
                for chunk in self.body:
                    yield chunk
                    reader.feed(chunk)
                reader.finish()
        except UpstreamDropped:
            metrics.upstream_errors.labels(self.prefix, "broke_off").inc()
            raise
        self.complete = True

    def close(self) -> None:
        try:
            close_body(self.body)
        finally:
            self.done(self.reader, self.complete)
