"""`GET /pro/balance`: how much credit is left, in seed 001's shape.

`{"code": 200, "message": "success", "data": {"total", "balance", "used", "start_date", "end_date"}}`,
or `{"code": <status>, "message": <reason>, "data": null}` with that HTTP status.

- secret keys: total is the subscription's limit, used the sum of the usage over
  the period (queried in windows of 100 days, at once), balance = total - used.
  An upstream that only knows the all-time usage (one-api, new-api) gives the
  all-time figures, so the dates are null and the message says so.
- session keys: the upstream's credit summary when it gives one (lifetime figures,
  so the dates are null), else as for secret keys.
- admin keys: used from the costs API; total and balance are null, as the official
  API has no endpoint for the prepaid balance.
"""

from __future__ import annotations

from decimal import Decimal

from flask import Response, request

from .dates import BadRange, Period, requested_period, today_utc
from .keys import KeyKind, client_key, key_kind, key_problem
from .money import to_cent, usd
from .queries import costs_used, credit_summary, granted_and_used, summary_figures
from .responses import private_json
from .upstream import BillingError, BillingUpstream

ALL_TIME_MESSAGE = (
    "success: the upstream reports what was used since the start (its usage answer has no daily_costs), "
    "not for the dates asked; balance is total - used."
)
ADMIN_MESSAGE = (
    "success: used comes from /v1/organization/costs; total and balance are null because "
    "OpenAI's API has no endpoint for the prepaid balance."
)


def pro_balance() -> Response:
    key = client_key(request)
    problem = key_problem(key)
    if problem:
        return _failure(401, problem)
    try:
        period = requested_period(request.args, today_utc())
    except BadRange as exc:
        return _failure(400, str(exc))
    upstream = BillingUpstream.for_request(request, key)
    try:
        return _balance(upstream, key_kind(key), period)
    except BillingError as exc:
        return _failure(exc.status, exc.message)


def _balance(upstream: BillingUpstream, kind: KeyKind, period: Period) -> Response:
    if kind is KeyKind.SESSION:
        summary = summary_figures(credit_summary(upstream))
        if summary is not None:
            return _success(summary.granted, summary.available, summary.used, None)
    if kind is KeyKind.ADMIN:
        used = costs_used(upstream, period).total
        return _success(None, None, used, period, ADMIN_MESSAGE)
    total, spending = granted_and_used(upstream, period)
    # Both figures are rounded first, so that the three shown add up: 18.00 - 0.08 = 17.92.
    balance = to_cent(total) - to_cent(spending.total)
    if spending.all_time:
        return _success(total, balance, spending.total, None, ALL_TIME_MESSAGE)
    return _success(total, balance, spending.total, period)


def _success(
    total: Decimal | None, balance: Decimal | None, used: Decimal, period: Period | None, message: str = "success"
) -> Response:
    data = {
        "total": usd(total),
        "balance": usd(balance),
        "used": usd(used),
        "start_date": period.start.isoformat() if period else None,
        "end_date": period.end.isoformat() if period else None,
    }
    return private_json(200, {"code": 200, "message": message, "data": data})


def _failure(status: int, message: str) -> Response:
    return private_json(status, {"code": status, "message": message, "data": None})
