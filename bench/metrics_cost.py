"""What the metrics cost per request: the updates one streamed chat request makes, timed.

    python -m bench.metrics_cost

Run twice, in fresh processes: prometheus-client in one process, and in multiprocess
mode (what gunicorn with several workers uses), where each update writes to a
memory-mapped file in PROMETHEUS_MULTIPROC_DIR.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

ROUNDS = 20000


def one_request() -> None:
    from usage import metrics

    metrics.open_streams.inc()
    metrics.first_byte_seconds.labels("v1").observe(0.2)
    metrics.tokens_total.labels("gpt-4o-mini", "alice", "input_tokens").inc(10)
    metrics.tokens_total.labels("gpt-4o-mini", "alice", "output_tokens").inc(5)
    metrics.open_streams.dec()
    metrics.requests_total.labels("v1", "POST", "200").inc()
    metrics.request_seconds.labels("v1").observe(1.5)


def measure() -> None:
    one_request()
    started = time.perf_counter()
    for _ in range(ROUNDS):
        one_request()
    print(f"{(time.perf_counter() - started) / ROUNDS * 1e6:.1f}")


def main() -> None:
    if sys.argv[1:] == ["--measure"]:
        measure()
        return
    for name, extra in [("one process", {}), ("multiprocess", {"PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp()})]:
        env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"} | extra
        out = subprocess.run([sys.executable, "-m", "bench.metrics_cost", "--measure"], env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        print(f"{name:>13}: {out} µs of metric updates per streamed request")


if __name__ == "__main__":
    main()
