"""Noticing a client that leaves while the relay waits for the upstream's answer.

A non-streamed answer can take minutes to begin (the upstream sends its headers
when the whole completion is ready). A client that hangs up meanwhile is only
noticed when the answer is written to it, so its upstream request would run on,
and hold a connection, up to `UPSTREAM_READ_TIMEOUT`.

Under gevent, the hub watches the client's socket while the request is with
the upstream (a libev IO watcher: no greenlet of its own, nothing to switch to
while the client stays): once the body has been read, the client has nothing
more to send, so the socket becomes readable only when it closes (or sends its
next, pipelined request). It looks with `MSG_PEEK`, so a pipelined request stays
where it is for gunicorn to read; end-of-file means the client has gone, and the
waiting request is interrupted with `ClientGone` (urllib3 then closes the
upstream connection). A client that only half-closes (shutdown of its sending
side) is taken as gone too, as nginx does.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .connection import hung_up
from .green import greenlets_rule_sockets
from .pace import client_socket

NOT_READY_WAIT = 0.25  # seconds between looks while the client's body is still being read


class ClientGone(Exception):
    """The client closed its connection while its request was with the upstream."""


@contextmanager
def watch_departure(environ: dict[str, Any], body_read: Callable[[], bool]) -> Iterator[None]:
    """Interrupt the block with `ClientGone` if the client leaves; `body_read()` says when to start looking."""
    sock = client_socket(environ)
    if sock is None or isinstance(sock, ssl.SSLSocket) or not greenlets_rule_sockets():
        yield
        return
    import gevent

    waiting = gevent.getcurrent()
    loop = gevent.get_hub().loop
    readable = loop.io(sock.fileno(), 1)  # 1: EV_READ
    not_yet = loop.timer(NOT_READY_WAIT, NOT_READY_WAIT)

    def look() -> None:  # run by the hub (so the block is switched out), as are the callbacks below
        if body_read():
            not_yet.stop()
            readable.start(said_something)

    def said_something() -> None:
        gone = hung_up(getattr(sock, "_sock", sock))  # gevent's socket wraps the OS socket (non-blocking)
        if gone is None:  # woken for nothing: keep watching
            return
        readable.stop()  # data (a pipelined request) is not looked at again: the socket stays readable
        if gone:
            waiting.throw(ClientGone())

    try:
        if body_read():
            readable.start(said_something)
        else:
            not_yet.start(look)
        yield
    finally:
        readable.close()
        not_yet.close()
