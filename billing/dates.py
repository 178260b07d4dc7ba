"""The period a billing request asks about, and its split into the windows the upstream accepts.

Days are calendar days in UTC, the days OpenAI bills by. The client's `start_date`
and `end_date` are both included (as in seed 002's API: "2023-05-01 to 2023-05-31"
is all of May). The upstream's usage API takes an exclusive `end_date` and at most
100 days per query, so the period is cut into `Window`s of at most 100 days whose
exclusive ends tile it exactly: each window starts where the previous one ended.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

DEFAULT_DAYS = 90
MAX_DAYS = 1000
WINDOW_DAYS = 100  # the most the upstream's /dashboard/billing/usage accepts in one query

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class BadRange(ValueError):
    """The client asked for dates the relay cannot serve; the message says why (a 400)."""


@dataclass(frozen=True)
class Window:
    """Days `start` (included) to `end` (excluded): one upstream query."""

    start: date
    end: date

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)


@dataclass(frozen=True)
class Period:
    """Days `start` to `end`, both included."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def windows(self, size: int = WINDOW_DAYS) -> list[Window]:
        """Consecutive windows of at most `size` days covering the period exactly."""
        stop = self.end + timedelta(days=1)
        windows = []
        start = self.start
        while start < stop:
            end = min(start + timedelta(days=size), stop)
            windows.append(Window(start, end))
            start = end
        return windows


def today_utc() -> date:
    return datetime.now(UTC).date()


def parse_date(name: str, text: str) -> date:
    """`YYYY-MM-DD` and nothing else (`date.fromisoformat` would also take `20230501` or `2023-W18`)."""
    if not _ISO_DATE.fullmatch(text):
        raise BadRange(f"{name} must be a date written YYYY-MM-DD, got {text[:40]!r}")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadRange(f"{name} {text!r} is not a date of the calendar") from None


def parse_days(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_DAYS:
        raise BadRange(f"days must be a whole number from 1 to {MAX_DAYS}, got {text[:40]!r}")
    return int(text)


def requested_period(args: Mapping[str, str], today: date) -> Period:
    """The period named by `start_date`, `end_date` and `days` (empty values count as absent).

    `end_date` defaults to today; `start_date` to `days` (default 90) days ending at `end_date`.
    """
    start_text, end_text, days_text = (args.get(name) or "" for name in ("start_date", "end_date", "days"))
    days = parse_days(days_text) if days_text else DEFAULT_DAYS
    end = parse_date("end_date", end_text) if end_text else today
    start = parse_date("start_date", start_text) if start_text else end - timedelta(days=days - 1)
    if end < start:
        raise BadRange(f"end_date {end.isoformat()} is before start_date {start.isoformat()}")
    period = Period(start, end)
    if period.days > MAX_DAYS:
        raise BadRange(f"the range spans {period.days} days; at most {MAX_DAYS} can be asked for at once")
    return period


def unix_midnight(day: date) -> int:
    """The unix time of `day`'s first second in UTC, for the costs API's `start_time` / `end_time`."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
