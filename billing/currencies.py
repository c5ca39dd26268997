"""Currencies an invoice may be issued in: the active ISO 4217 codes (from pycountry's copy of the
standard), without the codes that are not money one can invoice in (precious metals, SDRs, bond-market
units, the testing and "no currency" codes)."""

import pycountry

NOT_INVOICEABLE = {"XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"}

CURRENCY_CODES: frozenset[str] = frozenset(c.alpha_3 for c in pycountry.currencies) - NOT_INVOICEABLE


def is_currency(code: object) -> bool:
    return isinstance(code, str) and code in CURRENCY_CODES
