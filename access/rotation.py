"""The upstream keys of one route, used in turn; a key the upstream refuses rests for a while.

Requests take the keys round-robin. When the upstream answers 401 (key revoked)
or 429 (key out of quota or rate) the key rests for `KEY_COOLDOWN` seconds and
the next ones are used meanwhile. If every key is resting, the one whose rest ends
first is tried anyway: the client then gets the upstream's own answer. The state
lives in the worker process: each process learns of a refused key on its own,
at the cost of one refused request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from usage.metrics import key_rests

log = logging.getLogger("relay.access")

REFUSALS = (401, 429)  # upstream statuses that rest a key


class KeyRing:
    def __init__(self, group: str, keys: list[str], cooldown: float, clock: Callable[[], float] = time.monotonic):
        if not keys:
            raise ValueError("a key ring needs at least one key")
        self.group = group
        self.keys = list(keys)
        self.cooldown = cooldown
        self.clock = clock
        self._resting_until = [0.0] * len(keys)
        self._next = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.keys)

    def attempts(self) -> list[str]:
        """The keys for one request, in the order to try them: the usable keys from the next in turn.

        Never empty: with every key resting, it holds the one that recovers first.
        """
        with self._lock:
            start = self._next
            self._next = (self._next + 1) % len(self.keys)
            now = self.clock()
            order = [(start + step) % len(self.keys) for step in range(len(self.keys))]
            usable = [index for index in order if self._resting_until[index] <= now]
            if not usable:
                usable = [min(order, key=lambda index: self._resting_until[index])]
            return [self.keys[index] for index in usable]

    def refused(self, key: str, status: int) -> bool:
        """Note the upstream's answer to `key`; True (and the key rests) if it refused the key."""
        if status not in REFUSALS:
            return False
        index = self.keys.index(key)
        with self._lock:
            self._resting_until[index] = self.clock() + self.cooldown
        key_rests.labels(self.group).inc()  # usage/metrics.py
        # The key's position, never the key or any part of it.
        log.warning(
            "upstream key %d of %d for %s was refused with %d: resting it for %gs",
            index + 1, len(self.keys), self.group, status, self.cooldown,
        )
        return True
