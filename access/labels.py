"""Names for relay keys: `RELAY_KEYS=alice:rk-...,bob:rk-...`, shown in usage and metrics instead of the keys.

An entry is `label:key` or a plain `key`. The first `:` separates the label, so a
key that itself contains `:` must be given with a label (`me:rk:with:colons`).
A key without a label is named by the first 8 hex characters of its SHA-256,
which tells nothing about the key. Several keys may share one label (a user's old
and new key while rotating); their figures and budgets are then one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from proxy.settings import SettingsError

from .keys import KEY_SHAPE

LABEL_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class LabelledKey:
    label: str
    key: str


def unlabelled_name(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def parse_relay_keys(value: str) -> list[LabelledKey]:
    """`"alice:rk-a,rk-b"` -> keys with their labels; a malformed entry stops the start-up (never echoing a key)."""
    found = []
    for position, entry in enumerate((item.strip() for item in value.split(",")), start=1):
        if not entry:
            continue
        label, colon, key = entry.partition(":")
        if not colon:
            label, key = unlabelled_name(entry), entry
        elif not LABEL_SHAPE.fullmatch(label):
            raise SettingsError(
                f"RELAY_KEYS entry {position}: the text before ':' must be a label of letters, digits, '_', '.' "
                "or '-' (at most 64); a key that contains ':' needs a label in front of it (label:key)"
            )
        if not KEY_SHAPE.fullmatch(key):
            raise SettingsError(f"RELAY_KEYS entry {position} ({label}): a key is 1 to 512 visible ASCII characters")
        found.append(LabelledKey(label, key))
    return found
