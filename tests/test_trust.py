"""Unit tests of the forwarded-header rules (through the server: see the access and landing tests)."""

import pytest

from proxy.settings import SettingsError
from proxy.trust import TrustedProxies


def env(peer="203.0.113.9", xff=None, proto=None, host="relay.example.com"):
    environ = {"REMOTE_ADDR": peer, "wsgi.url_scheme": "http", "HTTP_HOST": host}
    if xff is not None:
        environ["HTTP_X_FORWARDED_FOR"] = xff
    if proto is not None:
        environ["HTTP_X_FORWARDED_PROTO"] = proto
    return environ


def test_default_trusts_no_header():
    trusted = TrustedProxies.parse("")
    assert trusted.client_ip(env(xff="1.2.3.4")) == "203.0.113.9"
    assert trusted.scheme_and_host(env(proto="https")) == ("http", "relay.example.com")


def test_one_hop_takes_the_entry_the_platform_appended():
    trusted = TrustedProxies.parse("1")
    # Heroku appends the real address to whatever the client sent: the spoofed entry stays on the left.
    assert trusted.client_ip(env(peer="10.1.2.3", xff="6.6.6.6, 198.51.100.7")) == "198.51.100.7"
    assert trusted.scheme_and_host(env(peer="10.1.2.3", proto="https")) == ("https", "relay.example.com")


def test_networks_walk_from_the_nearest_hop():
    trusted = TrustedProxies.parse("127.0.0.1, 10.0.0.0/8")
    assert trusted.client_ip(env(peer="127.0.0.1", xff="6.6.6.6, 198.51.100.7, 10.0.0.5")) == "198.51.100.7"
    # A peer that is not a trusted proxy is the client, whatever header it sends.
    assert trusted.client_ip(env(peer="198.51.100.7", xff="1.1.1.1")) == "198.51.100.7"
    assert trusted.scheme_and_host(env(peer="198.51.100.7", proto="https"))[0] == "http"


def test_bad_value_is_refused_at_start_up():
    with pytest.raises(SettingsError):
        TrustedProxies.parse("not-an-ip")


def test_render_two_hops_behind_cloudflare():
    # Render: Cloudflare appends the client, Render's proxy the Cloudflare edge; Render's proxy sets the scheme once.
    trusted = TrustedProxies.parse("2")
    environ = env(peer="10.21.157.68", xff="6.6.6.6, 99.61.165.29, 104.22.17.40", proto="https")
    assert trusted.client_ip(environ) == "99.61.165.29"
    assert trusted.scheme_and_host(environ) == ("https", "relay.example.com")
