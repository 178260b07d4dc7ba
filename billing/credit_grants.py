"""`GET /openai/billing/credit_grants`: what was used, in seed 002's shape, for clients written against it.

`{"list_used": [{"start_date", "end_date", "used"}, ...], "total_used", "total_granted", "start_date",
"end_date"}`, one `list_used` entry per upstream window, every date included. Session keys get the
upstream's own `credit_grants` answer, passed through as it came. Errors are
`{"error": <reason>, "start_date", "end_date"}`: 400 for bad dates, the upstream's
status when it refuses, 502/504 when it cannot be reached or does not answer.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from flask import Response, request

from .dates import DEFAULT_DAYS, BadRange, Period, requested_period, today_utc
from .keys import KeyKind, client_key, key_kind, key_problem
from .money import usd
from .queries import Spending, costs_used, credit_summary, granted_and_used
from .responses import private_json
from .upstream import BillingError, BillingUpstream

ALL_TIME_NOTE = (
    "The upstream reports what was used since the start (its usage answer has no daily_costs), "
    "not for the dates asked: list_used has that one figure."
)
ADMIN_NOTE = (
    "total_granted is null because OpenAI's API has no endpoint for the prepaid balance; "
    "used comes from /v1/organization/costs."
)


def openai_credit_grants() -> Response:
    key = client_key(request)
    try:
        period = requested_period(request.args, today_utc())
    except BadRange as exc:
        return _error(400, str(exc), *_dates_as_given())
    start, end = period.start.isoformat(), period.end.isoformat()
    problem = key_problem(key)
    if problem:
        return _error(401, problem, start, end)
    upstream = BillingUpstream.for_request(request, key)
    kind = key_kind(key)
    try:
        if kind is KeyKind.SESSION:
            answer = credit_summary(upstream)
            if not answer.ok:
                raise answer.failure("credit_grants")
            return Response(answer.body, status=200, content_type=answer.content_type or "application/json")
        if kind is KeyKind.ADMIN:
            return _usage(None, costs_used(upstream, period), period, ADMIN_NOTE)
        total, spending = granted_and_used(upstream, period)
        return _usage(total, spending, period, ALL_TIME_NOTE if spending.all_time else "")
    except BillingError as exc:
        return _error(exc.status, exc.message, start, end)


def _usage(granted: Decimal | None, spending: Spending, period: Period, note: str = "") -> Response:
    body: dict = {
        "list_used": [
            {"start_date": window.start.isoformat(), "end_date": window.last_day.isoformat(), "used": usd(used)}
            for window, used in spending.windows
        ],
        "total_used": usd(spending.total),
        "total_granted": usd(granted),
        "start_date": period.start.isoformat(),
        "end_date": period.end.isoformat(),
    }
    if note:
        body["message"] = note
    return private_json(200, body)


def _error(status: int, message: str, start_date: str | None, end_date: str | None) -> Response:
    return private_json(status, {"error": message, "start_date": start_date, "end_date": end_date})


def _dates_as_given() -> tuple[str, str]:
    """For an error about the dates: each as the client sent it, else its default."""
    today = today_utc()
    start = request.args.get("start_date") or (today - timedelta(days=DEFAULT_DAYS - 1)).isoformat()
    end = request.args.get("end_date") or today.isoformat()
    return start[:40], end[:40]
