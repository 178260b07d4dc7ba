"""The quick shutdown (Ctrl-C in a terminal: SIGINT to gunicorn's whole process group), through real gunicorn.

It must end every worker within a second or two, streams still open included (not after the 30 s graceful
timeout), and say so without a traceback (gunicorn.conf.py's RelayWorker).
"""

from __future__ import annotations

import time

from tests.raw_http import open_stream
from tests.relay_server import stop_all
from tests.test_relay_streaming import CHAT, stream_body


def booted(relay, workers: int) -> None:
    """Wait until every worker has loaded the app (each logs its session store), then for its loop to run."""
    assert relay.logged("session store:", times=workers, wait=15), relay.log()
    time.sleep(0.3)


def assert_quiet_exit(relay, workers: int) -> None:
    log = relay.log()
    assert log.count("Worker exiting") == workers, log
    assert "Traceback" not in log and "SystemExit" not in log, log
    assert relay.proc.returncode == 0, log


def test_ctrl_c_ends_idle_workers_without_a_traceback(start_relay):
    """gunicorn's own gevent worker printed a SystemExit traceback per idle worker (8 runs in 8 here)."""
    relays = [start_relay(WEB_CONCURRENCY="2") for _ in range(3)]
    for relay in relays:
        booted(relay, 2)
    began = time.monotonic()
    stop_all(relays)
    assert time.monotonic() - began < 5
    for relay in relays:
        assert_quiet_exit(relay, 2)


def test_ctrl_c_cuts_open_streams_at_once_and_hangs_up_upstream(start_relay, fake):
    relay = start_relay(WEB_CONCURRENCY="2")
    booted(relay, 2)
    tag = "shutdown-open-stream"
    headers = {"x-fake-chunks": "200", "x-fake-delay": "0.05", "x-fake-tag": tag}  # 10 s of events
    sock, _ = open_stream(relay.port, CHAT, stream_body(), headers)
    try:
        began = time.monotonic()
        relay.interrupt()
        sock.settimeout(5)
        while sock.recv(65536):  # the stream goes on until the worker is gone
            pass
        relay.wait_stopped()
        stopped_after = time.monotonic() - began
    finally:
        sock.close()
    assert stopped_after < 3, stopped_after  # not the 30 s graceful timeout
    record = fake.by_tag(tag)
    deadline = time.monotonic() + 5
    while record.client_closed_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert record.client_closed_at is not None and not record.completed
    assert_quiet_exit(relay, 2)
