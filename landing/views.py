"""`GET /`: the landing page, or its facts as JSON for `Accept: application/json`."""

from __future__ import annotations

import secrets

from flask import Blueprint, current_app, jsonify, render_template, request

from proxy import VERSION
from proxy.settings import current_settings

from .facts import gather
from .texts import HTML_LANG, LANGUAGES, TEXTS, choose_language

bp = Blueprint("landing", __name__, template_folder="templates")

# Only what the page itself carries may run or load: its inline style and its one nonce'd script.
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; img-src data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@bp.get("/")
def landing():
    app = current_app
    endpoints = (
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static" and not rule.endpoint.startswith(("relay_", "landing."))
    )
    facts = gather(current_settings(), app.extensions["access"], app.extensions["routes"], endpoints, request.environ,
                   VERSION)
    if request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json":
        response = jsonify(facts.as_json())
    else:
        nonce = secrets.token_urlsafe(16)
        lang = choose_language(request.args, request.accept_languages)
        page = render_template("landing/index.html", facts=facts, nonce=nonce, lang=lang, html_lang=HTML_LANG[lang],
                               t=TEXTS[lang], languages=LANGUAGES)
        response = app.make_response(page)
        response.headers["Content-Security-Policy"] = _CSP.format(nonce=nonce)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Vary"] = "Accept, Accept-Language"
    response.headers["Cache-Control"] = "no-cache"
    return response
