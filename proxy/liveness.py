"""A cheaper check that a pooled upstream connection is still open, before it is reused.

urllib3 checks every keep-alive connection it takes from the pool: a zero-timeout wait
for it to become readable (readable means the upstream closed it, or sent bytes it should
not have). Under gevent that wait is the patched `select.poll`, which parks the request's
greenlet, goes round the hub and expires a zero timer: about 5% of a non-streamed
request's CPU in one worker. The same question asked of the kernel with the original
`poll` is one syscall that never blocks. Connections through an outbound proxy keep
urllib3's own pools.
"""

from __future__ import annotations

import select

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

try:  # the unpatched poll when gevent has patched `select` (gunicorn's gevent worker); the same one otherwise
    from gevent.monkey import get_original

    _poll = get_original("select", "poll")
except ImportError:  # Vercel's runtime: no gevent
    _poll = select.poll


def _still_open(sock) -> bool:
    poller = _poll()
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)


class _Connection(HTTPConnection):
    @property
    def is_connected(self) -> bool:
        return self.sock is not None and _still_open(self.sock)


class _TLSConnection(HTTPSConnection):
    @property
    def is_connected(self) -> bool:
        return self.sock is not None and _still_open(self.sock)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


POOL_CLASSES = {"http": _Pool, "https": _TLSPool}  # for a urllib3 PoolManager's `pool_classes_by_scheme`
