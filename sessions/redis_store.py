"""Sessions in Redis, shared by every worker and instance of the relay.

A session is one key holding its JSON text, with the session's time to live
(`SET ... PX`, restarted by each turn). Its lock is a second key, taken with
redis-py's `Lock` (`SET NX PX` with a random token, released by a Lua
compare-and-delete). The lock's lease is short (a crashed process frees it
within `LEASE` seconds) and renewed while the turn runs, however long its
answer takes; the history is only written by a Lua script that first checks the
lock still holds this turn's token, so a turn that lost its lease can never
overwrite another's.

The client connects on first use, so the relay starts and relays while Redis
is down; each call then fails fast with a 503: short timeouts (`REDIS_TIMEOUT`),
and the breaker the rate-limit counters share (proxy/redis_client.py) skips a
Redis that just failed, so even a Redis that never answers costs a turn at most
one timeout.
"""

from __future__ import annotations

import logging
import threading

import redis
from redis.exceptions import LockError, LockNotOwnedError
from redis.lock import Lock

from proxy.redis_client import redis_link

from .history import Session
from .store import SessionBusy, SessionKey, SessionLock, SessionStore, StoreUnavailable

log = logging.getLogger("relay.sessions")

LEASE = 30.0  # seconds a lock outlives a process that died holding it
RENEW_EVERY = LEASE / 3
POLL = 0.05  # seconds between attempts while waiting for a lock

WRITE_IF_HELD = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('set', KEYS[2], ARGV[2], 'PX', ARGV[3])
return 1
"""

DELETE_IF_HELD = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
return 1 + redis.call('del', KEYS[2])
"""


def session_key(key: SessionKey) -> str:
    owner, session_id = key
    return f"relay:session:{{{owner}:{session_id}}}"  # {...}: the session and its lock share a cluster slot


class RedisStore(SessionStore):
    def __init__(self, url: str, ttl: float, lock_wait: float, verify_tls: bool = True, timeout: float = 0.5):
        self.ttl_ms = int(ttl * 1000)
        self.lock_wait = lock_wait
        self.link = redis_link(url, verify_tls, timeout)
        self.name = f"redis at {self.link.name}"  # never the password
        self.client = self.link.client
        self._write = self.client.register_script(WRITE_IF_HELD)
        self._delete = self.client.register_script(DELETE_IF_HELD)

    def read(self, key: SessionKey) -> Session | None:
        try:
            text = self.link.run(self.client.get, session_key(key))
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        return _parse(text)

    def lock(self, key: SessionKey) -> SessionLock:
        name = session_key(key) + ":lock"
        lock = Lock(self.client, name, timeout=LEASE, sleep=POLL, blocking_timeout=self.lock_wait,
                    thread_local=False)
        try:
            acquired = self.link.run(lock.acquire)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        if not acquired:
            raise SessionBusy()
        return _RedisLock(self, key, lock)


class _RedisLock(SessionLock):
    def __init__(self, store: RedisStore, key: SessionKey, lock: Lock):
        self.store = store
        self.key = session_key(key)
        self.lock = lock
        self.token = lock.local.token
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="session-lock-renewer", daemon=True)
        self._renewer.start()
        self._released = False

    def read(self) -> Session | None:
        try:
            text = self.store.link.run(self.store.client.get, self.key)
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        return _parse(text)

    def write(self, session: Session) -> None:
        try:
            held = self.store.link.run(self.store._write, keys=[self.lock.name, self.key],
                                       args=[self.token, session.dumps(), self.store.ttl_ms])
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        if not held:
            raise StoreUnavailable("the session's lock expired before the turn could be recorded")

    def delete(self) -> bool:
        try:
            result = self.store.link.run(self.store._delete, keys=[self.lock.name, self.key], args=[self.token])
        except redis.RedisError as exc:
            raise _unavailable(exc) from exc
        if not result:
            raise StoreUnavailable("the session's lock expired before the session could be deleted")
        return result == 2

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._stop.set()
        try:
            self.store.link.run(self.lock.release)
        except LockNotOwnedError:
            log.warning("a session lock had expired before its turn ended")
        except redis.RedisError as exc:  # the lease frees it shortly
            log.warning("could not release a session lock: %s", type(exc).__name__)

    def _renew(self) -> None:
        """Keep the lease alive while the turn runs (bounded: stops on release or once the lock is lost)."""
        while not self._stop.wait(RENEW_EVERY):
            try:
                self.store.link.run(self.lock.reacquire)
            except LockError:  # lost, or released meanwhile
                return
            except redis.RedisError:
                continue  # a short outage: the lease still has two periods to go


def _parse(text: bytes | None) -> Session | None:
    if text is None:
        return None
    try:
        return Session.loads(text)
    except (ValueError, AttributeError, TypeError):
        log.warning("ignored a session value that is not a session")
        return None


def _unavailable(exc: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"Redis: {type(exc).__name__}")
