"""Noticing a client that leaves while the relay waits for the upstream's answer.

A non-streamed answer can take minutes to begin (the upstream sends its headers
when the whole completion is ready). A client that hangs up meanwhile is only
noticed when the answer is written to it, so its upstream request would run on,
and hold a connection, up to `UPSTREAM_READ_TIMEOUT`.

Under gevent, a small greenlet watches the client's socket while the request is
with the upstream: once the body has been read, the client has nothing more to
send, so the socket becomes readable only when it closes (or sends its next,
pipelined request). It looks with `MSG_PEEK`, so a pipelined request stays where
it is for gunicorn to read; end-of-file means the client has gone, and the
waiting request is interrupted with `ClientGone` (urllib3 then closes the
upstream connection). A client that only half-closes (shutdown of its sending
side) is taken as gone too, as nginx does.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .pace import client_socket, greenlets_rule_sockets

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
    state = {"inside": True}

    def interrupt() -> None:
        if state["inside"]:  # run by the hub: the block is switched out, so it cannot be leaving meanwhile
            waiting.throw(ClientGone())

    def watch() -> None:
        if _gone(sock, body_read):
            gevent.get_hub().loop.run_callback(interrupt)

    watcher = gevent.spawn(watch)
    try:
        yield
    finally:
        state["inside"] = False
        watcher.kill(block=True, timeout=1)


def _gone(sock: socket.socket, body_read: Callable[[], bool]) -> bool:
    """Wait until the client's socket says something; True if it is the end (or an error), False for data."""
    import gevent
    from gevent.socket import wait_read

    while not body_read():
        gevent.sleep(NOT_READY_WAIT)
    try:
        wait_read(sock.fileno())
        return not sock.recv(1, socket.MSG_PEEK)
    except OSError:  # reset by the peer
        return True
