"""The one way the relay opens a Redis client, for the session store and the rate-limit counters alike."""

from __future__ import annotations

from typing import Any

import redis


def redis_client(url: str, verify_tls: bool = True, **options: Any) -> redis.Redis:
    """A client for `url` (redis://, rediss://, unix://); connects lazily, on first use.

    `verify_tls=False` (`REDIS_TLS_VERIFY=0`) accepts a `rediss://` server's certificate
    unchecked: Heroku's Redis add-on requires TLS but serves a self-signed certificate,
    and sets `REDIS_URL` itself, so the URL cannot carry the option.
    """
    if url.startswith("rediss://") and not verify_tls:
        options["ssl_cert_reqs"] = "none"
    return redis.Redis.from_url(url, **options)
