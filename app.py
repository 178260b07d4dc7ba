"""The relay's WSGI application: `create_app()` builds it, `app` is what gunicorn, Vercel and Heroku load."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, g, request
from werkzeug.exceptions import HTTPException

from access import Access, AccessDenied, current_access
from billing import bp as billing_bp
from landing import bp as landing_bp
from proxy import bp as proxy_bp
from proxy import register_routes
from proxy.accesslog import AccessLog
from proxy.cors import add_cors_headers, is_preflight, preflight_response
from proxy.errors import openai_error, pro_reply
from proxy.green import NewConnectionsInTurn
from proxy.pace import ClientTimeout
from proxy.replay import ReplayBudget
from proxy.routes import BadTarget, build_routes, check_target, raw_target
from proxy.settings import Settings
from proxy.streaming import OneLineDrops
from proxy.upstream import Upstream
from sessions import bp as sessions_bp
from usage import install as install_usage


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the relay. `config` overrides environment settings by name (for tests)."""
    settings = Settings.load(os.environ, config)
    _configure_logging(settings.log_level)

    app = Flask(__name__)
    app.config["SETTINGS"] = settings
    app.url_map.merge_slashes = False  # a '//' path is refused, never redirected
    app.url_map.strict_slashes = False
    routes = build_routes(settings)
    app.extensions["routes"] = routes
    app.extensions["access"] = Access.from_settings(settings, routes.values())  # refuses an open relay
    app.extensions["upstream"] = Upstream(settings, routes.values())
    app.extensions["replay_budget"] = ReplayBudget(settings.replay_budget_bytes)
    app.wsgi_app = ClientTimeout(app.wsgi_app, settings.client_timeout)  # bounds each read and write of a client

    app.register_blueprint(proxy_bp)
    app.register_blueprint(sessions_bp)
    app.register_blueprint(billing_bp)
    app.register_blueprint(landing_bp)
    register_routes(app, routes)

    @app.before_request
    def guard_and_preflight():
        g.target = check_target(raw_target(request.environ))  # (path, query), checked once for every route
        if is_preflight(request):
            return preflight_response(request, settings.cors_origins)
        return None

    @app.before_request
    def allowed_paths():
        current_access().check_path(request.path)  # relay keys and rate limits: see proxy/relay.py

    @app.after_request
    def cors(response):
        return add_cors_headers(request, response, settings.cors_origins)

    @app.errorhandler(BadTarget)
    def bad_target(exc: BadTarget):
        return _error(400, f"Invalid request path: {exc}", "invalid_path")

    @app.errorhandler(AccessDenied)
    def access_denied(exc: AccessDenied):
        return _error(exc.status, exc.message, exc.code, exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code == 404 and not request.path.startswith("/pro/"):
            message = f"Unknown route {request.path!r}: this relay serves {_prefixes(routes)}."
            return _error(404, message, "unknown_route")
        return _error(exc.code or 500, exc.description or exc.name, exc.name.lower().replace(" ", "_"))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        app.logger.exception("unexpected error on %s %s", request.method, request.path)
        return _error(500, "The relay failed to handle this request.", "relay_error")

    app.wsgi_app = AccessLog(NewConnectionsInTurn(app.wsgi_app))  # the line's duration holds the wait
    install_usage(app, settings)  # usage/: /pro/usage, budgets, /metrics (wraps wsgi_app when METRICS=1)
    return app


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None):
    """An error the relay makes itself, in the shape of the endpoint asked: `/pro/...` its own, the rest OpenAI's."""
    if request.path.startswith("/pro/"):
        return pro_reply(status, message, None, headers)
    return openai_error(status, message, code, headers)


def _prefixes(routes: Mapping[str, Any]) -> str:
    return ", ".join(f"/{prefix}/..." for prefix in routes)


def _configure_logging(level: str) -> None:
    # What no line of the relay's shows, so no record looks it up (the logging HOWTO's "Optimization"): the
    # caller's file and line (a walk up the stack), the thread (under gevent, a dummy thread object for each
    # connection's greenlet), the multiprocessing and asyncio task names (a RuntimeError raised and caught for
    # every line, asyncio being imported): 1-2% of a request's instructions. gunicorn's lines show the pid: kept.
    logging._srcfile = None
    logging.logThreads = logging.logMultiprocessing = logging.logAsyncioTasks = False
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("relay").setLevel(level.upper())
    logging.getLogger("gunicorn.error").addFilter(OneLineDrops())


app = create_app()
