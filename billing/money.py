"""Amounts of money: exact `Decimal`s while summing, US dollars with two decimals when shown.

Upstream figures arrive as JSON floats (`total_usage` in cents, `amount.value` and
`hard_limit_usd` in dollars). Each is read through its shortest decimal form
(`repr`), so `0.1` is one tenth and sums do not drift; rounding happens once, on
the figure shown, half up (0.285 -> 0.29), as people round money.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CENT = Decimal("0.01")


def exact(value: object) -> Decimal:
    """A JSON number (or a numeric string) as an exact Decimal; `ValueError` for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not an amount: {value!r}")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else value)
    except InvalidOperation:
        raise ValueError(f"not an amount: {value!r}") from None
    if not amount.is_finite():
        raise ValueError(f"not an amount: {value!r}")
    return amount


def to_cent(amount: Decimal) -> Decimal:
    """Rounded to the cent, half up."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def usd(amount: Decimal | None) -> float | None:
    """The JSON value of an amount: a number with at most two decimals (`18.0`, `17.92`), or null."""
    return None if amount is None else float(to_cent(amount))
