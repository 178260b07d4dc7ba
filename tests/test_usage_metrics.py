"""/metrics through the real relay under two gunicorn workers, parsed with prometheus-client's own parser."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import time

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from tests.access_secrets import make_key
from tests.test_usage import CHAT, wait_for

UPSTREAM_ONE, UPSTREAM_TWO = make_key("up-metrics-one"), make_key("up-metrics-two")
ADMIN = make_key("metrics-admin", "adm")
KEY = make_key("metrics-key", "rk")
LIMITED = make_key("metrics-limited", "rk")
SECRET_PATH = "private-path-part-7f3a"
_tags = itertools.count()


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("metrics")
    (path / "counter_1.db").write_bytes(b"stale")  # a previous run's file: removed at start-up
    return path


@pytest.fixture(scope="module")
def measured(start_relay, fake, metrics_dir):
    return start_relay(
        WEB_CONCURRENCY="2",
        METRICS="1",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        ADMIN_KEY=ADMIN,
        RELAY_KEYS=f"team:{KEY},limited:{LIMITED}",
        OPENAI_API_KEY=f"{UPSTREAM_ONE},{UPSTREAM_TWO}",
        KEY_COOLDOWN="600",
        RATE_LIMIT="60/hour",
        ROUTES="dead=http://127.0.0.1:9",
        DEAD_API_KEY="sk-dead",
        KEY_BUDGETS="team=1000000/day",
    )


def scrape(relay) -> dict[tuple[str, tuple], float]:
    r = requests.get(relay.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    for secret in (KEY, LIMITED, ADMIN, UPSTREAM_ONE, UPSTREAM_TWO, SECRET_PATH, "echo: hi"):
        assert secret not in r.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(r.text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return sum(v for (n, items), v in samples.items() if n == name and set(labels.items()) <= set(items))


def send(relay, path: str = "/v1/chat/completions", key: str = KEY, **headers: str) -> requests.Response:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}} if "stream" in headers else CHAT
    headers.pop("stream", None)
    return requests.post(
        relay.url + path,
        json=body,
        timeout=20,
        headers={
            "Authorization": f"Bearer {key}",
            "Connection": "close",
            "x-fake-tag": f"metrics-{next(_tags)}",
            **headers,
        },
    )


def test_metrics_need_the_admin_key(measured):
    for headers in ({}, {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Bearer {ADMIN}x"}):
        r = requests.get(measured.url + "/metrics", headers=headers, timeout=10)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_key"


def served_chat(db_file) -> bool:
    """Whether the worker that writes `db_file` has counted a relayed chat completion (its own mmap file)."""
    if not db_file.exists():
        return False
    return any('"relay_requests_total"' in key and '"v1"' in key and '"POST"' in key and count > 0
               for key, count, *_ in MmapedDict.read_all_values_from_file(str(db_file)))


def test_metrics_add_up_both_workers(measured, fake, metrics_dir):
    workers = measured.worker_pids()
    assert len(workers) == 2 and not (metrics_dir / "counter_1.db").exists()
    before = scrape(measured)
    answers = 0
    for busy, serving in (workers, workers[::-1]):  # each worker in turn serves 5 while the other is stopped
        os.kill(busy, signal.SIGSTOP)
        try:
            assert all(send(measured).status_code == 200 for _ in range(5))
        finally:
            os.kill(busy, signal.SIGCONT)
        answers += 5
        assert served_chat(metrics_dir / f"counter_{serving}.db")
    for _ in range(4):
        r = send(measured, stream="1")
        assert r.status_code == 200 and b"[DONE]" in r.content
    answers += 4
    assert send(measured, f"/v1/{SECRET_PATH}/x").status_code == 200  # echoed by the fake
    after = wait_for(
        lambda: (
            (s := scrape(measured))
            and value(s, "relay_requests_total", route="v1", method="POST")
            - value(before, "relay_requests_total", route="v1", method="POST")
            >= answers + 1
            and s
        )
    )
    grew = [
        value(after, name, **labels) - value(before, name, **labels)
        for name, labels in [
            ("relay_requests_total", {"route": "v1", "method": "POST", "status": "200"}),
            ("relay_tokens_total", {"model": "gpt-4o-mini", "key": "team", "kind": "input_tokens"}),
            ("relay_tokens_total", {"model": "gpt-4o-mini", "key": "team", "kind": "output_tokens"}),
            ("relay_tokens_total", {"model": "gpt-4o-mini", "key": "team", "kind": "cached_tokens"}),
            ("relay_request_duration_seconds_count", {"route": "v1"}),
            ("relay_stream_first_byte_seconds_count", {"route": "v1"}),
        ]
    ]
    # Each answer with usage: 10 in, 5 out, 2 cached; the echo has none. Both workers' files are added up.
    assert grew == [answers + 1, 10 * answers, 5 * answers, 2 * answers, answers + 1, 4]


def test_open_streams_gauge_and_upstream_errors_by_kind(measured, fake):
    body = json.dumps({**CHAT, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", measured.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\nx-fake-chunks: 100\r\nx-fake-delay: 0.05\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert wait_for(lambda: value(scrape(measured), "relay_open_streams") == 1)
    assert wait_for(lambda: value(scrape(measured), "relay_open_streams") == 0)

    before = scrape(measured)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        _ = send(measured, stream="1", **{"x-fake-drop-after": "2"}).content
    assert send(measured, "/dead/v1/models").status_code == 502
    fake.refuse_key(UPSTREAM_ONE, 429)
    try:
        for _ in range(2):
            assert send(measured).status_code == 200  # the refused key rests, the other one serves
    finally:
        fake.refuse_key(UPSTREAM_ONE, None)
    for _ in range(125):  # counted per worker without Redis: until one refuses
        if (
            requests.get(
                measured.url + "/v1/models", headers={"Authorization": f"Bearer {LIMITED}"}, timeout=10
            ).status_code
            == 429
        ):
            break
    time.sleep(0.3)
    after = scrape(measured)
    for name, labels, grown in [
        ("relay_upstream_errors_total", {"route": "v1", "kind": "broke_off"}, 1),
        ("relay_upstream_errors_total", {"route": "dead", "kind": "unreachable"}, 1),
        ("relay_refusals_total", {"reason": "rate_limit"}, 1),
    ]:
        assert value(after, name, **labels) - value(before, name, **labels) == grown, name
    assert value(after, "relay_key_rests_total", route="openai") - value(before, "relay_key_rests_total") >= 1
