"""An event stream is read from the upstream no faster than the client takes it: memory per stream stays small.

The fake's `/events/flood` sends 100 MiB of events as fast as it is read; the client here reads
about 1 MB/s. A relay that buffered what the client has not taken yet would grow by tens of MiB
in a few seconds, and its other requests would wait behind the copying.
"""

from __future__ import annotations

import time

import requests

from tests.raw_http import open_stream
from tests.relay_server import rss_kib

READ_FOR = 6.0  # seconds the slow client reads


def test_a_slow_reader_of_a_fast_stream_keeps_the_worker_small(start_relay):
    relay = start_relay(SSE_HEARTBEAT="1")
    [worker] = relay.worker_pids()
    for _ in range(3):  # warm up: the first streams import and allocate what every later one reuses
        sock, _ = open_stream(relay.port, "/v1/events/flood", {"model": "m"}, {"x-fake-size": "1048576"})
        sock.close()
    time.sleep(0.5)
    before = rss_kib(worker)

    sock, _ = open_stream(relay.port, "/v1/events/flood", {"model": "m"}, {})
    received, peak, slowest_health = 0, before, 0.0
    started = time.monotonic()
    try:
        while time.monotonic() - started < READ_FOR:
            for _ in range(5):
                received += len(sock.recv(16384))
                time.sleep(0.02)  # about 800 KB/s
            peak = max(peak, rss_kib(worker))
            asked = time.monotonic()
            assert requests.get(relay.url + "/healthz", timeout=5).status_code == 200
            slowest_health = max(slowest_health, time.monotonic() - asked)
    finally:
        sock.close()
    growth_mib = (peak - before) / 1024
    print(f"\nslow reader: {received / 1e6:.1f} MB read in {READ_FOR:.0f} s; worker RSS {before / 1024:.1f} MiB, "
          f"peak +{growth_mib:.2f} MiB; slowest /healthz {slowest_health * 1000:.0f} ms")
    assert received > 1_000_000  # the stream did flow
    assert growth_mib < 4, f"the worker grew by {growth_mib:.1f} MiB"
    assert slowest_health < 1.0
