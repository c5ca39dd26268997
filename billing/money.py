"""Money helpers. Every amount is a `Decimal`, held and shown with its currency's ISO 4217 minor
units (`billing.currencies`); floats never touch it.

The one rounding rule of the whole system is `quantize`: half-up to the currency's places (JPY
0.5 -> 1, USD 0.005 -> 0.01, KWD 0.0005 -> 0.001).
"""

from decimal import ROUND_HALF_UP, Decimal

from billing.currencies import minor_units

ZERO = Decimal("0")
# The money columns: numeric(15, 3), 12 whole digits and the 3 places of the finest currency.
MONEY_DIGITS, MONEY_PLACES = 15, 3
# A unit price may be finer than its currency: numeric(16, 4).
PRICE_DIGITS, PRICE_PLACES = 16, 4
# The largest amount a money column can hold; any currency's largest is below 10^12 (`max_amount`).
MAX_AMOUNT = Decimal("999999999999.999")
LIMIT = Decimal(10) ** (MONEY_DIGITS - MONEY_PLACES)  # 10^12, in the major unit

_UNITS = {places: Decimal(1).scaleb(-places) for places in range(PRICE_PLACES + 1)}


def places(currency: str) -> int:
    """How many decimal places `currency`'s amounts have (JPY 0, USD 2, KWD 3)."""
    return minor_units(currency)


def unit(currency: str) -> Decimal:
    """The currency's minor unit in the major one: JPY 1, USD 0.01, KWD 0.001."""
    return _UNITS[minor_units(currency)]


def quantize(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half-up to `currency`'s places."""
    return amount.quantize(unit(currency), rounding=ROUND_HALF_UP)


def max_amount(currency: str) -> Decimal:
    """The largest amount of a line or an invoice: one minor unit below 10^12 of the major unit."""
    return LIMIT - unit(currency)


def fits(amount: Decimal, currency: str) -> bool:
    """Whether `amount`'s value has no more places than `currency` (12.50 fits JPY? no; 12.500 USD? yes)."""
    return amount == amount.quantize(unit(currency), rounding=ROUND_HALF_UP)


def places_written(amount: Decimal) -> int:
    """The decimal places of `amount` as written: Decimal("1000.00") has 2, Decimal("1E+3") 0."""
    exponent = amount.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def format_amount(amount: Decimal, currency: str) -> str:
    """`amount` as the API writes it: with exactly its currency's places ("1250", "12.50", "1.250").

    An amount that does not fit its currency (which no writer stores: the models and the database
    refuse it) is written with the places it has, never rounded into another value."""
    exact = amount.quantize(unit(currency), rounding=ROUND_HALF_UP)
    return f"{exact if exact == amount else amount.normalize():f}"


def format_price(price: Decimal, currency: str) -> str:
    """A unit price: with its currency's places, or with as many as it has up to 4 ("50.00",
    "0.0125", JPY "333", JPY "333.5")."""
    have = places_written(price.normalize()) if price else 0
    shown = min(max(minor_units(currency), have), PRICE_PLACES)
    exact = price.quantize(_UNITS[shown], rounding=ROUND_HALF_UP)
    return f"{exact if exact == price else price.normalize():f}"


def to_minor(amount: Decimal, currency: str) -> int:
    """`amount` in the currency's minor unit, as an integer (12.50 USD -> 1250, 1.250 KWD -> 1250)."""
    minor = amount.scaleb(minor_units(currency))
    if minor != minor.to_integral_value():
        raise ValueError(f"{amount} has more places than {currency}")
    return int(minor)


def from_minor(minor: int, currency: str) -> Decimal:
    """An integer of minor units as an amount with the currency's places (1250 USD -> 12.50)."""
    return Decimal(int(minor)).scaleb(-minor_units(currency))
