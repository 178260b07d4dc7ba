"""Memory held by the in-memory session store for many stored sessions.

    python -m bench.session_memory [sessions] [messages] [chars]

Fills a `MemoryStore` (the relay's default store, with its real `TTLCache` and
locks) with `sessions` sessions of `messages` messages (user and assistant
alternating, each `chars` ASCII characters, every text distinct), written
through the same lock-and-write path a turn uses. Two figures:

- `tracemalloc_mib`: the Python allocations still alive after the fill
  (tracemalloc, exact and repeatable); the main figure.
- `rss_delta_mib`: the process's resident memory before and after a separate,
  untraced fill (Linux /proc/self/statm), which includes allocator slack.

`content_mib` is the size of the message texts themselves, for comparison.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import tracemalloc

from sessions.history import Session
from sessions.store import MemoryStore

MIB = 1024 * 1024


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _fill(sessions: int, messages: int, chars: int) -> MemoryStore:
    store = MemoryStore(ttl=1800, max_sessions=sessions, lock_wait=1)
    filler = "x" * chars
    for number in range(sessions):
        history = tuple(
            {"role": "user" if index % 2 == 0 else "assistant",
             "content": (f"{number:08d}-{index:03d} " + filler)[:chars]}
            for index in range(messages)
        )
        with store.lock((f"{number:064x}", f"session-{number}")) as held:  # a SHA-256-sized owner, like the relay
            held.write(Session(None, history))
    return store


def measure(sessions: int = 10000, messages: int = 20, chars: int = 200) -> dict:
    """Memory of `sessions` stored sessions of `messages` messages of `chars` characters in the memory store."""
    gc.collect()
    before = _rss()
    started = time.perf_counter()
    store = _fill(sessions, messages, chars)
    fill_seconds = time.perf_counter() - started
    rss_delta = _rss() - before
    assert len(store) == sessions
    del store
    gc.collect()

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    store = _fill(sessions, messages, chars)
    traced = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert len(store) == sessions

    content = sessions * messages * chars
    return {
        "store": "memory",
        "sessions": sessions,
        "messages_per_session": messages,
        "chars_per_message": chars,
        "content_mib": round(content / MIB, 1),
        "tracemalloc_mib": round(traced / MIB, 1),
        "bytes_per_session": round(traced / sessions),
        "overhead_per_session_bytes": round((traced - content) / sessions),
        "rss_delta_mib": round(rss_delta / MIB, 1),
        "fill_seconds": round(fill_seconds, 2),
        "method": "tracemalloc (live Python allocations); RSS delta of an untraced fill",
    }


if __name__ == "__main__":
    args = [int(arg) for arg in sys.argv[1:4]]
    print(json.dumps(measure(*args), indent=2))
