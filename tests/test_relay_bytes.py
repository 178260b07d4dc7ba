"""Bodies cross the relay byte for byte: compressed answers, large uploads, large downloads."""

from __future__ import annotations

import gzip
import hashlib
import json
import os

import requests

from tests.fake_upstream import pattern_bytes


def test_gzip_answer_passes_compressed_and_identical(relay, fake):
    headers = {"x-fake-gzip": "1", "Accept-Encoding": "gzip", "Authorization": "Bearer sk-gz"}
    direct = requests.get(fake.url + "/v1/models", headers=headers, stream=True, timeout=10)
    relayed = requests.get(relay.url + "/v1/models", headers=headers, stream=True, timeout=10)
    direct_bytes = direct.raw.read(decode_content=False)
    relayed_bytes = relayed.raw.read(decode_content=False)
    assert relayed.headers["Content-Encoding"] == "gzip"
    assert relayed_bytes == direct_bytes
    assert int(relayed.headers["Content-Length"]) == len(direct_bytes)
    assert json.loads(gzip.decompress(relayed_bytes))["object"] == "list"


def test_50_mb_upload_with_content_length(relay, fake):
    body = os.urandom(50 * 1024 * 1024)
    response = requests.post(relay.url + "/v1/upload", data=body, headers={"x-fake-tag": "up-len"}, timeout=60)
    assert response.status_code == 200
    assert response.json() == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    assert fake.by_tag("up-len").header("content-length") == str(len(body))


def test_50_mb_chunked_upload_is_streamed_on(relay, fake):
    block = os.urandom(1024 * 1024)
    digest = hashlib.sha256(block * 50).hexdigest()

    def blocks():
        for _ in range(50):
            yield block

    response = requests.post(relay.url + "/v1/upload", data=blocks(), headers={"x-fake-tag": "up-chunked"}, timeout=60)
    assert response.status_code == 200
    assert response.json() == {"bytes": 50 * len(block), "sha256": digest}
    sent = fake.by_tag("up-chunked")
    assert sent.header("transfer-encoding") == "chunked"
    assert sent.header("content-length") is None


def test_200_mb_download(relay):
    size = 200 * 1024 * 1024
    digest = hashlib.sha256()
    received = 0
    with requests.get(relay.url + "/v1/download", params={"size": size}, stream=True, timeout=60) as response:
        assert response.headers["Content-Length"] == str(size)
        for piece in response.iter_content(1024 * 1024):
            digest.update(piece)
            received += len(piece)
    assert received == size
    assert digest.hexdigest() == hashlib.sha256(pattern_bytes(size)).hexdigest()


def test_binary_answer_content_type_and_length_kept(relay):
    response = requests.post(relay.url + "/v1/audio/speech", json={"input": "x"}, headers={"x-fake-size": "12345"})
    assert response.headers["Content-Type"] == "audio/mpeg"
    assert response.headers["Content-Length"] == "12345"
    assert response.content == pattern_bytes(12345)


def test_compressed_request_body_passes_as_sent(relay, fake):
    body = gzip.compress(json.dumps({"input": "x" * 10000}).encode())
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json", "x-fake-tag": "gz-up"}
    requests.post(relay.url + "/v1/echo", data=body, headers=headers, timeout=10)
    sent = fake.by_tag("gz-up")
    assert sent.header("content-encoding") == "gzip"
    assert sent.body == body
