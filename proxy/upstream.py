"""The relay's one way out: keep-alive connection pools to the configured upstreams.

One urllib3 pool per upstream origin, made once by a `requests` `HTTPAdapter` (so the proxy settings,
`HTTPS_PROXY` and `NO_PROXY`, and `REQUESTS_CA_BUNDLE`, for proxies that inspect TLS, are honoured as by
requests itself) and then used directly: the URL goes out exactly as received (no re-quoting), no header is
added that the client did not send, and a request costs no adapter work (a third of the upstream side's CPU).
The connections are urllib3's with five changes of the relay's own (proxy/connection.py): one keeps the
target as received (urllib3's pool would rewrite it), one hands the answer back in a lighter object.
A connection idle past its time is closed, not reused (proxy/idle.py).
Session chat and billing use it too.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
from collections.abc import Iterable
from typing import IO
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.utils import get_environ_proxies, select_proxy, urldefragauth
from urllib3 import HTTPConnectionPool
from urllib3.exceptions import ConnectTimeoutError, HTTPError, MaxRetryError, NewConnectionError, ReadTimeoutError
from urllib3.util import SKIP_HEADER, Retry, Timeout

from .answer import Answer, LengthsDisagree
from .connection import CONNECTION_CLASSES, sending_target
from .green import take_turn
from .idle import IdleConnections
from .routes import Route
from .settings import Settings, SettingsError

UPLOAD_BLOCK = 1024 * 1024  # bytes per read of the client's body and per write upstream (gunicorn reads up to 1 MiB)
NO_RETRY = Retry(0, read=False)  # the relay never sends a request twice; a failed read is raised as it is


class UpstreamFailure(Exception):
    """No usable answer came from the upstream. Each kind says how the relay answers, so that the relay,
    WebSockets, session chat and billing word the same failure the same way."""

    status = 502
    code = "upstream_unreachable"

    def message(self, host: str) -> str:
        return f"The upstream {host} could not be reached."


class UpstreamUnreachable(UpstreamFailure):
    """No connection could be made (refused, DNS, TLS): the relay answers 502."""


class UpstreamBadResponse(UpstreamUnreachable):
    """The upstream answered something that is not a readable HTTP response (a 1 MiB header, 100+ headers,
    garbage, a connection closed instead of an answer): the relay answers 502 and says which."""

    code = "upstream_bad_response"

    def message(self, host: str) -> str:
        return f"The upstream {host} {self}."


class UpstreamTimeout(UpstreamFailure):
    """The upstream did not connect or answer in time: the relay answers 504."""

    status = 504
    code = "upstream_timeout"

    def message(self, host: str) -> str:
        return f"The upstream {host} did not answer in time."


class UpstreamBrokeOff(Exception):
    """The upstream's answer could not be read whole (dropped, or over the size limit): the relay answers 502."""


class UpstreamResponse:
    """The upstream's answer, body unread: `raw` is its `Answer` (proxy/answer.py), to read from."""

    __slots__ = ("raw", "status_code", "headers")

    def __init__(self, raw: Answer):
        self.raw = raw
        self.status_code = raw.status
        self.headers = raw.headers  # case-insensitive; repeated names joined with ", "

    def close(self) -> None:
        """Close the body (the connection too, unless it was read to its end) and hand the connection back."""
        self.raw.close()
        self.raw.release_conn()


class Upstream:
    def __init__(self, settings: Settings, routes: Iterable[Route]):
        self.timeout = Timeout(connect=settings.upstream_connect_timeout, read=settings.upstream_read_timeout)
        self.adapter = HTTPAdapter(
            pool_connections=16,
            pool_maxsize=settings.upstream_pool_size,
            pool_block=False,
            max_retries=0,
        )
        self.adapter.poolmanager.connection_pool_kw["blocksize"] = UPLOAD_BLOCK
        self._proxies = {route.origin: _proxies_for(route.origin) for route in routes}
        self.verify: bool | str = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        self._pools: dict[str, tuple[HTTPConnectionPool, bool]] = {}
        self.idle_limit = settings.upstream_idle_timeout

    def send(
        self,
        method: str,
        url: str,
        origin: str,
        headers: dict[str, str],
        body: bytes | IO[bytes] | Iterable[bytes] | None = None,
        timeout: tuple[float, float] | None = None,
    ) -> UpstreamResponse:
        """Send one request and return the response with its body still unread.

        `headers` go out as given; a body without a `Content-Length` header is sent
        chunked. The caller must close the response.
        """
        take_turn()
        pool, absolute = self._pool(origin)
        headers = dict(headers)
        present = {name.lower() for name in headers}
        for name in ("User-Agent", "Accept-Encoding"):  # urllib3 would add its own (`identity` for the latter)
            if name.lower() not in present:
                headers[name] = SKIP_HEADER
        timeouts = self.timeout if timeout is None else Timeout(connect=timeout[0], read=timeout[1])
        target = urldefragauth(url) if absolute else _target(url)
        try:
            with sending_target(target):  # as received: urllib3 would rewrite it (proxy/connection.py)
                raw = pool.urlopen(
                    method, target, body=body, headers=headers,
                    redirect=False, assert_same_host=False, preload_content=False, decode_content=False,
                    retries=NO_RETRY, timeout=timeouts,
                    chunked=body is not None and "content-length" not in present,
                )
        except MaxRetryError as exc:  # a failure to connect, with retries=0
            reason = exc.reason
            if isinstance(reason, ConnectTimeoutError) and not isinstance(reason, NewConnectionError):
                raise UpstreamTimeout(str(exc)) from exc
            raise UpstreamUnreachable(str(exc)) from exc
        except ReadTimeoutError as exc:
            raise UpstreamTimeout(str(exc)) from exc
        except (HTTPError, OSError) as exc:  # ProtocolError (a broken or invalid answer), a TLS or proxy failure
            problem = _unreadable_answer(exc)
            if problem:
                raise UpstreamBadResponse(problem) from exc
            raise UpstreamUnreachable(str(exc)) from exc
        return UpstreamResponse(raw)

    def _pool(self, origin: str) -> tuple[HTTPConnectionPool, bool]:
        """`origin`'s pool (through its outbound proxy, if any) and whether requests name the whole URL (to an
        HTTP proxy for a plain-HTTP upstream); made once, again only if the adapter has closed it."""
        found = self._pools.get(origin)
        if found is None or found[0].pool is None:  # urllib3 sets `pool` to None once closed
            prepared = requests.PreparedRequest()
            prepared.url = origin + "/"
            proxies = self.proxies(origin)
            pool = self.adapter.get_connection_with_tls_context(prepared, self.verify, proxies)
            pool.ConnectionCls = CONNECTION_CLASSES.get(pool.ConnectionCls, pool.ConnectionCls)  # proxy/connection.py
            if not isinstance(pool.pool, IdleConnections):  # proxy/idle.py
                pool.pool = IdleConnections.replacing(pool.pool, self.idle_limit)
            absolute = bool(select_proxy(origin, proxies)) and not origin.lower().startswith("https:")
            found = self._pools[origin] = (pool, absolute)
        return found

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
        proxy = select_proxy(origin, self.proxies(origin))
        try:
            pool, _ = self._pool(origin)
            conn = pool._new_conn()  # a fresh connection with the pool's TLS and proxy settings, never a pooled one
            conn.timeout = self.timeout.connect_timeout
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


def _target(url: str) -> str:
    """The request target of `url` as requests sends it: path (at least `/`) and query, no fragment."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def read_whole(response: UpstreamResponse, limit: int) -> bytes:
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


def _unreadable_answer(exc: BaseException) -> str:
    """What was wrong with the upstream's answer, if `exc` (urllib3 wrapping http.client) says so."""
    lengths = _find_cause(exc, LengthsDisagree)
    if isinstance(lengths, LengthsDisagree):
        return f"sent Content-Length headers that disagree ({lengths.declared})"
    found = _find_cause(exc, http.client.HTTPException)
    if found is None:
        return ""
    if isinstance(found, http.client.RemoteDisconnected):
        return "closed the connection without answering"
    if isinstance(found, http.client.LineTooLong):
        return f"sent a {found.args[0] if found.args else 'line'} longer than the {http.client._MAXLINE} bytes allowed"
    if "more than" in str(found):  # http.client: "got more than 100 headers"
        return f"sent more headers than the {http.client._MAXHEADERS} allowed"
    return f"sent an answer that is not valid HTTP ({type(found).__name__})"


def _find_cause(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of `kind` among `exc`'s causes, reasons and arguments (a bounded search)."""
    todo, looked = [exc], 0
    while todo and looked < 20:
        current = todo.pop(0)
        looked += 1
        if isinstance(current, kind):
            return current
        linked = (getattr(current, "reason", None), current.__cause__, current.__context__, *current.args)
        todo += [item for item in linked if isinstance(item, BaseException)]
    return None


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


def upstream_socket(response: UpstreamResponse) -> socket.socket | None:
    """The socket the response is read from (None once its connection is closed)."""
    return getattr(response.raw.connection, "sock", None)


def shut_down(response: UpstreamResponse) -> None:
    """Shut the response's socket down, so that a read blocked on it elsewhere returns."""
    sock = upstream_socket(response)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def abort(response: UpstreamResponse) -> None:
    """Close an upstream response now, connection included, even mid-body."""
    shut_down(response)
    response.close()
