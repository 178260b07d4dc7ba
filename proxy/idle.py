"""How long an upstream connection is reused once idle: for less time than the upstream keeps it.

Every server, load balancer and NAT gateway on the way drops an idle keep-alive connection after its own
time (Cloudflare, in front of OpenAI, 400 s; AWS NAT gateways 350 s; Azure's load balancers 4 min; AWS's
and nginx's 60 s; uvicorn and Node 5 s). A request sent on a connection as that happens fails: closed, its
client gets a 502 (the relay never sends a request twice); dropped silently, it waits for
`UPSTREAM_READ_TIMEOUT`. So a connection idle for `UPSTREAM_IDLE_TIMEOUT` seconds is closed rather than
reused, sooner if its upstream announced a shorter time (`Keep-Alive: timeout=5`, as Node does), and the
pool closes those past their time instead of keeping their descriptors and buffers until the next burst.
"""

from __future__ import annotations

import math
import queue
import re
import time
from typing import Any

SWEEP_EVERY = 1.0  # seconds between two looks through a pool for connections past their time
HINT_MARGIN = 1.0  # an announced time less this is the time reused (as undici does): the hint's own is too late
_ANNOUNCED = re.compile(r"(?:^|[\s,;])timeout\s*=\s*\"?(\d{1,9})\"?(?=$|[\s,;])", re.IGNORECASE)


def announced_idle(keep_alive: str | None) -> float | None:
    """The seconds an upstream keeps an idle connection, if its `Keep-Alive` header says (`timeout=5, max=99`)."""
    if not keep_alive:
        return None
    found = _ANNOUNCED.search(keep_alive)
    return float(found.group(1)) if found else None


class IdleConnections(queue.LifoQueue):
    """A pool's connections as urllib3 keeps them (newest on top, None for an empty place), each given, when it
    goes idle, the time after which it is not reused; a put also closes, once a second at most, every
    connection past its time."""

    def __init__(self, maxsize: int, limit: float) -> None:
        super().__init__(maxsize)
        self.limit = limit if limit > 0 else math.inf  # 0: no limit of the relay's own
        self.next_sweep = 0.0

    @classmethod
    def replacing(cls, old: queue.LifoQueue, limit: float) -> IdleConnections:
        """A queue of this kind with the places of `old`, a pool's unused queue (the standard library's or, in a
        gevent worker, gevent's: both keep their items in the list `queue`)."""
        new = cls(old.maxsize, limit)
        new.queue = list(old.queue)
        return new

    def _put(self, conn: Any) -> None:
        now = time.monotonic()
        if conn is not None:
            limit = self.limit
            announced = getattr(conn, "announced_idle", None)
            if announced is not None:
                limit = min(limit, max(announced - HINT_MARGIN, 0.0))
            conn.idle_until = now + limit
        self.queue.append(conn)
        if now >= self.next_sweep:
            self.next_sweep = now + SWEEP_EVERY
            self._sweep(now)

    def _get(self) -> Any:
        conn = self.queue.pop()
        if conn is not None and time.monotonic() >= conn.idle_until:
            conn.close()  # urllib3 opens it again for the request
        return conn

    def _sweep(self, now: float) -> None:
        places = self.queue
        for index, conn in enumerate(places):
            if conn is not None and now >= conn.idle_until:
                conn.close()
                places[index] = None
