"""`RATE_LIMIT`: requests per second, minute, hour or day, counted per relay key or per client IP.

The counting is a fixed window aligned on the clock (minute windows start at :00),
which makes one small counter per caller and period and gives every process the
same windows. A caller may thus send up to twice a limit across a window's edge;
that is the price of counters that several processes share with one round trip.
A request refused by one limit is not counted by the others.

Two stores behind one interface, `Counter.hit(caller, limits)`:
- `MemoryCounter`, per process (the default);
- `RedisCounter` (access/redis_counter.py), when `REDIS_URL` is set: one Lua script checks and counts all
  limits atomically, on the Redis server's clock, so every worker and instance
  shares one limit. If Redis cannot be reached, requests are let through (and a
  warning logged): an outage of the counter store must not take the relay down,
  and its breaker (proxy/redis_client.py) keeps a silent Redis from slowing them.
Callers are named by a hash (`keys.fingerprint`), never by a key or an address.
`peek` tells whether a caller is over a limit without counting (the relay-key
failures: only failures count, but a caller over the limit is refused outright).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cachetools import TTLCache

from proxy.settings import SettingsError

PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_ALIASES = {"s": "second", "sec": "second", "m": "minute", "min": "minute", "h": "hour", "hr": "hour", "d": "day"}


@dataclass(frozen=True)
class Limit:
    count: int
    period: int  # seconds
    name: str  # "minute"

    def __str__(self) -> str:
        return f"{self.count}/{self.name}"


def parse_limits(value: str, setting: str = "RATE_LIMIT") -> tuple[Limit, ...]:
    """`"60/minute,1000/day"` -> limits; a malformed entry stops the start-up with a clear message."""
    limits = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        count, _, unit = item.partition("/")
        unit = unit.strip().lower()
        unit = _ALIASES.get(unit, unit.removesuffix("s") if unit.endswith("s") and len(unit) > 1 else unit)
        if not count.strip().isdigit() or int(count) < 1 or unit not in PERIODS:
            raise SettingsError(f"{setting} entry {item!r} must look like 60/minute (per second, minute, hour or day)")
        limits.append(Limit(int(count), PERIODS[unit], unit))
    return tuple(limits)


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: int = 0  # seconds until the refusing window ends
    limit: Limit | None = None  # the limit that refused

    @staticmethod
    def refuse(limit: Limit, seconds_left: float) -> Verdict:
        return Verdict(False, max(1, math.ceil(seconds_left)), limit)


ALLOWED = Verdict(True)


class Counter(Protocol):
    def hit(self, caller: str, limits: tuple[Limit, ...]) -> Verdict:
        """Count one request of `caller` unless a limit is reached; say which."""
        ...

    def peek(self, caller: str, limits: tuple[Limit, ...]) -> Verdict:
        """Whether `caller` is over a limit now, counting nothing."""
        ...


class MemoryCounter:
    """Counters in this process, bounded in number (the least recent callers are forgotten first)."""

    def __init__(self, longest_period: int, max_callers: int = 100_000, clock: Callable[[], float] = time.time):
        self._windows: TTLCache = TTLCache(maxsize=max_callers, ttl=longest_period, timer=clock)
        self._clock = clock
        self._lock = threading.Lock()

    def peek(self, caller: str, limits: tuple[Limit, ...]) -> Verdict:
        with self._lock:
            return self._verdict(self._windows.get(caller) or {}, limits, self._clock())

    @staticmethod
    def _verdict(state: dict[int, list[int]], limits: tuple[Limit, ...], now: float) -> Verdict:
        worst: Verdict = ALLOWED
        for limit in limits:
            window = int(now // limit.period)
            current = state.get(limit.period)
            if current and current[0] == window and current[1] >= limit.count:
                verdict = Verdict.refuse(limit, (window + 1) * limit.period - now)
                if worst.allowed or verdict.retry_after > worst.retry_after:
                    worst = verdict
        return worst

    def hit(self, caller: str, limits: tuple[Limit, ...]) -> Verdict:
        with self._lock:
            now = self._clock()
            state: dict[int, list[int]] = self._windows.get(caller) or {}  # period -> [window, count]
            worst = self._verdict(state, limits, now)
            if not worst.allowed:
                return worst
            for limit in limits:
                window = int(now // limit.period)
                current = state.get(limit.period)
                state[limit.period] = [window, current[1] + 1 if current and current[0] == window else 1]
            self._windows[caller] = state  # re-set: restarts the entry's time to live
            return ALLOWED


def make_counter(redis_url: str, limits: tuple[Limit, ...], verify_tls: bool = True, timeout: float = 0.5,
                 prefix: str = "relay:ratelimit") -> Counter | None:
    """The counter the settings ask for: none without limits, Redis with `REDIS_URL`, else memory."""
    if not limits:
        return None
    if redis_url:
        from .redis_counter import RedisCounter  # redis-py loads only where it is used (a tenth of the import)

        return RedisCounter(redis_url, prefix, verify_tls, timeout)
    return MemoryCounter(longest_period=max(limit.period for limit in limits))
