"""The worker's allocator under large bodies (gunicorn.conf.py's keep_large_buffers).

glibc maps a block of 128 KiB or more on its own and unmaps it once freed, until it has seen enough such
blocks to adapt: a worker relaying large bodies took fresh pages from the kernel for every buffer (page
faults, and the kernel zeroing each page). With the hook, a worker that has relayed one large upload
relays the next ones in the memory it already holds.
"""

from __future__ import annotations

import hashlib
import json
import os

import requests

from tests.relay_server import minor_faults, run_python

BODY = 64 * 1024 * 1024
UPLOADS = 3
# Pages a worker may fault in over UPLOADS uploads after the first: 16 MiB. Here, without the hook, 32,000 to
# 56,000 over three uploads of 64 MiB (glibc adapts after a varying number of them); with it, 300 to 900.
FAULT_LIMIT = 4096


def upload(url: str, body: bytes) -> None:
    answer = requests.post(url + "/v1/upload", data=body, timeout=60)
    assert answer.json() == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_large_uploads_reuse_the_workers_memory(start_relay):
    relay = start_relay()
    [worker] = relay.worker_pids()
    body = os.urandom(BODY)
    upload(relay.url, body)  # the first one grows the heap to what a large body takes
    before = minor_faults(worker)
    for _ in range(UPLOADS):
        upload(relay.url, body)
    faulted = minor_faults(worker) - before
    assert faulted < FAULT_LIMIT, f"the worker faulted in {faulted} pages over {UPLOADS} uploads of 64 MiB"


def run_hook(env: dict[str, str]) -> bool:
    out = run_python(f"""
        import runpy
        hooks = runpy.run_path("gunicorn.conf.py")
        print(hooks["keep_large_buffers"]({env!r}))
    """)
    return json.loads(out.stdout.strip().lower())


def test_glibc_takes_the_settings_unless_the_owner_gave_their_own():
    assert run_hook({}) is True  # mallopt accepted both
    assert run_hook({"MALLOC_ARENA_MAX": "2"}) is True  # another setting of the owner's: no conflict
    assert run_hook({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=262144"}) is False
    assert run_hook({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"}) is False
    assert run_hook({"MALLOC_TRIM_THRESHOLD_": "1048576"}) is False
