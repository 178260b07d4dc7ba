"""Periods, windows and money of the billing endpoints, on their own (the endpoints are tested through the relay)."""

from datetime import date, timedelta
from decimal import Decimal

import pytest

from billing.dates import BadRange, Period, Window, requested_period, unix_midnight
from billing.money import exact, to_cent, usd

TODAY = date(2024, 5, 20)


def test_a_250_day_period_makes_three_windows_that_tile_it_with_exclusive_ends():
    period = Period(date(2023, 1, 1), date(2023, 9, 7))
    assert period.days == 250
    assert period.windows() == [
        Window(date(2023, 1, 1), date(2023, 4, 11)),
        Window(date(2023, 4, 11), date(2023, 7, 20)),
        Window(date(2023, 7, 20), date(2023, 9, 8)),
    ]
    assert [w.last_day for w in period.windows()] == [date(2023, 4, 10), date(2023, 7, 19), date(2023, 9, 7)]


@pytest.mark.parametrize("days, expected", [(1, [1]), (99, [99]), (100, [100]), (101, [100, 1]), (1000, [100] * 10)])
def test_windows_hold_at_most_100_days_and_cover_every_day_once(days, expected):
    start = date(2024, 2, 20)  # a leap year's February inside
    period = Period(start, start + timedelta(days=days - 1))
    windows = period.windows()
    assert [(w.end - w.start).days for w in windows] == expected
    assert windows[0].start == period.start and windows[-1].end == period.end + timedelta(days=1)
    assert all(a.end == b.start for a, b in zip(windows, windows[1:], strict=False))


def test_default_period_is_the_90_days_ending_today():
    assert requested_period({}, TODAY) == Period(date(2024, 2, 21), TODAY)
    assert requested_period({"start_date": "", "end_date": ""}, TODAY) == Period(date(2024, 2, 21), TODAY)


def test_days_and_dates_combine():
    assert requested_period({"days": "1"}, TODAY) == Period(TODAY, TODAY)
    assert requested_period({"days": "1000"}, TODAY).days == 1000
    assert requested_period({"start_date": "2024-05-01"}, TODAY) == Period(date(2024, 5, 1), TODAY)
    march = Period(date(2024, 3, 1), date(2024, 3, 31))
    assert requested_period({"end_date": "2024-03-31", "days": "31"}, TODAY) == march
    both = {"start_date": "2023-01-01", "end_date": "2023-01-31", "days": "5"}
    assert requested_period(both, TODAY) == Period(date(2023, 1, 1), date(2023, 1, 31))


@pytest.mark.parametrize(
    "args, words",
    [
        ({"start_date": "2023-02-30"}, "not a date of the calendar"),
        ({"start_date": "2023/01/01"}, "YYYY-MM-DD"),
        ({"start_date": "20230101"}, "YYYY-MM-DD"),
        ({"end_date": "2023-W01-1"}, "YYYY-MM-DD"),
        ({"end_date": "2023-01-01T00:00:00"}, "YYYY-MM-DD"),
        ({"start_date": "2024-05-02", "end_date": "2024-05-01"}, "before start_date"),
        ({"start_date": "2021-08-23", "end_date": "2024-05-19"}, "1001 days"),
        ({"days": "0"}, "days must be"),
        ({"days": "1001"}, "days must be"),
        ({"days": "-5"}, "days must be"),
        ({"days": "ten"}, "days must be"),
    ],
)
def test_bad_periods_are_refused_with_the_reason(args, words):
    with pytest.raises(BadRange, match=words):
        requested_period(args, TODAY)


def test_exactly_1000_days_is_accepted():
    assert requested_period({"start_date": "2021-08-24", "end_date": "2024-05-19"}, TODAY).days == 1000


def test_unix_midnight_is_utc():
    assert unix_midnight(date(2024, 1, 1)) == 1704067200


def test_amounts_are_exact_and_rounded_half_up_once():
    assert exact(0.1) + exact(0.2) == Decimal("0.3")
    assert usd(exact(28.5) / 100) == 0.29  # float arithmetic says round(0.285, 2) == 0.28
    assert to_cent(Decimal("0.004999")) == Decimal("0.00")
    assert usd(exact(18)) == 18.0 and usd(None) is None
    assert exact("12.34") == Decimal("12.34")


@pytest.mark.parametrize("value", [True, None, "abc", "NaN", "Infinity", [1], {"v": 1}])
def test_what_is_not_an_amount_is_refused(value):
    with pytest.raises(ValueError):
        exact(value)
