"""Every key value the access tests use, made here so that the log scan can look for each one.

Keys are random per test session and made when the test modules are imported, so
the registry is complete before any test runs, whatever the order (each pytest-xdist
worker imports every module, so each has the whole registry).
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

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


# Shapes of keys and of the places they travel in, whoever's test sent them.
KEY_SHAPES = {
    "a bearer token": re.compile(r"Bearer\s+\S"),
    "a key in a query": re.compile(r"[?&](?:key|apiKey|api_key)=[^&\s]"),
    "an sk- key": re.compile(r"\bsk-(?:ant-|proj-|admin-)?[A-Za-z0-9_-]{4,}"),
}


def assert_no_key_in_logs(logs_dir: Path) -> None:
    """No relay log in `logs_dir` holds a key the tests used (or its prefix), or anything shaped like a key."""
    for path in sorted(logs_dir.glob("*.log")):
        text = path.read_text(errors="replace")
        for index, key in enumerate(USED):
            for telltale in telltales(key):
                assert telltale not in text, f"{path.name} holds access_secrets key #{index} (or its prefix)"
        for shape, pattern in KEY_SHAPES.items():
            found = pattern.search(text)
            assert found is None, f"{path.name} holds {shape} at offset {found.start() if found else 0}"
