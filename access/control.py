"""Who may use the relay, with which upstream key, and how often: one `Access`, built at start-up.

Two modes:
- pass-through (no `RELAY_KEYS`): the client's own key goes upstream untouched,
  and `RATE_LIMIT` counts per client IP;
- relay keys: every request must carry one of `RELAY_KEYS`; it is removed, the
  route's own upstream key (`OPENAI_API_KEY`...) is put in its place, and
  `RATE_LIMIT` counts per relay key. A route without an upstream key still needs
  a relay key, and passes the client's other credential through.
Upstream keys without relay keys would pay for anyone on the internet: the relay
refuses to start so, unless `ALLOW_OPEN_RELAY=1`.

Wrong relay keys are counted per client IP (`RELAY_KEY_FAILURES`, 20 a minute by
default). Once an address is over, every request from it that carries a key gets a
429 before its key is even compared, so guessing stops there: a valid key from that
address waits too, or a guesser could tell a hit by its status. Only a key that is
wrong counts (a request with none does not), and only the guesser's own address is
refused: other addresses, the same keys included, are served as before.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from proxy.routes import Route
from proxy.settings import Settings, SettingsError
from proxy.trust import TrustedProxies
from usage.metrics import refusals

from .keys import PLACES, RelayKeys, digest, fingerprint, place_key, presented, remove_keys, split_list
from .paths import AllowedPaths
from .ratelimit import Counter, Limit, MemoryCounter, Verdict, make_counter, parse_limits
from .rotation import KeyRing

log = logging.getLogger("relay.access")

BUILT_IN_KEY_SETTINGS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}
SHORT_RELAY_KEY = 16  # characters; shorter relay keys are guessable and get a start-up warning


class AccessDenied(Exception):
    """The request may not go upstream: 401 (relay key), 403 (path) or 429 (rate limit)."""

    def __init__(self, status: int, message: str, code: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def key_setting(group: str) -> str:
    """The environment variable that holds the upstream keys of a key group: `GROQ_API_KEY` for `groq`."""
    return BUILT_IN_KEY_SETTINGS.get(group) or f"{group.upper().replace('-', '_')}_API_KEY"


@dataclass(frozen=True)
class Grant:
    """What admission decided for one request: which client keys to remove, which upstream keys to try."""

    group: str
    ring: KeyRing | None  # the route's upstream keys; None: the client's credential goes upstream
    remove: frozenset[str]  # places (keys.PLACES) to clear before the request goes upstream
    label: str | None = None  # usage/: the relay key's label (access/labels.py); None in pass-through mode
    holder: str = ""  # the SHA-256 (hex) of the relay key that was checked; "" in pass-through mode

    def strip(self, url: str, headers: dict[str, str]) -> str:
        """Remove the client's keys that must not go upstream from `headers` (in place); return the URL."""
        return remove_keys(url, headers, self.remove) if self.remove else url

    def attempts(self) -> list[str | None]:
        """The upstream keys to try in turn; `[None]` when the client's own credential is used."""
        return list(self.ring.attempts()) if self.ring else [None]

    def with_key(self, headers: dict[str, str], key: str | None) -> dict[str, str]:
        return place_key(headers, key, self.group) if key is not None else headers

    def refused(self, key: str | None, status: int) -> bool:
        """True if the upstream refused `key` (401/429): it rests, and another key may be tried."""
        return self.ring is not None and key is not None and self.ring.refused(key, status)

    @property
    def may_retry(self) -> bool:
        return self.ring is not None and len(self.ring) > 1


class Access:
    def __init__(
        self,
        relay_keys: RelayKeys,
        rings: Mapping[str, KeyRing],
        limits: tuple[Limit, ...] = (),
        counter: Counter | None = None,
        paths: AllowedPaths | None = None,
        proxies: TrustedProxies | None = None,
        failure_limits: tuple[Limit, ...] = (),
        failures: Counter | None = None,
    ):
        self.relay_keys = relay_keys
        self.rings = dict(rings)
        self.limits = limits
        self.counter = counter
        self.paths = paths or AllowedPaths([])
        self.proxies = proxies or TrustedProxies()
        self.failure_limits = failure_limits
        self.failures = failures  # wrong relay keys per client IP
        # Every upstream key, longest first (so that a key holding another is replaced whole), for `scrub`.
        keys = {key for ring in self.rings.values() for key in ring.keys}
        self._secrets = sorted((key.encode() for key in keys), key=len, reverse=True)

    @classmethod
    def from_settings(cls, settings: Settings, routes: Iterable[Route]) -> Access:
        """Build it from the settings; raise `SettingsError` for an open relay or a malformed value."""
        relay_keys = RelayKeys.parse(settings.relay_keys)
        rings: dict[str, KeyRing] = {}
        for group in dict.fromkeys(route.key_group for route in routes):
            name = key_setting(group)
            keys = split_list(getattr(settings, name.lower(), None) or settings.get(name))
            if keys:
                rings[group] = KeyRing(group, keys, settings.key_cooldown)
        if rings and not relay_keys and not settings.allow_open_relay:
            names = ", ".join(key_setting(group) for group in rings)
            raise SettingsError(
                f"{names} set but RELAY_KEYS is not: anyone who finds this relay could spend "
                f"{'that key' if len(rings) == 1 else 'those keys'}. Set RELAY_KEYS to the tokens you hand out "
                "to your users, or ALLOW_OPEN_RELAY=1 if you really mean to serve everyone."
            )
        if any(len(item.partition(":")[2] or item) < SHORT_RELAY_KEY for item in split_list(settings.relay_keys)):
            log.warning("RELAY_KEYS holds a key shorter than %d characters: it can be guessed", SHORT_RELAY_KEY)
        limits = parse_limits(settings.rate_limit)
        redis = (settings.redis_tls_verify, settings.redis_timeout)
        counter = make_counter(settings.redis_url, limits, *redis)
        if isinstance(counter, MemoryCounter) and int(settings.get("WEB_CONCURRENCY") or 1) > 1:
            log.warning("RATE_LIMIT is counted per worker process without REDIS_URL: set it to share one limit")
        failure_text = settings.relay_key_failures.strip()
        off = failure_text.lower() in ("off", "0")
        failure_limits = () if off else parse_limits(failure_text, "RELAY_KEY_FAILURES")
        failures = make_counter(settings.redis_url, failure_limits, *redis, prefix="relay:keyfailures")
        return cls(
            relay_keys,
            rings,
            limits,
            counter,
            AllowedPaths.parse(settings.allowed_paths),
            TrustedProxies.parse(settings.trusted_proxies),
            failure_limits if relay_keys else (),
            failures if relay_keys else None,
        )

    @property
    def requires_relay_key(self) -> bool:
        return bool(self.relay_keys)

    def check_path(self, path: str) -> None:
        """Raise a 403 for a path outside `ALLOWED_PATHS`."""
        if not self.paths.allows(path):
            raise AccessDenied(403, f"This relay does not serve {path}.", "path_not_allowed")

    def admit(self, environ: dict, group: str, also: str | None = None) -> Grant:
        """Check the request's relay key (if required) and its rate limit; say how its keys are handled.

        `also` is a key the client sent elsewhere (a JSON body's `apiKey`). Raises `AccessDenied`.
        """
        found = presented(environ)
        relay_key, relay_places = None, set()
        if self.relay_keys:
            candidates = [*found.items(), *([("also", also)] if also else [])]
            if not candidates:
                raise _relay_key_error(False)
            guesser = fingerprint(self.proxies.client_ip(environ), "ip") if self.failures is not None else ""
            if guesser:
                self._refuse_guesser(self.failures.peek(guesser, self.failure_limits))
            matching = [(place, value) for place, value in candidates if self.relay_keys.matches(value)]
            if not matching:
                if guesser:
                    self.failures.hit(guesser, self.failure_limits)
                raise _relay_key_error(True)
            relay_key = matching[0][1]
            relay_places = {place for place, _ in matching} - {"also"}
        if self.counter is not None:
            if relay_key is not None:
                self._count(fingerprint(relay_key, "relay-key"), "this relay key")
            else:
                self._count(fingerprint(self.proxies.client_ip(environ), "ip"), "this address")
        ring = self.rings.get(group)
        label = self.relay_keys.label_of(relay_key) if relay_key is not None else None
        holder = digest(relay_key).hex() if relay_key is not None else ""
        return Grant(group, ring, frozenset(PLACES) if ring else frozenset(relay_places), label, holder)

    def upstream_key(self, presented_key: str | None, group: str, environ: dict) -> str:
        """The key to send upstream for a client that presented `presented_key` (see `access.upstream_key`)."""
        return self.key_for(self.admit(environ, group, also=presented_key), presented_key, environ)

    def key_for(self, grant: Grant, presented_key: str | None, environ: dict) -> str:
        """The key to send upstream for an admitted request whose client also presented `presented_key`."""
        if grant.ring:
            return grant.ring.attempts()[0]
        if not self.relay_keys:
            return presented_key or ""
        # Relay keys, but no upstream key for this group: the client's own key travels beside its relay key.
        for value in [presented_key, *presented(environ).values()]:
            if value and not self.relay_keys.matches(value):
                return value
        raise AccessDenied(
            401,
            f"This relay holds no upstream key for {grant.group}: send your own API key along with your relay key.",
            "upstream_key_missing",
        )

    def scrub(self, data: bytes) -> bytes:
        """`data` with every upstream key the relay holds replaced: for what an upstream says back to clients."""
        for secret in self._secrets:
            data = data.replace(secret, b"[upstream key removed by the relay]")
        return data

    def _refuse_guesser(self, verdict: Verdict) -> None:
        if not verdict.allowed:
            message = (f"Too many wrong relay keys from this address (limit {verdict.limit}). "
                       f"Retry after {verdict.retry_after} s.")
            raise AccessDenied(429, message, "too_many_relay_key_failures", {"Retry-After": str(verdict.retry_after)})

    def _count(self, caller: str, who: str) -> None:
        verdict = self.counter.hit(caller, self.limits)
        if not verdict.allowed:
            refusals.labels("rate_limit").inc()  # usage/metrics.py
            message = f"Rate limit of {verdict.limit} reached for {who}. Retry after {verdict.retry_after} s."
            raise AccessDenied(429, message, "rate_limit_exceeded", {"Retry-After": str(verdict.retry_after)})


def _relay_key_error(sent_something: bool) -> AccessDenied:
    how = "as 'Authorization: Bearer <relay key>' (or in x-api-key, api-key, x-goog-api-key or ?key=)"
    if sent_something:
        message = f"The key sent is not a valid relay key for this relay. Send a relay key {how}."
    else:
        message = f"This relay requires a relay key. Send it {how}."
    return AccessDenied(401, message, "invalid_relay_key" if sent_something else "missing_relay_key")
