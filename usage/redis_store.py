"""Usage kept in Redis (usage/store.py tells the layout): every worker and instance adds to the same figures."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import date

import redis

from proxy.redis_client import OccasionalWarning, redis_client

from .store import StoreUnavailable, each_day

log = logging.getLogger("relay.usage")


class RedisStore:
    def __init__(self, url: str, retention_days: int, verify_tls: bool = True, prefix: str = "relay:usage"):
        options = {"socket_timeout": 2, "socket_connect_timeout": 2, "health_check_interval": 30}
        self._redis = redis_client(url, verify_tls, **options)
        self._prefix = prefix
        self._retention = retention_days
        self._warn = OccasionalWarning(
            log, "usage store (Redis) unreachable, usage is not counted nor budgets checked: %s")

    def _key(self, label: str, day: date) -> str:
        return f"{self._prefix}:{{{label}}}:{day.isoformat()}"  # one hash tag per label: one cluster node

    def add(self, label: str, day: date, figures: Mapping[str, int]) -> None:
        key = self._key(label, day)
        pipe = self._redis.pipeline(transaction=False)
        for name, value in figures.items():
            pipe.hincrby(key, name, value)
        pipe.expire(key, (self._retention + 1) * 86400)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            self._warn(type(exc).__name__)

    def days(self, labels: list[str], start: date, end: date) -> dict[str, dict[date, dict[str, int]]]:
        dates = each_day(start, end)
        pipe = self._redis.pipeline(transaction=False)
        for label in labels:
            for day in dates:
                pipe.hgetall(self._key(label, day))
        try:
            answers = iter(pipe.execute())
        except redis.RedisError as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        found: dict[str, dict[date, dict[str, int]]] = {}
        for label in labels:
            found[label] = {}
            for day in dates:
                fields = next(answers)
                if fields:
                    found[label][day] = {name.decode(): int(value) for name, value in fields.items()}
        return found

    def tokens(self, label: str, start: date, end: date) -> int:
        pipe = self._redis.pipeline(transaction=False)
        for day in each_day(start, end):
            pipe.hget(self._key(label, day), "total_tokens")
        try:
            return sum(int(value or 0) for value in pipe.execute())
        except redis.RedisError as exc:
            self._warn(type(exc).__name__)
            return 0
