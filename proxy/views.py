"""The relay blueprint: one URL rule per route prefix, plus `/healthz`."""

from __future__ import annotations

from flask import Blueprint, Flask, current_app, jsonify

from .relay import relay
from .routes import Route

bp = Blueprint("proxy", __name__)

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
VERSION = "0.1.0"


def register_routes(app: Flask, routes: dict[str, Route]) -> None:
    """Add `/<prefix>` and `/<prefix>/<path>` for each route; everything else is a 404."""
    for route in routes.values():

        def view(route: Route = route, **_: str):
            return relay(route)

        for rule in (f"/{route.prefix}", f"/{route.prefix}/", f"/{route.prefix}/<path:rest>"):
            app.add_url_rule(
                rule, f"relay_{route.prefix}", view, methods=METHODS, provide_automatic_options=False
            )


@bp.get("/healthz")
def healthz():
    routes = current_app.extensions["routes"]
    return jsonify(status="ok", version=VERSION, routes=[f"/{prefix}" for prefix in routes])
