"""Request bodies held in memory for a retry on the route's next upstream key, within one budget per worker.

With several upstream keys, a body up to `REPLAY_LIMIT` is read whole before it goes
out, so that the request can go out again if the upstream refuses the key (401, 429).
Held for every concurrent request, those bodies add up (2,000 connections of 1 MiB:
2 GiB), so together they may hold at most `REPLAY_BUDGET_BYTES`; past it, a body is
streamed and sent once, as a larger one always is.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

REPLAY_LIMIT = 1024 * 1024  # the largest body held for a retry


class ReplayBudget:
    """The bytes of request bodies held for a retry by this worker's requests, at most `limit`."""

    def __init__(self, limit: int):
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, size: int | None) -> Iterator[bool]:
        """Reserve `size` bytes while the block runs; yields whether they were granted (None: not asked)."""
        granted = size is not None and self._take(size)
        try:
            yield granted
        finally:
            if granted:
                with self._lock:
                    self.held -= size

    def _take(self, size: int) -> bool:
        with self._lock:
            if self.held + size > self.limit:
                return False
            self.held += size
            return True
