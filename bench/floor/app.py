"""The bench's floor: the least a Flask relay does, served by gunicorn's own gevent worker.

One view takes every path: the body read whole, the request sent on a kept-alive urllib3 pool (as the relay
does, without requests' adapter), the answer streamed back as each read of it comes. None of the relay's own
work: no key rules, no hop-by-hop header care beyond the few that would break the exchange, no limits,
heartbeats, access log or error shapes. The bench runs it beside the relay in its non-stream and two-worker
rows, so that a figure of the relay can be read against what Flask, gunicorn and urllib3 cost on their own.

The same environment as the relay: `UPSTREAM_URL` for every path, `ROUTES` ("name=url,...") for `/name/...`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import urllib3
from flask import Flask, Response, request

# Headers that would break the exchange if passed on; a request's length is set anew below.
NOT_FORWARDED = frozenset({"host", "connection", "keep-alive", "transfer-encoding"})


def _pool(url: str) -> urllib3.HTTPConnectionPool:
    return urllib3.connectionpool.connection_from_url(url, maxsize=1000, block=False, retries=False)


upstream = _pool(os.environ["UPSTREAM_URL"])
routes = {name: _pool(url) for name, _, url in
          (entry.partition("=") for entry in os.environ.get("ROUTES", "").split(",") if "=" in entry)}
app = Flask(__name__)


@app.get("/healthz")
def healthz():
    return {"status": "ok"}


@app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def relay(path: str) -> Response:
    prefix, _, rest = path.partition("/")
    pool, target = (routes[prefix], "/" + rest) if prefix in routes else (upstream, "/" + path)
    if request.query_string:
        target += "?" + request.query_string.decode("latin-1")
    body = request.get_data()
    headers = {name: value for name, value in request.headers.items() if name.lower() not in NOT_FORWARDED}
    headers["Content-Length"] = str(len(body))  # the body is whole here, however it came
    answer = pool.urlopen(request.method, target, body=body, headers=headers, preload_content=False,
                          decode_content=False, redirect=False, retries=False)

    def pieces() -> Iterator[bytes]:
        try:
            while piece := answer.read1(65536):
                yield piece
        finally:
            answer.release_conn()

    # An answer's length stays: its body passes unchanged.
    kept = [(name, value) for name, value in answer.headers.items() if name.lower() not in NOT_FORWARDED]
    return Response(pieces(), status=answer.status, headers=kept, direct_passthrough=True)
