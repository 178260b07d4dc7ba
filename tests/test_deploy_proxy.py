"""The relay behind an outbound proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), as on a VPS behind a firewall.

A small forward proxy on 127.0.0.1 records what passes through it: `CONNECT`
tunnels (how HTTPS upstreams such as api.openai.com are reached) and
absolute-form requests (plain-HTTP upstreams). For the HTTPS case, the fake
upstream sits behind a TLS front with a throwaway certificate for `localhost`,
which the relay trusts through `REQUESTS_CA_BUNDLE`.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from openai import OpenAI

from tests.fake_upstream import pattern_bytes
from tests.raw_http import raw_get, split_answer
from tests.relay_server import free_port

LOOPBACK = ("127.0.0.1", "localhost")
TIMEOUT = 30  # seconds any socket here may wait: every loop ends


def pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes until `source` ends, then end `sink` too."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def start_pumps(a: socket.socket, b: socket.socket) -> None:
    for source, sink in ((a, b), (b, a)):
        threading.Thread(target=pump, args=(source, sink), daemon=True).start()


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, what came after it) of an HTTP message."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk or len(data) > 65536:
            raise ConnectionError("no complete HTTP head")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


@dataclass
class Seen:
    method: str
    target: str
    headers: dict[str, str]


@dataclass
class ForwardProxy:
    """A forward proxy for loopback targets only, recording each request line it is asked to carry."""

    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    def start(self) -> ForwardProxy:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials + '@' if credentials else ''}127.0.0.1:{self.port}"

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._server.accept()
                client.settimeout(TIMEOUT)
                threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        try:
            head, rest = read_head(client)
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            self.seen.append(Seen(method, target, headers))
            if method == "CONNECT":
                self._tunnel(client, target, rest)
            else:
                self._forward(client, method, target, version, lines[1:], rest)
        except (OSError, ValueError):
            client.close()

    def _tunnel(self, client: socket.socket, target: str, rest: bytes) -> None:
        host, _, port = target.rpartition(":")
        if host not in LOOPBACK:
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", int(port)), timeout=TIMEOUT)
        client.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        if rest:
            upstream.sendall(rest)
        start_pumps(client, upstream)

    def _forward(self, client: socket.socket, method: str, target: str, version: str, lines: list[str],
                 rest: bytes) -> None:
        """One absolute-form request per connection: `Connection: close` both ways keeps it that simple."""
        url = urlsplit(target)
        if url.hostname not in LOOPBACK:
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", url.port), timeout=TIMEOUT)
        kept = [line for line in lines if line and not line.lower().startswith(("proxy-", "connection:"))]
        origin_form = url.path + (f"?{url.query}" if url.query else "")
        request_head = "\r\n".join([f"{method} {origin_form} {version}", *kept, "Connection: close"])
        upstream.sendall(request_head.encode("latin-1") + b"\r\n\r\n" + rest)
        threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
        head, body_start = read_head(upstream)
        response_lines = [line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
        client.sendall(b"\r\n".join([*response_lines, b"Connection: close"]) + b"\r\n\r\n" + body_start)
        pump(upstream, client)
        client.close()
        upstream.close()

    def stop(self) -> None:
        self._server.close()


@dataclass
class TLSFront:
    """TLS on a loopback port for `localhost`, passing the plain bytes on to the fake upstream."""

    certfile: Path
    keyfile: Path
    target_port: int
    port: int = 0

    def start(self) -> TLSFront:
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(self.certfile, self.keyfile)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                raw, _ = self._server.accept()
                raw.settimeout(TIMEOUT)
                threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        try:
            tls = self._context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):  # e.g. a client that does not trust the certificate
            raw.close()
            return
        start_pumps(tls, socket.create_connection(("127.0.0.1", self.target_port), timeout=TIMEOUT))

    def stop(self) -> None:
        self._server.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "localhost.pem", folder / "localhost.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


@pytest.fixture(scope="module")
def tls_upstream(certificate, fake) -> Iterator[TLSFront]:
    front = TLSFront(*certificate, target_port=fake.port).start()
    yield front
    front.stop()


@pytest.fixture
def proxy() -> Iterator[ForwardProxy]:
    server = ForwardProxy().start()
    yield server
    server.stop()


def https_relay(start_relay, tls_upstream, certificate, **env):
    """A relay whose OpenAI upstream is https://localhost:<port>, trusting the throwaway certificate."""
    return start_relay(UPSTREAM_URL=f"https://localhost:{tls_upstream.port}", REQUESTS_CA_BUNDLE=str(certificate[0]),
                       NO_PROXY="", no_proxy="", **env)


def chat(relay_url: str, key: str, stream: bool = False) -> str:
    messages = [{"role": "user", "content": "through the proxy"}]
    with OpenAI(base_url=relay_url + "/v1", api_key=key, max_retries=0, timeout=TIMEOUT) as client:
        if not stream:
            return client.chat.completions.create(model="gpt-4o-mini", messages=messages).choices[0].message.content
        parts = client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True,
                                               extra_headers={"x-fake-chunks": "6"})
        return "".join(chunk.choices[0].delta.content or "" for chunk in parts if chunk.choices)


def test_https_upstream_is_reached_through_the_proxy_tunnel(start_relay, tls_upstream, certificate, proxy, fake):
    relay = https_relay(start_relay, tls_upstream, certificate, HTTPS_PROXY=proxy.url("relay:proxy-secret"))
    assert chat(relay.url, "sk-via-connect") == "echo: through the proxy"
    assert chat(relay.url, "sk-via-connect", stream=True) == "echo: through the proxy"
    download = requests.get(relay.url + "/v1/download", headers={"x-fake-size": str(3 << 20)}, timeout=TIMEOUT)
    assert download.status_code == 200
    assert hashlib.sha256(download.content).digest() == hashlib.sha256(pattern_bytes(3 << 20)).digest()

    tunnels = [s for s in proxy.seen if s.method == "CONNECT"]
    assert tunnels and {s.target for s in tunnels} == {f"localhost:{tls_upstream.port}"}
    assert len(tunnels) == len(proxy.seen)  # nothing was sent in clear
    expected = "Basic " + base64.b64encode(b"relay:proxy-secret").decode()
    assert all(s.headers.get("Proxy-Authorization") == expected for s in tunnels)
    # Inside the tunnel the upstream got the client's request as sent.
    sent = [r for r in fake.find("/v1/chat/completions") if r.header("authorization") == "Bearer sk-via-connect"]
    assert len(sent) == 2 and all(r.header("proxy-authorization") is None for r in sent)


def test_an_idle_tls_connection_is_opened_again_through_a_new_tunnel(start_relay, tls_upstream, certificate, proxy):
    """Past `UPSTREAM_IDLE_TIMEOUT` the pooled TLS connection is closed, and the next request goes through a new
    CONNECT tunnel and TLS handshake (urllib3's path for a dropped connection), not on the old one."""
    relay = https_relay(start_relay, tls_upstream, certificate, HTTPS_PROXY=proxy.url(), UPSTREAM_IDLE_TIMEOUT="1")

    def models() -> int:
        answer = requests.get(relay.url + "/v1/models", headers={"Authorization": "Bearer sk-idle"}, timeout=TIMEOUT)
        return answer.status_code

    assert [models(), models()] == [200, 200]
    assert len(proxy.seen) == 1  # one tunnel, kept
    time.sleep(1.5)
    assert models() == 200
    assert [s.method for s in proxy.seen] == ["CONNECT", "CONNECT"]


def test_the_target_reaches_an_https_upstream_through_the_tunnel_byte_for_byte(start_relay, tls_upstream,
                                                                              certificate, proxy):
    """urllib3's HTTPS connection, inside a CONNECT tunnel, sends the client's target as it came (raw socket in)."""
    relay = https_relay(start_relay, tls_upstream, certificate, HTTPS_PROXY=proxy.url())
    target = "/v1/echo/a%2fb%zz?after=file%2dabc&r=<|>"
    status, _, body = split_answer(raw_get(relay.port, target))
    assert status == 200, body[:300]
    assert json.loads(body)["target"] == target
    assert [s.method for s in proxy.seen] == ["CONNECT"]


def test_http_upstream_is_reached_through_the_proxy(start_relay, proxy, fake):
    relay = start_relay(HTTP_PROXY=proxy.url(), NO_PROXY="", no_proxy="")
    assert chat(relay.url, "sk-via-forward") == "echo: through the proxy"
    started = time.monotonic()
    arrivals = []
    with requests.post(relay.url + "/v1/chat/completions", stream=True, timeout=TIMEOUT,
                       headers={"Authorization": "Bearer sk-via-forward", "x-fake-chunks": "5", "x-fake-delay": "0.2"},
                       json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "abcde"}]}) as r:
        for line in r.iter_lines():
            if line.startswith(b"data: {"):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 5 and arrivals[-1] - arrivals[0] >= 0.5  # streamed through, not buffered
    forwarded = [s for s in proxy.seen if s.method == "POST"]
    assert [s.target for s in forwarded] == [f"{fake.url}/v1/chat/completions"] * 2


def test_no_proxy_hosts_are_reached_directly(start_relay, tls_upstream, certificate, proxy):
    direct = start_relay(UPSTREAM_URL=f"https://localhost:{tls_upstream.port}", REQUESTS_CA_BUNDLE=str(certificate[0]),
                         HTTPS_PROXY=proxy.url(), NO_PROXY="localhost,127.0.0.1", no_proxy="localhost,127.0.0.1")
    assert chat(direct.url, "sk-direct") == "echo: through the proxy"
    assert proxy.seen == []


def test_https_upstream_stream_has_heartbeats_only_in_its_silences(start_relay, tls_upstream, certificate):
    """Over TLS too, a heartbeat comes only when no byte of the body is waiting, and every event stays whole."""
    relay = https_relay(start_relay, tls_upstream, certificate, SSE_HEARTBEAT="0.5")
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with requests.post(relay.url + "/v1/chat/completions", json=body, stream=True, timeout=TIMEOUT,
                       headers={"x-fake-chunks": "3", "x-fake-pause": "1.6"}) as response:
        events = b"".join(response.iter_content(None)).split(b"\n\n")
    assert events.count(b": keep-alive") >= 2
    data = [event for event in events if event.startswith(b"data: ")]
    assert len(data) == 4 and data[-1] == b"data: [DONE]"
    assert all(json.loads(event[6:])["object"] == "chat.completion.chunk" for event in data[:3])


def test_unreachable_proxy_is_a_clear_502(start_relay, tls_upstream, certificate):
    relay = https_relay(start_relay, tls_upstream, certificate, HTTPS_PROXY=f"http://127.0.0.1:{free_port()}")
    response = requests.post(relay.url + "/v1/chat/completions", json={"model": "m", "messages": []},
                             headers={"Authorization": "Bearer sk-x"}, timeout=TIMEOUT)
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "api_error"


def test_tunnel_does_not_lower_certificate_checks(start_relay, tls_upstream, proxy):
    relay = start_relay(UPSTREAM_URL=f"https://localhost:{tls_upstream.port}", HTTPS_PROXY=proxy.url(),
                        NO_PROXY="", no_proxy="")
    response = requests.get(relay.url + "/v1/models", headers={"Authorization": "Bearer sk-x"}, timeout=TIMEOUT)
    assert response.status_code == 502  # the throwaway certificate is not trusted without REQUESTS_CA_BUNDLE
    assert [s.method for s in proxy.seen] == ["CONNECT"]
