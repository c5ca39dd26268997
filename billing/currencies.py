"""Currencies an invoice may be issued in: the active ISO 4217 codes, from ISO's own table as the
`iso4217` package ships it, that have a minor unit of 0 to 3 places. Codes without a minor unit
(precious metals, SDRs, bond-market units, the testing and "no currency" codes) and the 4-place
units of account (CLF, UYW) are not money one invoices in. Withdrawn codes (HRK, SLL, ZWL) are not in
the table; new ones (XCG, ZWG) are."""

from iso4217 import Currency

MINOR_UNITS: dict[str, int] = {
    currency.code: currency.exponent
    for currency in Currency
    if currency.exponent is not None and 0 <= currency.exponent <= 3
}

CURRENCY_CODES: frozenset[str] = frozenset(MINOR_UNITS)

# For model and form choices: the code is its own label, sorted.
CURRENCY_CHOICES: list[tuple[str, str]] = [(code, code) for code in sorted(CURRENCY_CODES)]


def is_currency(code: object) -> bool:
    return isinstance(code, str) and code in CURRENCY_CODES
