"""Currencies an invoice may be issued in, and how many decimal places each one's amounts have.

The list is the active ISO 4217 codes, from ISO's own table as the `iso4217` package ships it, that
have a minor unit of 0 to 3 places. Codes without a minor unit (precious metals, SDRs, bond-market
units, the testing and "no currency" codes) and the 4-place units of account (CLF, UYW) are not
money one invoices in. Withdrawn codes (HRK, SLL, ZWL) are not in the table; new ones (XCG, ZWG) are.

The places are ISO's too (CLDR's display digits differ for some twenty codes, so not babel's), but
as *recorded* here: `RECORDED_MINOR_UNITS` is the table the stored amounts, the database's CHECK on
them and the InvoiceTotals triggers (invoices migration 0003) were written with. A currency's places
never change under stored data: if a later ISO table gives a code other places than recorded (or a
new code other places than 2), the system check `billing.E020` names it, and the recorded places keep
being used until a migration moves the data and this table together.
"""

from collections.abc import Mapping

from iso4217 import Currency

# ISO's table as the installed package has it: every code with a minor unit, whatever its places.
ISO_MINOR_UNITS: dict[str, int] = {
    currency.code: currency.exponent for currency in Currency if currency.exponent is not None
}

DEFAULT_PLACES = 2
# The codes whose places are not 2, as the stored data was written (ISO 4217, 2026-01-01 table).
# invoices/migrations/0003_money_per_currency.py holds the same table for its triggers; a test
# pins the two equal.
RECORDED_MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(
        [
            *("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI"),
            *("VND", "VUV", "XAF", "XOF", "XPF"),
        ],
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}

# The accepted codes and their places: ISO's active list with 0-3 places, each with its recorded places.
MINOR_UNITS: dict[str, int] = {
    code: RECORDED_MINOR_UNITS.get(code, DEFAULT_PLACES)
    for code, exponent in ISO_MINOR_UNITS.items()
    if 0 <= exponent <= 3
}

CURRENCY_CODES: frozenset[str] = frozenset(MINOR_UNITS)

# For model and form choices: the code is its own label, sorted.
CURRENCY_CHOICES: list[tuple[str, str]] = [(code, code) for code in sorted(CURRENCY_CODES)]

# By places, for the database's CHECK on stored amounts (3 places need none: the columns hold 3).
ZERO_PLACE_CODES: list[str] = sorted(code for code, places in MINOR_UNITS.items() if places == 0)
THREE_PLACE_CODES: list[str] = sorted(code for code, places in MINOR_UNITS.items() if places == 3)


def is_currency(code: object) -> bool:
    return isinstance(code, str) and code in CURRENCY_CODES


def minor_units(code: str) -> int:
    """The places of `code`'s amounts, as recorded: also for a code no longer accepted (withdrawn
    since its invoices were written), whose stored amounts are still read and shown."""
    return RECORDED_MINOR_UNITS.get(code, DEFAULT_PLACES)


def changed_minor_units(iso: Mapping[str, int] | None = None) -> dict[str, tuple[int, int]]:
    """The codes whose places in ISO's table (`iso`, default the installed one) differ from the
    recorded ones: code -> (recorded, ISO's). Every code accepted now or recorded is compared (one
    moving to 4 places is named too: its stored invoices would fall out of the list); a new code
    counts as recorded with 2 places."""
    iso = ISO_MINOR_UNITS if iso is None else iso
    known = set(MINOR_UNITS) | set(RECORDED_MINOR_UNITS)
    return {
        code: (RECORDED_MINOR_UNITS.get(code, DEFAULT_PLACES), exponent)
        for code, exponent in sorted(iso.items())
        if (code in known or 0 <= exponent <= 3)
        and exponent != RECORDED_MINOR_UNITS.get(code, DEFAULT_PLACES)
    }
