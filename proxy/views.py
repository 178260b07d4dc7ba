"""The relay blueprint: URL rules per route prefix (requests and WebSockets), plus `/healthz`."""

from __future__ import annotations

from flask import Blueprint, Flask, current_app, jsonify

from .relay import relay
from .routes import Route
from .websocket import relay_websocket

bp = Blueprint("proxy", __name__)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
VERSION = "0.1.0"


def register_routes(app: Flask, routes: dict[str, Route]) -> None:
    """Add `/<prefix>` and `/<prefix>/<path>` for each route; everything else is a 404."""
    for route in routes.values():

        def view(route: Route = route, **_: str):
            return relay(route)

        def websocket_view(route: Route = route, **_: str):
            return relay_websocket(route)

        for rule in (f"/{route.prefix}", f"/{route.prefix}/", f"/{route.prefix}/<path:rest>"):
            app.add_url_rule(
                rule, f"relay_{route.prefix}", view, methods=METHODS, provide_automatic_options=False
            )
            # An `Upgrade: websocket` request matches only rules marked so (Werkzeug answers others with a 400).
            app.add_url_rule(rule, f"websocket_{route.prefix}", websocket_view, methods=["GET"], websocket=True)


@bp.get("/healthz")
def healthz():
    routes = current_app.extensions["routes"]
    return jsonify(status="ok", version=VERSION, routes=[f"/{prefix}" for prefix in routes])
