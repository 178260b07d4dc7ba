"""Which forwarded headers to believe: the client's IP, and the scheme and host it called.

Hosts put proxies in front of the relay that append the client's address to
`X-Forwarded-For`; a client can send its own header too, so only the entries
added by trusted proxies count. `TRUSTED_PROXIES` is either
- a number of hops (`1` on Heroku and Vercel: the one proxy in front; the README lists each host), as
  Werkzeug's ProxyFix counts them, or
- a list of proxy addresses or networks (`127.0.0.1` behind nginx on the same host),
  walked from the nearest hop outwards until an untrusted address: that is the client.
Empty (the default) trusts no header: the client is the socket's peer.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .settings import SettingsError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class TrustedProxies:
    hops: int = 0
    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, value: str) -> TrustedProxies:
        value = value.strip()
        if not value:
            return cls()
        if value.isdigit():
            return cls(hops=int(value))
        try:
            networks = tuple(ipaddress.ip_network(item, strict=False) for item in _split(value))
        except ValueError as exc:
            raise SettingsError(f"TRUSTED_PROXIES: {exc} (give a hop count or addresses/networks)") from None
        return cls(networks=networks)

    def trusts(self, address: str) -> bool:
        if not self.networks:  # the default: no address to parse on every request
            return False
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client_ip(self, environ: dict) -> str:
        """The address of the client, as far as the trusted proxies vouch for it."""
        peer = environ.get("REMOTE_ADDR", "")
        chain = _split(environ.get("HTTP_X_FORWARDED_FOR", ""))
        if self.hops:
            return chain[-self.hops] if len(chain) >= self.hops else (chain[0] if chain else peer)
        current = peer
        while chain and self.trusts(current):
            current = chain.pop()
        return current

    def scheme_and_host(self, environ: dict) -> tuple[str, str]:
        """The scheme and host the client used, from `X-Forwarded-Proto/Host` when the nearest proxy is trusted."""
        scheme = environ.get("wsgi.url_scheme", "http")
        host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '')}"
        if self.hops or self.trusts(environ.get("REMOTE_ADDR", "")):
            # Proxies often overwrite these rather than append: with fewer values than hops, the first is the edge's.
            protos = _split(environ.get("HTTP_X_FORWARDED_PROTO", ""))
            hosts = _split(environ.get("HTTP_X_FORWARDED_HOST", ""))
            if protos and protos[-min(self.hops or 1, len(protos))] in ("http", "https"):
                scheme = protos[-min(self.hops or 1, len(protos))]
            if hosts:
                host = hosts[-min(self.hops or 1, len(hosts))]
        return scheme, host

    def public_base_url(self, environ: dict) -> str:
        """This deployment's address as the client reached it, e.g. `https://relay.example.com`."""
        scheme, host = self.scheme_and_host(environ)
        return f"{scheme}://{host}"


def _split(header: str) -> list[str]:
    return [item.strip() for item in header.split(",") if item.strip()]
