"""How many gunicorn workers the relay runs when WEB_CONCURRENCY is not set (gunicorn.conf.py).

With the in-memory stores (sessions, rate limits, usage) one worker holds them all, so one it stays. With
Redis holding the shared state, any worker may take any request: one worker per core the relay may use.
"""

from __future__ import annotations

import os
import runpy
import time
from pathlib import Path

from tests.relay_server import ROOT, RelayServer

CORES = len(os.sched_getaffinity(0))  # the relay's processes inherit this process's CPU affinity


def settled_workers(relay: RelayServer, expected: int) -> int:
    """The relay's worker count once gunicorn has forked them all (bounded wait)."""
    relay.workers_started(expected)
    time.sleep(0.5)  # would a further worker still appear?
    return len(relay.worker_pids())


def test_memory_store_runs_one_worker(start_relay):
    relay = start_relay()
    assert settled_workers(relay, 1) == 1


def test_redis_url_runs_one_worker_per_core(start_relay, redis_server):
    relay = start_relay(REDIS_URL=redis_server.url)
    assert settled_workers(relay, CORES) == CORES


def test_kv_url_runs_one_worker_per_core(start_relay, redis_server):
    relay = start_relay(KV_URL=redis_server.url)
    assert settled_workers(relay, CORES) == CORES


def test_web_concurrency_wins(start_relay, redis_server):
    relay = start_relay(REDIS_URL=redis_server.url, WEB_CONCURRENCY="1")
    assert settled_workers(relay, 1) == 1


def test_redis_session_store_alone_unless_counts_stay_in_memory(start_relay, redis_server):
    shared = start_relay(SESSION_STORE=redis_server.url)
    assert settled_workers(shared, CORES) == CORES
    limited = start_relay(SESSION_STORE=redis_server.url, RATE_LIMIT="60/minute")  # counted per process
    assert settled_workers(limited, 1) == 1


def config(opened: dict[str, str] | None = None) -> dict:
    """gunicorn.conf.py's namespace, with `open` answering the cgroup file from `opened` (path -> text)."""
    def fake_open(path, *args, **kwargs):
        if opened is None or path not in opened:
            raise FileNotFoundError(path)
        return _Text(opened[path])

    return runpy.run_path(str(Path(ROOT) / "gunicorn.conf.py"), init_globals={"open": fake_open})


class _Text:
    def __init__(self, text: str):
        self.text = text

    def __enter__(self) -> _Text:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def read(self) -> str:
        return self.text


def test_cgroup_quota_caps_the_core_count():
    assert config()["_cores"]() == CORES
    assert config({"/sys/fs/cgroup/cpu.max": "max 100000\n"})["_cores"]() == CORES
    assert config({"/sys/fs/cgroup/cpu.max": "50000 100000\n"})["_cores"]() == 1  # half a core: one worker
    assert config({"/sys/fs/cgroup/cpu.max": f"{CORES * 100000 + 1} 100000\n"})["_cores"]() == CORES  # never more


def test_which_settings_share_the_state():
    shared = config()["_state_shared"]
    assert not shared({})
    assert not shared({"SESSION_STORE": "memory"})
    assert shared({"REDIS_URL": "redis://r:6379/0", "RATE_LIMIT": "60/minute"})
    assert shared({"KV_URL": "rediss://kv:6379"})
    assert shared({"SESSION_STORE": "rediss://r:6379/0"})
    assert not shared({"SESSION_STORE": "rediss://r:6379/0", "RELAY_KEYS": "sk-relay-a,sk-relay-b"})  # their usage
    assert not shared({"SESSION_STORE": "redis://r:6379/0", "KEY_BUDGETS": "team=1000000/day"})
    assert not shared({"SESSION_STORE": "redis://r:6379/0", "RELAY_KEYS": "team:sk-relay-a"})  # usage per label
