"""Money helpers. Every amount is a `Decimal`; floats never touch it."""

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
ZERO = Decimal("0.00")
# DecimalField(max_digits=14, decimal_places=2): the largest amount a column can hold.
MAX_AMOUNT = Decimal("999999999999.99")


def quantize(value: Decimal) -> Decimal:
    """Round to cents, half-up (0.005 -> 0.01), the one rounding rule of the whole system."""
    return value.quantize(CENT, rounding=ROUND_HALF_UP)
