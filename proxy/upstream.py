"""The relay's one way out: keep-alive connection pools to the configured upstreams.

Requests are sent through a single `requests` `HTTPAdapter` (one urllib3 pool per
upstream origin) with a hand-built `PreparedRequest`, so that the URL goes out
exactly as received (no re-quoting), no header is added that the client did not
send, and the proxy settings (`HTTPS_PROXY`, `NO_PROXY`) are looked up once per
upstream instead of on every request; `REQUESTS_CA_BUNDLE` is honoured as by
requests itself, for proxies that inspect TLS. Session chat and billing use it too.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from typing import IO
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_environ_proxies, select_proxy
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, ReadTimeoutError
from urllib3.util import SKIP_HEADER

from .routes import Route
from .settings import Settings, SettingsError

UPLOAD_BLOCK = 1024 * 1024  # bytes per read of the client's body and per write upstream (gunicorn reads up to 1 MiB)


class UpstreamUnreachable(Exception):
    """No connection could be made (refused, DNS, TLS): the relay answers 502."""


class UpstreamTimeout(Exception):
    """The upstream did not connect or answer in time: the relay answers 504."""


class UpstreamBrokeOff(Exception):
    """The upstream's answer could not be read whole (dropped, or over the size limit): the relay answers 502."""


class Upstream:
    def __init__(self, settings: Settings, routes: Iterable[Route]):
        self.timeout = (settings.upstream_connect_timeout, settings.upstream_read_timeout)
        self.adapter = HTTPAdapter(
            pool_connections=16,
            pool_maxsize=settings.upstream_pool_size,
            pool_block=False,
            max_retries=0,
        )
        self.adapter.poolmanager.connection_pool_kw["blocksize"] = UPLOAD_BLOCK
        self._proxies = {route.origin: _proxies_for(route.origin) for route in routes}
        self.verify: bool | str = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True

    def send(
        self,
        method: str,
        url: str,
        origin: str,
        headers: dict[str, str],
        body: bytes | IO[bytes] | Iterable[bytes] | None = None,
        timeout: tuple[float, float] | None = None,
    ) -> requests.Response:
        """Send one request and return the response with its body still unread.

        `headers` go out as given; a body without a `Content-Length` header is sent
        chunked. The caller must close the response.
        """
        prepared = requests.PreparedRequest()
        prepared.method = method
        prepared.url = url
        prepared.headers = CaseInsensitiveDict(headers)
        if "user-agent" not in prepared.headers:
            prepared.headers["User-Agent"] = SKIP_HEADER  # urllib3 would add its own
        prepared.body = body
        prepared.hooks = {"response": []}
        try:
            return self.adapter.send(
                prepared, stream=True, timeout=timeout or self.timeout, proxies=self.proxies(origin), verify=self.verify
            )
        except (requests.ConnectTimeout, requests.ReadTimeout) as exc:
            raise UpstreamTimeout(str(exc)) from exc
        except requests.ConnectionError as exc:
            raise UpstreamUnreachable(str(exc)) from exc

    def proxies(self, origin: str) -> dict[str, str]:
        proxies = self._proxies.get(origin)
        if proxies is None:
            proxies = self._proxies[origin] = _proxies_for(origin)
        return proxies

    def open_socket(self, origin: str) -> socket.socket:
        """A connection of its own to `origin`, for a protocol that takes it over (WebSocket); the caller closes it.

        It is made as the pool makes its own: through the outbound proxy chosen for `origin` (a CONNECT tunnel,
        for a plain-HTTP upstream too, since proxies do not forward upgrades), with the same certificate checks.
        """
        prepared = requests.PreparedRequest()
        prepared.url = origin + "/"
        proxies = self.proxies(origin)
        proxy = select_proxy(origin, proxies)
        try:
            pool = self.adapter.get_connection_with_tls_context(prepared, self.verify, proxies)
            conn = pool._new_conn()  # a fresh connection with the pool's TLS and proxy settings, never a pooled one
            conn.timeout = self.timeout[0]
            if proxy and pool.scheme == "https":
                pool._prepare_proxy(conn)  # CONNECT, then TLS with the upstream inside the tunnel
            elif proxy:
                target = urlsplit(origin)
                conn.set_tunnel(target.hostname, target.port or 80, headers=self.adapter.proxy_headers(proxy))
                conn.connect()
            else:
                conn.connect()
        except NewConnectionError as exc:
            raise UpstreamUnreachable(str(exc)) from exc
        except (ConnectTimeoutError, TimeoutError) as exc:
            raise UpstreamTimeout(str(exc)) from exc
        except (OSError, HTTPError) as exc:  # refused, DNS, TLS, a proxy that refused the tunnel
            raise UpstreamUnreachable(str(exc)) from exc
        return conn.sock

    def close(self) -> None:
        self.adapter.close()


def read_whole(response: requests.Response, limit: int) -> bytes:
    """A small answer (JSON, an error body) read whole and decoded; reaching its end returns the connection
    to the pool (urllib3 does that), so only a failure needs closing.

    Raises `UpstreamTimeout` when the upstream stops answering and `UpstreamBrokeOff` when
    it breaks off or sends more than `limit` bytes; the connection is closed then.
    """
    try:
        data = response.raw.read(limit + 1, decode_content=True)
    except ReadTimeoutError:
        abort(response)
        raise UpstreamTimeout("the upstream stopped answering") from None
    except Exception:  # urllib3 ProtocolError, a bad chunk, a reset connection
        abort(response)
        raise UpstreamBrokeOff("broke off its answer") from None
    if len(data) > limit:
        abort(response)
        raise UpstreamBrokeOff(f"sent an answer larger than {limit} bytes")
    return data


def _proxies_for(origin: str) -> dict[str, str]:
    """The outbound proxy for `origin` from HTTPS_PROXY/HTTP_PROXY/NO_PROXY; only HTTP proxies are supported."""
    proxies = get_environ_proxies(origin)  # also holds a "no" entry, from NO_PROXY
    chosen = select_proxy(origin, proxies)
    if chosen:
        parts = urlsplit(chosen if "://" in chosen else f"http://{chosen}")
        if parts.scheme.lower() not in ("http", "https"):
            shown = f"{parts.scheme}://{parts.hostname}:{parts.port}"  # never the credentials
            raise SettingsError(f"outbound proxy {shown}: only http:// and https:// proxies are supported")
    return proxies


def shut_down(response: requests.Response) -> None:
    """Shut the response's socket down, so that a read blocked on it elsewhere returns."""
    sock = getattr(getattr(response.raw, "_connection", None), "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def abort(response: requests.Response) -> None:
    """Close an upstream response now, connection included, even mid-body."""
    shut_down(response)
    response.close()
