"""Usage per relay key, token budgets, `GET /pro/usage` and Prometheus `/metrics` (issue 14).

This package's top imports nothing of access/ (which imports `usage.metrics`).
`install(app, settings)` builds one `Usage` (app.extensions["usage"]), registers
`/pro/usage` and, with `METRICS=1`, wraps the app in the metrics middleware. The
relay calls `Usage.admit` next to access control (proxy/relay.py); the WebSocket
relay calls `count_websocket` once per session and `websocket_opened/closed`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Flask, current_app

from proxy.settings import Settings, SettingsError

from . import metrics

if TYPE_CHECKING:
    from .meter import Usage

__all__ = ["count_websocket", "current_usage", "install", "websocket_closed", "websocket_opened"]


def install(app: Flask, settings: Settings) -> None:
    """Build the app's `Usage`, serve `/pro/usage`, and `/metrics` with `METRICS=1`. Needs the app's Access."""
    from .meter import Usage  # here, not above: access/ imports usage.metrics, and meter imports access
    from .views import bp

    access = app.extensions["access"]
    if settings.admin_key and access.relay_keys.matches(settings.admin_key):
        raise SettingsError("ADMIN_KEY must not be one of RELAY_KEYS")
    app.extensions["usage"] = Usage.from_settings(settings, access)
    app.register_blueprint(bp)
    if settings.metrics:
        if "metrics" in app.extensions["routes"]:
            raise SettingsError("METRICS=1 serves /metrics, and ROUTES has a route named metrics: rename one")
        app.wsgi_app = metrics.Metrics(app.wsgi_app, app.extensions["routes"], settings.admin_key)


def current_usage() -> Usage:
    return current_app.extensions["usage"]


def count_websocket(label: str | None, prefix: str, status: int) -> None:
    """Count one WebSocket session of the relay key `label` (`Grant.label`) as a request, tokens unknown."""
    current_usage().count_websocket(label, prefix, status)


def websocket_opened() -> None:
    metrics.open_websockets.inc()


def websocket_closed() -> None:
    metrics.open_websockets.dec()
