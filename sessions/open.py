"""The one place the session store is chosen: memory, or Redis for a redis:// URL."""

from __future__ import annotations

from urllib.parse import urlsplit

from proxy.settings import Settings, SettingsError

from .store import MemoryStore, SessionStore


def open_store(settings: Settings) -> SessionStore:
    """The store `SESSION_STORE` names; a bad value stops the relay at start-up. Redis is connected lazily."""
    _check(settings)
    target = settings.session_store.strip()
    if target == "memory":
        return MemoryStore(settings.session_ttl, settings.session_max_sessions, settings.session_lock_wait)
    if urlsplit(target).scheme in ("redis", "rediss", "unix"):
        from .redis_store import RedisStore  # redis-py loads only where it is used (a tenth of the import)

        return RedisStore(target, settings.session_ttl, settings.session_lock_wait, settings.redis_tls_verify,
                          settings.redis_timeout)
    raise SettingsError("SESSION_STORE must be 'memory' or a redis:// (rediss://, unix://) URL")


def _check(settings: Settings) -> None:
    for name, value, least in [("SESSION_TTL", settings.session_ttl, 1),
                               ("SESSION_MAX_SESSIONS", settings.session_max_sessions, 1),
                               ("SESSION_MAX_MESSAGES", settings.session_max_messages, 0),
                               ("SESSION_MAX_CHARS", settings.session_max_chars, 0),
                               ("SESSION_MAX_CONTENT", settings.session_max_content, 1)]:
        if value < least:
            raise SettingsError(f"{name}={value} must be at least {least}")
