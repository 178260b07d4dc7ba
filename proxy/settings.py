"""Every setting of the relay, read from the environment in this one place.

`Settings.load(environ, overrides)` is called once by `create_app()`; the rest of
the code reads the frozen result through `current_settings()`. Each setting is
documented in the README's configuration table and in `.env.example`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from flask import current_app

OPENAI_URL = "https://api.openai.com"
ANTHROPIC_URL = "https://api.anthropic.com"
GEMINI_URL = "https://generativelanguage.googleapis.com"


class SettingsError(ValueError):
    """A setting has a value the relay cannot use; raised at start-up."""


@dataclass(frozen=True)
class Settings:
    # Upstreams and routes (proxy/)
    upstream_url: str = OPENAI_URL
    anthropic_url: str = ANTHROPIC_URL
    gemini_url: str = GEMINI_URL
    routes: str = ""  # "groq=https://api.groq.com/openai,deepseek=https://api.deepseek.com"
    max_body_bytes: int = 512 * 1024 * 1024
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 600.0
    upstream_pool_size: int = 1000
    upstream_idle_timeout: float = 50.0  # seconds an idle upstream connection is reused (proxy/idle.py); 0: no limit
    sse_heartbeat: float = 15.0
    client_timeout: float = 60.0  # seconds a client may make no progress, reading its body or taking the answer
    client_min_rate: int = 1024  # bytes/s a body must average past its first CLIENT_TIMEOUT seconds
    replay_budget_bytes: int = 64 * 1024 * 1024  # request bodies held in memory for a retry, per worker
    websocket_idle_timeout: float = 600.0  # seconds a WebSocket may carry nothing either way; 0: no limit
    cors_origins: str = "*"
    log_level: str = "INFO"

    # Session chat (sessions/)
    session_store: str = "memory"  # "memory" or a redis:// URL; REDIS_URL / KV_URL select redis
    session_ttl: int = 1800
    session_max_sessions: int = 10000
    session_max_messages: int = 20
    session_max_chars: int = 24000
    session_max_content: int = 4000
    session_model: str = "gpt-4o-mini"
    session_lock_wait: float = 120.0  # seconds a turn waits for the one before it on the same session

    # Access control (access/)
    relay_keys: str = ""
    openai_api_key: str = ""
    anthropic_api_key: str = ""
    gemini_api_key: str = ""
    key_cooldown: float = 60.0
    allow_open_relay: bool = False
    rate_limit: str = ""
    relay_key_failures: str = "20/minute"  # wrong relay keys per client IP before a 429; "off" disables
    trusted_proxies: str = ""
    allowed_paths: str = ""

    # Usage, budgets and metrics (usage/)
    admin_key: str = ""  # reads every key's usage at /pro/usage, and /metrics
    key_budgets: str = ""  # "alice=2000000/month,bob=100000/day", tokens
    count_usage: bool = True  # COUNT_USAGE=0: no usage is read from answers (no /pro/usage figures, no budgets)
    usage_retention_days: int = 400
    metrics: bool = False  # METRICS=1 serves Prometheus metrics at /metrics

    # Shared state: the URL of a Redis server, if any (REDIS_URL, else KV_URL).
    redis_url: str = ""
    redis_tls_verify: bool = True  # REDIS_TLS_VERIFY=0 for Heroku's self-signed rediss:// certificate
    redis_timeout: float = 0.5  # seconds to connect and for each answer; a failure skips Redis for a few seconds

    # Every environment variable, for settings named after a route (`<PREFIX>_API_KEY`).
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> Settings:
        """Build settings from `environ` (upper-case names), then `overrides` (either case)."""
        merged: dict[str, Any] = dict(environ)
        for name, value in (overrides or {}).items():
            merged[name.upper()] = value
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in ("environ", "redis_url"):
                continue
            raw = merged.get(f.name.upper())
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, raw, type(f.default))
        values["redis_url"] = str(merged.get("REDIS_URL") or merged.get("KV_URL") or "")
        if values.get("session_store", "memory") == "memory" and values["redis_url"]:
            values["session_store"] = values["redis_url"]
        values["environ"] = {k: str(v) for k, v in merged.items()}
        _check_seconds(values)
        return cls(**values)

    def get(self, name: str, default: str = "") -> str:
        """An environment value that has no field of its own, such as `GROQ_API_KEY`."""
        return self.environ.get(name, default)


# Every setting in seconds. Waits on the upstream and on Redis need a bound (urllib3 and redis-py refuse 0, and
# no bound would let a silent server hold a connection for ever); for the others 0 means none (no heartbeat,
# no idle limit on upstream connections, no client or WebSocket limit, no rest for a refused key, no wait for a
# busy session), as the README says.
ABOVE_ZERO = ("upstream_connect_timeout", "upstream_read_timeout", "redis_timeout")
ZERO_OR_MORE = (
    "upstream_idle_timeout", "sse_heartbeat", "client_timeout", "websocket_idle_timeout", "key_cooldown",
    "session_lock_wait",
)


def _check_seconds(values: Mapping[str, Any]) -> None:
    """A clear error at start-up for a number of seconds the relay cannot use (negative, infinite, NaN, or 0
    where a bound is needed), instead of a failure on the first request or a library's traceback."""
    for name in ABOVE_ZERO + ZERO_OR_MORE:
        seconds = values.get(name)
        if seconds is None:
            continue
        bounded = name in ABOVE_ZERO
        if not (math.isfinite(seconds) and (seconds > 0 if bounded else seconds >= 0)):
            rule = "above 0" if bounded else "0 or more"
            raise SettingsError(f"{name.upper()}={seconds!r} must be a number of seconds, {rule}")


def _convert(name: str, raw: Any, kind: type) -> Any:
    if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
        return raw
    text = str(raw).strip()
    try:
        if kind is bool:
            return text.lower() in ("1", "true", "yes", "on")
        if kind is int:
            return int(text)
        if kind is float:
            return float(text)
    except ValueError:
        raise SettingsError(f"{name.upper()}={text!r} is not a valid {kind.__name__}") from None
    return text


def current_settings() -> Settings:
    """The settings of the app handling the current request."""
    return current_app.config["SETTINGS"]
