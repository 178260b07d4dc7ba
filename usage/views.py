"""`GET /pro/usage`: what a relay key used, per day, from the answers' own usage figures.

With a relay key (`Authorization: Bearer`, or any place the relay takes one): that
key's figures. With `ADMIN_KEY`: every key's, under `data.keys`, by label. The
period is `start_date`/`end_date`/`days` as for `/pro/balance`, default today (UTC).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date
from typing import Any

from flask import Blueprint, Response, current_app, request

from access import current_access
from access.keys import bearer_token
from billing.dates import BadRange, Period, requested_period, today_utc
from billing.responses import NO_STORE
from proxy.errors import pro_reply
from proxy.settings import current_settings

from .store import StoreUnavailable

bp = Blueprint("usage", __name__)

FIGURES = ("requests", "input_tokens", "output_tokens", "total_tokens", "cached_tokens", "reasoning_tokens", "unknown")
MODEL_FIGURES = ("requests", "input_tokens", "output_tokens", "total_tokens", "cached_tokens", "reasoning_tokens")
PASS_THROUGH = ("/pro/usage counts tokens per relay key, and this relay runs in pass-through mode: "
                "set RELAY_KEYS to use it.")


def is_admin(token: str) -> bool:
    admin_key = current_settings().admin_key
    if not admin_key or not token:
        return False
    return hmac.compare_digest(hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest(),
                               hashlib.sha256(admin_key.encode()).digest())


@bp.get("/pro/usage")
def pro_usage() -> Response:
    access = current_access()
    if not access.requires_relay_key:
        return pro_reply(404, PASS_THROUGH, None, NO_STORE)
    admin = is_admin(bearer_token(request.headers.get("Authorization", "")))
    label = None if admin else access.admit(request.environ, "openai").label  # AccessDenied: 401/429, /pro shape
    try:
        period = _period()
    except BadRange as exc:
        return pro_reply(400, str(exc), None, NO_STORE)
    usage = current_app.extensions["usage"]
    labels = usage.labels if admin else [label]
    try:
        found = usage.store.days(labels, period.start, period.end)
    except StoreUnavailable:
        return pro_reply(503, "The usage store (Redis) cannot be reached; try again later.", None, NO_STORE)
    dates = {"start_date": period.start.isoformat(), "end_date": period.end.isoformat()}
    if admin:
        data = {**dates, "keys": {name: summary(found[name]) for name in labels}}
    else:
        data = {"key": label, **dates, **summary(found[label])}
    return pro_reply(200, "success", data, NO_STORE)


def _period() -> Period:
    args = {name: value for name, value in request.args.items() if value}
    args.setdefault("days", "1")  # default: today, and a lone end_date is that one day
    return requested_period(args, today_utc())


def summary(days: dict[date, dict[str, int]]) -> dict[str, Any]:
    """One key's figures over its days: totals, by model, by route and status class, and day by day."""
    totals = dict.fromkeys(FIGURES, 0)
    by_model: dict[str, dict[str, int]] = {}
    by_route: dict[str, dict[str, int]] = {}
    by_day = []
    for day in sorted(days):
        counters = days[day]
        for name in FIGURES:
            totals[name] += counters.get(name, 0)
        for field, value in counters.items():
            kind, _, rest = field.partition("|")
            if kind == "model":
                model, _, figure = rest.rpartition("|")
                entry = by_model.setdefault(model, dict.fromkeys(MODEL_FIGURES, 0))
                entry[figure] = entry.get(figure, 0) + value
            elif kind == "route":
                prefix, _, status_class = rest.rpartition("|")
                entry = by_route.setdefault(prefix, {})
                entry[status_class] = entry.get(status_class, 0) + value
        by_day.append({"date": day.isoformat(), **{name: counters.get(name, 0) for name in FIGURES}})
    return {**totals, "by_model": by_model, "by_route": by_route, "by_day": by_day}
