"""`KEY_BUDGETS=alice=2000000/month,bob=100000/day`: tokens a relay key may use per UTC day or month.

A budget is checked before a request goes upstream and counted after its answer,
from the answer's own usage: the request that crosses the line is served whole,
and requests already in flight when it does are too, so a key can end a period
somewhat over its budget. Answers that report no usage count for nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from proxy.settings import SettingsError

PERIODS = ("day", "month")


@dataclass(frozen=True)
class Budget:
    label: str
    tokens: int
    period: str  # "day" or "month"

    def __str__(self) -> str:
        return f"{self.tokens}/{self.period}"

    def first_day(self, today: date) -> date:
        return today if self.period == "day" else today.replace(day=1)

    def seconds_left(self, now: datetime) -> int:
        """Seconds from `now` to the start of the next period, in UTC: the `Retry-After` of a refusal."""
        today = now.date()
        if self.period == "day":
            nxt = today + timedelta(days=1)
        else:
            nxt = (today.replace(day=28) + timedelta(days=4)).replace(day=1)
        start = datetime(nxt.year, nxt.month, nxt.day, tzinfo=UTC)
        return max(1, math.ceil((start - now).total_seconds()))


def parse_budgets(value: str, labels: Iterable[str]) -> dict[str, list[Budget]]:
    """Budgets by label; an entry for a label no relay key has, or malformed, stops the start-up."""
    known = set(labels)
    budgets: dict[str, list[Budget]] = {}
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        label, _, amount = item.partition("=")
        count, _, period = amount.partition("/")
        label, count, period = label.strip(), count.strip().replace("_", ""), period.strip().lower()
        if not count.isdigit() or int(count) < 1 or period not in PERIODS:
            raise SettingsError(f"KEY_BUDGETS entry {item!r} must look like alice=2000000/month or bob=1000/day")
        if label not in known:
            raise SettingsError(f"KEY_BUDGETS names {label!r}, which is not the label of any key in RELAY_KEYS")
        budgets.setdefault(label, []).append(Budget(label, int(count), period))
    return budgets
