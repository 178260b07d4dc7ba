"""Where sessions live between turns: the interface and the in-process store (`sessions/open.py` picks one).

A store reads a session without a lock (a session is one value, written whole)
and hands out a `SessionLock` to change one: a turn holds it from reading the
history until its reply is written, upstream call included, so two turns on
one session run one after the other and neither overwrites the other. A turn
waits at most `SESSION_LOCK_WAIT` seconds for the one before it (`SessionBusy`).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from cachetools import TTLCache

from .history import Session

log = logging.getLogger("relay.sessions")

SessionKey = tuple[str, str]  # (SHA-256 of the checked credential, sessionId)


class StoreUnavailable(Exception):
    """The store cannot be reached (Redis down): the call gets a 503, the rest of the relay carries on."""


class SessionBusy(Exception):
    """Another turn on the same session held it for longer than the lock wait."""


class SessionLock(ABC):
    """The right to change one session, until `release()` (also on leaving a `with` block)."""

    @abstractmethod
    def read(self) -> Session | None: ...

    @abstractmethod
    def write(self, session: Session) -> None:
        """Store the session and start its time to live again (expiry slides with each turn)."""

    @abstractmethod
    def delete(self) -> bool:
        """Forget the session; False if there was none."""

    @abstractmethod
    def release(self) -> None:
        """Let the next turn in; calling it again does nothing."""

    def __enter__(self) -> SessionLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class SessionStore(ABC):
    name: str  # for the start-up log line

    @abstractmethod
    def read(self, key: SessionKey) -> Session | None: ...

    @abstractmethod
    def lock(self, key: SessionKey) -> SessionLock:
        """Wait for the session's lock; `SessionBusy` after the lock wait, `StoreUnavailable` if unreachable."""


@dataclass
class _Waiters:
    lock: threading.Lock = field(default_factory=threading.Lock)
    count: int = 0  # turns holding or waiting for `lock`; the entry goes when it drops to 0


class MemoryStore(SessionStore):
    """Sessions in this process: a `TTLCache` of JSON texts, and one lock per session in use.

    `threading` locks are greenlet locks under gunicorn's gevent worker (it patches
    them) and real locks under a threaded worker, so this is safe under both.
    """

    name = "memory"

    def __init__(self, ttl: float, max_sessions: int, lock_wait: float):
        self.lock_wait = lock_wait
        self._sessions: TTLCache[SessionKey, str] = TTLCache(maxsize=max_sessions, ttl=ttl)
        self._guard = threading.Lock()  # TTLCache is not thread-safe; held only for dictionary work
        self._waiters: dict[SessionKey, _Waiters] = {}

    def read(self, key: SessionKey) -> Session | None:
        with self._guard:
            text = self._sessions.get(key)
        return Session.loads(text) if text is not None else None

    def lock(self, key: SessionKey) -> SessionLock:
        with self._guard:
            waiters = self._waiters.setdefault(key, _Waiters())
            waiters.count += 1
        if not waiters.lock.acquire(timeout=self.lock_wait):
            self._leave(key, waiters)
            raise SessionBusy()
        return _MemoryLock(self, key, waiters)

    def _leave(self, key: SessionKey, waiters: _Waiters) -> None:
        with self._guard:
            waiters.count -= 1
            if waiters.count == 0:
                del self._waiters[key]

    def _write(self, key: SessionKey, session: Session) -> None:
        with self._guard:
            self._sessions[key] = session.dumps()  # setting an item again restarts its time to live

    def _delete(self, key: SessionKey) -> bool:
        with self._guard:
            return self._sessions.pop(key, None) is not None

    def __len__(self) -> int:
        with self._guard:
            self._sessions.expire()
            return len(self._sessions)


class _MemoryLock(SessionLock):
    def __init__(self, store: MemoryStore, key: SessionKey, waiters: _Waiters):
        self.store = store
        self.key = key
        self.waiters: _Waiters | None = waiters

    def read(self) -> Session | None:
        return self.store.read(self.key)

    def write(self, session: Session) -> None:
        self.store._write(self.key, session)

    def delete(self) -> bool:
        return self.store._delete(self.key)

    def release(self) -> None:
        waiters, self.waiters = self.waiters, None
        if waiters is not None:
            waiters.lock.release()
            self.store._leave(self.key, waiters)
