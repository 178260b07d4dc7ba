"""The one way the relay talks to Redis, for the session store and the rate-limit counters alike.

Redis helps the relay; it must never hold it up. A Redis that accepts connections
but never answers would otherwise cost every request its timeouts, so:
- each connection and each answer waits at most `REDIS_TIMEOUT` seconds (0.5 by
  default), with one immediate retry for a pooled connection the server had closed,
  none for a timeout;
- a failure opens a circuit breaker shared by everything that uses that server in
  the process: for `SKIP_FOR` seconds every call fails at once (`RedisSkipped`),
  then a single PING decides, while the other calls go on skipping, whether Redis
  is back. Rate limits then let requests through, sessions answer 503.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

log = logging.getLogger("relay.redis")

SKIP_FOR = 3.0  # seconds Redis is skipped after a failure
WARN_EVERY = 60.0  # seconds between two warnings about the same server
FAILURES = (redis.ConnectionError, redis.TimeoutError)  # Redis did not answer; any other error is an answer

T = TypeVar("T")


class OccasionalWarning:
    """A warning logged at most once per WARN_EVERY seconds: a Redis that is down fails every request, and one
    line a minute says so as well as thousands."""

    def __init__(self, logger: logging.Logger, message: str, clock: Callable[[], float] = time.monotonic):
        self._logger, self._message, self._clock = logger, message, clock
        self._at = -WARN_EVERY

    def __call__(self, *args: Any) -> None:
        now = self._clock()
        if now - self._at >= WARN_EVERY:
            self._at = now
            self._logger.warning(self._message, *args)


class RedisSkipped(redis.ConnectionError):
    """Redis failed a moment ago and is skipped for now: the call was not even tried."""


def redis_client(url: str, verify_tls: bool = True, **options: Any) -> redis.Redis:
    """A client for `url` (redis://, rediss://, unix://); connects lazily, on first use.

    `verify_tls=False` (`REDIS_TLS_VERIFY=0`) accepts a `rediss://` server's certificate
    unchecked: Heroku's Redis add-on requires TLS but serves a self-signed certificate,
    and sets `REDIS_URL` itself, so the URL cannot carry the option.
    """
    if url.startswith("rediss://") and not verify_tls:
        options["ssl_cert_reqs"] = "none"
    return redis.Redis.from_url(url, **options)


class RedisLink:
    """One Redis server as this process uses it: one client with short timeouts, behind one breaker."""

    def __init__(self, url: str, verify_tls: bool = True, timeout: float = 0.5,
                 clock: Callable[[], float] = time.monotonic):
        parts = urlsplit(url)
        self.name = f"{parts.hostname or parts.path}:{parts.port or 6379}"  # never the password
        self.client = redis_client(
            url, verify_tls, socket_connect_timeout=timeout, socket_timeout=timeout, health_check_interval=30,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        )
        self._clock = clock
        self._skip_until = 0.0  # 0: closed, Redis is used
        self._probing = threading.Lock()
        self._warn = OccasionalWarning(log, "Redis at %s did not answer (%s): skipped for %g s at a time until it "
                                       "does (rate limits let requests through, sessions answer 503)", clock)

    def run(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`call(*args, **kwargs)`, unless Redis is skipped (`RedisSkipped`); a failure starts a skip."""
        if self._skip_until and not self._back():
            raise RedisSkipped(f"Redis at {self.name} is skipped for now")
        try:
            return call(*args, **kwargs)
        except FAILURES as exc:
            self._trip(exc)
            raise

    @property
    def skipped(self) -> bool:
        return bool(self._skip_until)

    def _back(self) -> bool:
        """Whether Redis answers again: once the skip is over, one caller PINGs it while the others keep skipping."""
        if self._clock() < self._skip_until or not self._probing.acquire(blocking=False):
            return False
        try:
            self.client.ping()
        except redis.RedisError as exc:
            self._trip(exc)
            return False
        finally:
            self._probing.release()
        self._skip_until = 0.0
        log.info("Redis at %s answers again", self.name)
        return True

    def _trip(self, exc: Exception) -> None:
        self._skip_until = self._clock() + SKIP_FOR
        self._warn(self.name, type(exc).__name__, SKIP_FOR)


@functools.cache
def redis_link(url: str, verify_tls: bool = True, timeout: float = 0.5) -> RedisLink:
    """The process's one link to the server at `url`: the counters and the session store share its breaker."""
    return RedisLink(url, verify_tls, timeout)
