"""Where usage is kept: one flat counter hash per relay-key label and UTC day.

Fields of a day (all integers, only added to):
`requests`, `unknown` (answers that reported no usage), `input_tokens`, `output_tokens`,
`total_tokens`, `cached_tokens`, `reasoning_tokens`, `route|<prefix>|<2xx...>` (requests),
and `model|<model>|<figure>` for each model. Model names come from the answers; the
separator is the last `|`, so a model name may hold `|` or `:`.

- `MemoryStore`: this process only (one worker), days older than the retention dropped.
- `RedisStore` (usage/redis_store.py): `relay:usage:{<label>}:<YYYY-MM-DD>`, written with `HINCRBY` in one
  pipeline per request and expiring `USAGE_RETENTION_DAYS` after its day, so every
  worker and instance adds to, and reads, the same figures. If Redis cannot be
  reached, writes are dropped with a warning at most once a minute: requests still flow.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Protocol


class StoreUnavailable(Exception):
    """The usage store (Redis) could not be read."""


class UsageStore(Protocol):
    def add(self, label: str, day: date, figures: Mapping[str, int]) -> None:
        """Add `figures` to `label`'s counters of `day`; never raises."""
        ...

    def days(self, labels: list[str], start: date, end: date) -> dict[str, dict[date, dict[str, int]]]:
        """Each label's counters for each day from `start` to `end` (both included) that has any."""
        ...

    def tokens(self, label: str, start: date, end: date) -> int:
        """`label`'s total tokens from `start` to `end`; 0 when the store cannot be read (a budget lets through)."""
        ...


def each_day(start: date, end: date) -> list[date]:
    return [start + timedelta(days=offset) for offset in range((end - start).days + 1)]


class MemoryStore:
    def __init__(self, retention_days: int):
        self.retention = timedelta(days=retention_days)
        self._days: dict[tuple[str, date], Counter] = {}
        self._newest = date.min
        self._lock = threading.Lock()

    def add(self, label: str, day: date, figures: Mapping[str, int]) -> None:
        with self._lock:
            self._days.setdefault((label, day), Counter()).update(figures)
            if day > self._newest:  # a new day: forget the ones past the retention
                self._newest = day
                for key in [key for key in self._days if key[1] <= day - self.retention]:
                    del self._days[key]

    def days(self, labels: list[str], start: date, end: date) -> dict[str, dict[date, dict[str, int]]]:
        with self._lock:
            return {
                label: {day: dict(self._days[label, day]) for day in each_day(start, end) if (label, day) in self._days}
                for label in labels
            }

    def tokens(self, label: str, start: date, end: date) -> int:
        with self._lock:
            return sum(self._days.get((label, day), {}).get("total_tokens", 0) for day in each_day(start, end))


def make_store(redis_url: str, retention_days: int, verify_tls: bool = True) -> UsageStore:
    if not redis_url:
        return MemoryStore(retention_days)
    from .redis_store import RedisStore  # redis-py loads only where it is used (a tenth of the import)

    return RedisStore(redis_url, retention_days, verify_tls)
