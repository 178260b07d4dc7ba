"""Prometheus metrics, served at `/metrics` when `METRICS=1` (behind `ADMIN_KEY` when that is set).

Under several gunicorn workers, prometheus-client's multiprocess mode adds up the
workers' figures: each worker writes its values to memory-mapped files in
`PROMETHEUS_MULTIPROC_DIR` (gunicorn.conf.py makes a fresh directory when it is
unset, and forgets a dead worker's gauges in `child_exit`). Without that variable
(one process, Vercel) the values live in the process.

Label values are bounded and say nothing secret: a route prefix (never the rest of
a path), a method from a fixed list, a status, an upstream key group, a relay
key's label (never the key), a model name as the upstream answered it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

from proxy.streaming import close_body

requests_total = Counter("relay_requests", "Requests, by route prefix, method and status.",
                         ["route", "method", "status"])
request_seconds = Histogram("relay_request_duration_seconds", "Time from the request to the end of its answer.",
                            ["route"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600))
first_byte_seconds = Histogram("relay_stream_first_byte_seconds", "Event streams: time to the first byte of the body.",
                               ["route"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
open_streams = Gauge("relay_open_streams", "Event streams being relayed now.", multiprocess_mode="livesum")
open_websockets = Gauge("relay_open_websockets", "WebSocket sessions being relayed now.", multiprocess_mode="livesum")
upstream_errors = Counter("relay_upstream_errors", "Upstream failures: unreachable, timeout, broke_off (mid-body).",
                          ["route", "kind"])
key_rests = Counter("relay_key_rests", "Upstream keys put to rest after a 401 or 429, by key group.", ["route"])
refusals = Counter("relay_refusals", "Requests refused before going upstream: rate_limit, budget.", ["reason"])
tokens_total = Counter("relay_tokens", "Tokens the answers reported, by model, relay-key label and kind.",
                       ["model", "key", "kind"])

METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
PATH = "/metrics"


def exposition() -> bytes:
    """Every metric in the Prometheus text format (all workers' in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


class Metrics:
    """WSGI middleware: counts and times every request, and answers `GET /metrics`."""

    def __init__(self, app: Callable, prefixes: Collection[str], admin_key: str = ""):
        self.app = app
        self.prefixes = frozenset(prefixes)
        self.admin_digest = hashlib.sha256(admin_key.encode()).digest() if admin_key else None

    def route_of(self, path: str) -> str:
        first = path.split("/", 2)[1] if path.startswith("/") else ""
        if first in self.prefixes or first == "pro":
            return first
        return "other"

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PATH:
            return self.serve(environ, start_response)
        started = time.monotonic()
        method = environ.get("REQUEST_METHOD", "")
        measured = _Measured(self.route_of(environ.get("PATH_INFO", "")), method if method in METHODS else "OTHER",
                             started)

        def capture(status_line: str, headers: list, exc_info=None):
            measured.status = status_line[:3]
            measured.stream = any(name.lower() == "content-type" and value.startswith("text/event-stream")
                                  for name, value in headers)
            return start_response(status_line, headers, exc_info)

        measured.body = self.app(environ, capture)
        return measured

    def serve(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if self.admin_digest is not None:
            scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").strip().partition(" ")
            presented = hashlib.sha256(token.strip().encode("utf-8", "surrogatepass")).digest()
            if scheme.lower() != "bearer" or not hmac.compare_digest(presented, self.admin_digest):
                body = json.dumps({"error": {"message": "/metrics needs the ADMIN_KEY as 'Authorization: Bearer'.",
                                             "type": "authentication_error", "param": None,
                                             "code": "invalid_admin_key"}}).encode()
                start_response("401 UNAUTHORIZED", [("Content-Type", "application/json"),
                                                    ("Content-Length", str(len(body)))])
                return [body]
        body = exposition()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [body]


class _Measured:
    """The response body on its way out: the first byte of a stream is timed, the whole request at close."""

    def __init__(self, route: str, method: str, started: float):
        self.route = route
        self.method = method
        self.started = started
        self.status = "000"
        self.stream = False
        self.body: Iterable[bytes] = ()
        self.opened = False

    def __iter__(self) -> Iterator[bytes]:
        if self.stream:
            open_streams.inc()
            self.opened = True
        first = self.stream
        for chunk in self.body:
            if first and chunk:
                first_byte_seconds.labels(self.route).observe(time.monotonic() - self.started)
                first = False
            yield chunk

    def close(self) -> None:
        try:
            close_body(self.body)
        finally:
            if self.opened:
                open_streams.dec()
            requests_total.labels(self.route, self.method, self.status).inc()
            request_seconds.labels(self.route).observe(time.monotonic() - self.started)
