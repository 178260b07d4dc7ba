"""Every key value the access tests use, made here so that the log scan can look for each one.

Keys are random per test session and made when the test modules are imported, so
the registry is complete before any test runs, whatever the order.
"""

from __future__ import annotations

import secrets

USED: list[str] = []
RANDOM_PART = 16  # hex characters after the key's readable part


def make_key(label: str, prefix: str = "sk") -> str:
    """A fresh key such as `sk-up-openai-3f9a...`, registered for the log scan."""
    key = f"{prefix}-{label}-{secrets.token_hex(RANDOM_PART // 2)}"
    USED.append(key)
    return key


def telltales(key: str) -> list[str]:
    """What must never appear in a log for `key`: the key, and its readable part with the first random bytes."""
    return [key, key[: len(key) - RANDOM_PART + 8]]
