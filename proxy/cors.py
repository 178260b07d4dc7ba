"""CORS for browser apps (ChatGPT-Next-Web, openai-translator...), for every route of the relay.

A preflight is answered by the relay itself and allows whatever method and
headers the browser asks for (`x-stainless-*` included). Every other response to
a request with an `Origin` gets the allow-origin header and exposes all its own
headers, so the browser app can read `x-request-id`, `x-ratelimit-*` and the rest.
"""

from __future__ import annotations

from flask import Request, Response


def allowed_origin(origins: str, origin: str) -> str | None:
    """The `Access-Control-Allow-Origin` value for `origin`, or None if it is not allowed."""
    if origins.strip() == "*":
        return "*"
    allowed = {item.strip().rstrip("/") for item in origins.split(",") if item.strip()}
    return origin if origin.rstrip("/") in allowed else None


def is_preflight(request: Request) -> bool:
    return (
        request.method == "OPTIONS"
        and "Origin" in request.headers
        and "Access-Control-Request-Method" in request.headers
    )


def preflight_response(request: Request, origins: str) -> Response:
    response = Response(status=204)
    allow = allowed_origin(origins, request.headers["Origin"])
    if allow:
        response.headers["Access-Control-Allow-Origin"] = allow
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
        requested = request.headers.get("Access-Control-Request-Headers")
        if requested:
            response.headers["Access-Control-Allow-Headers"] = requested
        response.headers["Access-Control-Max-Age"] = "86400"
    response.headers["Vary"] = "Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
    return response


def add_cors_headers(request: Request, response: Response, origins: str) -> Response:
    origin = request.headers.get("Origin")
    if not origin or "Access-Control-Allow-Origin" in response.headers:
        return response
    allow = allowed_origin(origins, origin)
    if allow:
        response.headers["Access-Control-Allow-Origin"] = allow
        exposed = sorted({name for name, _ in response.headers} - {"Content-Type", "Access-Control-Allow-Origin"})
        if exposed:
            response.headers["Access-Control-Expose-Headers"] = ", ".join(exposed)
        if allow != "*":
            response.headers.add("Vary", "Origin")
    return response
