"""The upstream queries behind the billing endpoints, and the figures read from their answers.

- `/v1/dashboard/billing/subscription`: what the account may spend (`hard_limit_usd`).
- `/v1/dashboard/billing/usage`: what a window of at most 100 days cost (`total_usage`, in cents).
- `/dashboard/billing/credit_grants`: the credit summary, which the official API serves to session keys only.
- `/v1/organization/costs`: what each day cost (`results[].amount.value`, in dollars), for admin keys, paged.

The official API refuses the dashboard queries to ordinary secret keys; the
OpenAI-compatible upstreams most users point the relay at still serve them, but
one-api, new-api and their forks answer `usage` with the key's all-time figure,
whatever the dates, and without the official `daily_costs`. Such answers are
recognised by that missing list and counted once, not once per window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

from .dates import WINDOW_DAYS, Period, Window, unix_midnight
from .money import exact
from .parallel import in_parallel
from .upstream import Answer, BillingError, BillingUpstream

SUBSCRIPTION_PATH = "/v1/dashboard/billing/subscription"
USAGE_PATH = "/v1/dashboard/billing/usage"
CREDIT_GRANTS_PATH = "/dashboard/billing/credit_grants"
COSTS_PATH = "/v1/organization/costs"
COSTS_LIMIT = 180  # the most buckets the costs API gives per page
MAX_COSTS_PAGES = WINDOW_DAYS + 5  # a window has at most 100 daily buckets: no honest upstream pages further


@dataclass(frozen=True)
class Spending:
    """What each window of a period cost, in dollars, exactly.

    `all_time` says the upstream could only tell what was ever spent: then there
    is one window, the whole period, holding that figure.
    """

    windows: list[tuple[Window, Decimal]]
    all_time: bool = False

    @property
    def total(self) -> Decimal:
        return sum((used for _, used in self.windows), Decimal(0))


@dataclass(frozen=True)
class CreditSummary:
    """The figures of a `credit_grants` answer, in dollars."""

    granted: Decimal
    used: Decimal
    available: Decimal


def granted(upstream: BillingUpstream) -> Decimal:
    """The account's spending limit: `hard_limit_usd`, else `system_hard_limit_usd`."""
    subscription = upstream.get_json(SUBSCRIPTION_PATH, "subscription")
    for name in ("hard_limit_usd", "system_hard_limit_usd"):
        value = subscription.get(name)
        if value is not None:
            return _amount(value, f"the subscription's {name}")
    raise BillingError(502, "The upstream's subscription has neither hard_limit_usd nor system_hard_limit_usd.")


@dataclass(frozen=True)
class Usage:
    used: Decimal  # dollars
    by_day: bool  # the answer has the official `daily_costs`, so it is about the dates asked


def usage_in(upstream: BillingUpstream, window: Window) -> Usage:
    """What `window` cost, from one usage query (the upstream's `end_date` is exclusive, like the window's)."""
    params = {"start_date": window.start.isoformat(), "end_date": window.end.isoformat()}
    usage = upstream.get_json(USAGE_PATH, "usage", params)
    if "total_usage" not in usage:
        raise BillingError(502, "The upstream's usage answer has no total_usage.")
    cents = _amount(usage["total_usage"], "the usage's total_usage")
    return Usage(cents / 100, isinstance(usage.get("daily_costs"), list))


def costs_in(upstream: BillingUpstream, window: Window) -> Decimal:
    """What `window` cost, from the costs API, following its pages to the end."""
    params: dict[str, str | int] = {
        "start_time": unix_midnight(window.start),
        "end_time": unix_midnight(window.end),
        "bucket_width": "1d",
        "limit": COSTS_LIMIT,
    }
    total = Decimal(0)
    for _ in range(MAX_COSTS_PAGES):
        page = upstream.get_json(COSTS_PATH, "costs", params)
        total += _page_total(page)
        if not page.get("has_more"):
            return total
        cursor = page.get("next_page")
        if not isinstance(cursor, str) or not cursor:
            raise BillingError(502, "The upstream's costs page says has_more but gives no next_page.")
        params = {**params, "page": cursor}
    raise BillingError(502, f"The upstream's costs kept paging past {MAX_COSTS_PAGES} pages for {WINDOW_DAYS} days.")


def credit_summary(upstream: BillingUpstream) -> Answer:
    """The upstream's `credit_grants` answer, as it came."""
    return upstream.get(CREDIT_GRANTS_PATH)


def summary_figures(answer: Answer) -> CreditSummary | None:
    """The figures of a successful `credit_grants` answer; None if it was refused or has no figures."""
    if not answer.ok:
        return None
    try:
        document = answer.json_object("credit_grants")
        return CreditSummary(
            *(_amount(document.get(name), name) for name in ("total_granted", "total_used", "total_available"))
        )
    except BillingError:
        return None


def granted_and_used(upstream: BillingUpstream, period: Period) -> tuple[Decimal, Spending]:
    """The subscription and each window's usage, all queried at once."""
    windows = period.windows()
    calls: list[Callable[[], Any]] = [partial(granted, upstream)]
    calls += [partial(usage_in, upstream, window) for window in windows]
    total, *usages = in_parallel(calls)
    if all(usage.by_day for usage in usages):
        return total, Spending([(window, usage.used) for window, usage in zip(windows, usages, strict=True)])
    whole = Window(period.start, windows[-1].end)
    return total, Spending([(whole, max(usage.used for usage in usages))], all_time=True)


def costs_used(upstream: BillingUpstream, period: Period) -> Spending:
    """Each window's costs, the windows queried at once."""
    windows = period.windows()
    used = in_parallel([partial(costs_in, upstream, window) for window in windows])
    return Spending(list(zip(windows, used, strict=True)))


def _page_total(page: dict[str, Any]) -> Decimal:
    buckets = page.get("data")
    if not isinstance(buckets, list):
        raise BillingError(502, "The upstream's costs page has no data list.")
    total = Decimal(0)
    for bucket in buckets:
        results = bucket.get("results") if isinstance(bucket, dict) else None
        if not isinstance(results, list):
            raise BillingError(502, "A bucket of the upstream's costs has no results list.")
        for result in results:
            amount = result.get("amount") if isinstance(result, dict) else None
            if not isinstance(amount, dict) or "value" not in amount:
                raise BillingError(502, "A result of the upstream's costs has no amount.value.")
            total += _amount(amount["value"], "a costs amount.value")
    return total


def _amount(value: object, what: str) -> Decimal:
    try:
        return exact(value)
    except ValueError:
        raise BillingError(502, f"The upstream's answer has {what} that is not a number.") from None
