"""Teaches the fake upstream OpenAI's billing endpoints, with an account per key.

`FakeBilling.attach(fake)` adds the handlers (once per fake) and returns the one
`FakeBilling`; each test then registers its own key with `billing.account(key, ...)`
and so gets its own figures and behaviour, whatever else runs on the shared fake:

| path (matched on its end) | served |
| --- | --- |
| `/dashboard/billing/subscription` | `hard_limit_usd`, `system_hard_limit_usd`, ... |
| `/dashboard/billing/usage` | `daily_costs`, `total_usage` (cents) of `[start_date, end_date)`; over 100 days: 400 |
| `/dashboard/billing/credit_grants` | the account's `credit_grants`, to `sess-` keys only |
| `/organization/costs` | daily buckets of `[start_time, end_time)`, `limit` <= 180, paged by `page` / `next_page` |

An account with `by_day=False` answers usage as one-api and new-api do: the
key's all-time total, whatever the dates, without `daily_costs`.
An account with `official=True` answers the dashboard paths as the official API
does for ordinary secret keys: a 403 saying a session key is needed. A key no
account knows gets a 401. Every billing query is recorded (`queries`), with its
parameters and when it started and ended, and the most queries of one key in
flight at once is kept (`max_in_flight`), to check windows and parallelism.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

from tests.fake_upstream import FakeUpstream, Request

MAX_USAGE_DAYS = 100
MAX_COSTS_LIMIT = 180


@dataclass
class Account:
    """What the fake knows about one key. Amounts are keyed by ISO day; days not listed cost nothing."""

    hard_limit_usd: float | None = 18.0
    system_hard_limit_usd: float | None = 18.0
    usage_cents: dict[str, float] = field(default_factory=dict)  # /dashboard/billing/usage, cents per day
    costs_usd: dict[str, list[float]] = field(default_factory=dict)  # /organization/costs, results per day
    credit_grants: dict | None = None  # the credit_summary served to a sess- key
    official: bool = False  # refuse the dashboard paths as the official API does for secret keys
    by_day: bool = True  # False: usage as one-api / new-api answer it, all time, whatever the dates, no daily_costs
    delay: float = 0.0  # seconds before each usage, costs or subscription answer
    page_size: int | None = None  # costs buckets per page when below the query's limit
    fail: dict[str, int] = field(default_factory=dict)  # endpoint name -> error status to answer instead
    raw: dict[str, bytes] = field(default_factory=dict)  # endpoint name -> body to send as is (status 200)


@dataclass
class Query:
    endpoint: str  # "subscription", "usage", "credit_grants" or "costs"
    key: str
    path: str
    params: dict[str, str]
    started: float
    ended: float = 0.0


class FakeBilling:
    _attached: dict[int, FakeBilling] = {}
    _attach_lock = threading.Lock()

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.queries: list[Query] = []
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}

    @classmethod
    def attach(cls, fake: FakeUpstream) -> FakeBilling:
        """The fake's one `FakeBilling`, its handlers added on first use."""
        with cls._attach_lock:
            billing = cls._attached.get(id(fake))
            if billing is None:
                billing = cls._attached[id(fake)] = cls()
                fake.route("/dashboard/billing/subscription", billing.subscription)
                fake.route("/dashboard/billing/usage", billing.usage)
                fake.route("/dashboard/billing/credit_grants", billing.grants)
                fake.route("/organization/costs", billing.costs)
            return billing

    def account(self, key: str, **settings) -> Account:
        self.accounts[key] = account = Account(**settings)
        return account

    def new_key(self, prefix: str = "sk-", **settings) -> str:
        """A key no other test uses, with an account made of `settings`."""
        key = f"{prefix}test{uuid.uuid4().hex}"
        self.account(key, **settings)
        return key

    def queries_of(self, key: str, endpoint: str | None = None) -> list[Query]:
        return [q for q in list(self.queries) if q.key == key and (endpoint is None or q.endpoint == endpoint)]

    # -- handlers --------------------------------------------------------------

    async def subscription(self, req: Request) -> None:
        async with self._serving(req, "subscription") as (account, _):
            if account is None or await self._refused(req, account, "subscription"):
                return
            await req.json({
                "object": "billing_subscription", "has_payment_method": True, "canceled": False,
                "soft_limit_usd": account.hard_limit_usd, "hard_limit_usd": account.hard_limit_usd,
                "system_hard_limit_usd": account.system_hard_limit_usd, "access_until": 1893456000,
                "plan": {"title": "Pay-as-you-go", "id": "payg"},
            })

    async def usage(self, req: Request) -> None:
        async with self._serving(req, "usage") as (account, params):
            if account is None or await self._refused(req, account, "usage"):
                return
            try:
                start = date.fromisoformat(params["start_date"])
                end = date.fromisoformat(params["end_date"])
            except (KeyError, ValueError):
                await _error(req, 400, "Invalid date: start_date and end_date must be YYYY-MM-DD.")
                return
            if not start < end or (end - start).days > MAX_USAGE_DAYS:
                await _error(req, 400, f"Invalid date range: between 1 and {MAX_USAGE_DAYS} days can be queried.")
                return
            if not account.by_day:
                total = sum((Decimal(repr(cents)) for cents in account.usage_cents.values()), Decimal(0))
                await req.json({"object": "list", "total_usage": float(total)})
                return
            days = [start + timedelta(days=n) for n in range((end - start).days)]
            daily = [{"timestamp": _midnight(day), "line_items": [
                {"name": "GPT-4o mini", "cost": account.usage_cents.get(day.isoformat(), 0.0)}]} for day in days]
            total = sum((Decimal(repr(account.usage_cents.get(day.isoformat(), 0.0))) for day in days), Decimal(0))
            await req.json({"object": "list", "daily_costs": daily, "total_usage": float(total)})

    async def grants(self, req: Request) -> None:
        async with self._serving(req, "credit_grants") as (account, _):
            if account is None or await self._refused(req, account, "credit_grants"):
                return
            if not _bearer(req).startswith("sess-"):
                await _session_key_refusal(req)
            elif account.credit_grants is None:
                await _error(req, 404, "No credit grants for this account.")
            else:
                await req.json(account.credit_grants)

    async def costs(self, req: Request) -> None:
        async with self._serving(req, "costs") as (account, params):
            if account is None or await self._refused(req, account, "costs"):
                return
            if not _bearer(req).startswith("sk-admin-"):
                await _error(req, 403, "You have insufficient permissions for this operation. "
                                       "Missing scopes: api.usage.read.", "insufficient_permissions")
                return
            try:
                start = int(params["start_time"])
                end = int(params.get("end_time", time.time()))
                limit = int(params.get("limit", "7"))
                cursor = int(base64.urlsafe_b64decode(params["page"]).decode()) if "page" in params else start
            except (KeyError, ValueError):
                await _error(req, 400, "Invalid query: start_time is required; times, limit and page are numbers.")
                return
            if params.get("bucket_width", "1d") != "1d" or not 1 <= limit <= MAX_COSTS_LIMIT:
                await _error(req, 400, f"Invalid query: bucket_width must be 1d and limit from 1 to {MAX_COSTS_LIMIT}.")
                return
            size = min(limit, account.page_size or limit)
            starts = list(range(cursor, end, 86400))
            buckets = [self._bucket(account, when) for when in starts[:size]]
            more = len(starts) > size
            next_page = base64.urlsafe_b64encode(str(starts[size]).encode()).decode() if more else None
            await req.json({"object": "page", "data": buckets, "has_more": more, "next_page": next_page})

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def _bucket(account: Account, when: int) -> dict:
        day = datetime.fromtimestamp(when, UTC).date().isoformat()
        results = [{"object": "organization.costs.result", "amount": {"value": value, "currency": "usd"},
                    "line_item": f"item-{n}", "project_id": None}
                   for n, value in enumerate(account.costs_usd.get(day, []))]
        return {"object": "bucket", "start_time": when, "end_time": when + 86400, "results": results}

    def _serving(self, req: Request, endpoint: str) -> _Serving:
        return _Serving(self, req, endpoint)

    async def _refused(self, req: Request, account: Account, endpoint: str) -> bool:
        """Answer instead of the endpoint when the account says so; True if it did."""
        if endpoint in account.fail:
            await _error(req, account.fail[endpoint], f"fake {endpoint} failure")
            return True
        if endpoint in account.raw:
            await req.send(200, [("Content-Type", "application/json")], account.raw[endpoint])
            return True
        if account.official and endpoint != "costs" and not _bearer(req).startswith("sess-"):
            await _session_key_refusal(req)
            return True
        return False


class _Serving:
    """Records one query, counts it in flight, applies the account's delay, answers 401 for unknown keys."""

    def __init__(self, billing: FakeBilling, req: Request, endpoint: str):
        self.billing, self.req, self.endpoint = billing, req, endpoint
        self.key = _bearer(req)
        self.query = Query(endpoint, self.key, urlsplit(req.record.target).path,
                           {k: v[-1] for k, v in parse_qs(req.record.query).items()}, time.monotonic())

    async def __aenter__(self) -> tuple[Account | None, dict[str, str]]:
        billing, key = self.billing, self.key
        billing.queries.append(self.query)
        billing.in_flight[key] = billing.in_flight.get(key, 0) + 1
        billing.max_in_flight[key] = max(billing.max_in_flight.get(key, 0), billing.in_flight[key])
        account = billing.accounts.get(key)
        if account is None:
            await _error(self.req, 401, "Incorrect API key provided.", "invalid_api_key")
            return None, self.query.params
        if account.delay and self.endpoint != "credit_grants":
            await asyncio.sleep(account.delay)
        return account, self.query.params

    async def __aexit__(self, *exc_info) -> None:
        self.billing.in_flight[self.key] -= 1
        self.query.ended = time.monotonic()


def _bearer(req: Request) -> str:
    scheme, _, token = req.h("authorization").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _midnight(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


async def _error(req: Request, status: int, message: str, code: str | None = None) -> None:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    await req.json({"error": {"message": message, "type": kind, "param": None, "code": code}}, status=status)


async def _session_key_refusal(req: Request) -> None:
    """The official API's answer to a secret key on the dashboard billing paths."""
    path = urlsplit(req.record.target).path
    message = (f"Your request to GET {path} must be made with a session key (that is, it can only be made "
               "from the browser). You made it with the following key type: secret.")
    await req.json({"error": {"message": message, "type": "server_error", "param": None, "code": None}},
                   status=403)
