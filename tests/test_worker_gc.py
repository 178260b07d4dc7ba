"""The worker's cycle collector (gunicorn.conf.py's post_worker_init): rarer, but still collecting.

A young-generation collection walks every object made since the last one: in a busy worker, the live
objects of every request in flight. The hook freezes the app's own objects and lets the young generation
grow tenfold, so the collector's cost no longer grows with concurrency (measured in bench/, not here).
What a test can hold it to: the hook is run in the worker, and garbage in reference cycles (every 404 leaves
some: Werkzeug's NotFound and its traceback) is still collected, so a busy worker does not grow.
"""

from __future__ import annotations

import json

import requests

from tests.relay_server import rss_kib, run_python

REQUESTS = 4000
GROWTH_LIMIT_KIB = 12 * 1024  # with the collector off, 4,000 404s hold 56 MiB of cycles here; with it, 0.2


def test_post_worker_init_freezes_the_app_and_raises_the_young_threshold():
    out = run_python("""
        import gc, json, runpy
        hooks = runpy.run_path("gunicorn.conf.py")
        before = gc.get_threshold()
        hooks["post_worker_init"](None)
        print(json.dumps([gc.get_freeze_count(), before, gc.get_threshold(), gc.isenabled()]))
    """)
    frozen, before, after, enabled = json.loads(out.stdout)
    assert frozen > 1000, out  # the modules imported so far (gunicorn's config, runpy, json...) and their objects
    assert after[0] >= 10 * before[0] and list(after[1:]) == list(before[1:])
    assert enabled


def ask_for_unknown_routes(session: requests.Session, url: str, count: int) -> None:
    for index in range(count):
        answer = session.get(f"{url}/no-such-route-{index}", timeout=10)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "unknown_route"


def test_cyclic_garbage_is_still_collected_under_load(relay):
    [worker] = relay.worker_pids()
    with requests.Session() as session:
        ask_for_unknown_routes(session, relay.url, 500)  # warm up: what the first requests allocate for good
        before = rss_kib(worker)
        ask_for_unknown_routes(session, relay.url, REQUESTS)
        grown = rss_kib(worker) - before
    assert grown < GROWTH_LIMIT_KIB, f"the worker grew by {grown} KiB over {REQUESTS} 404s"
