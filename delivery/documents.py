"""How an invoice looks on paper and on its hosted page: the context both templates read, the
money formats of documents, and the PDF itself (WeasyPrint, from `delivery/invoice_pdf.html`).

Amounts are written with exactly the places the API writes (`billing.money`: ISO 4217's minor
units as recorded), never CLDR's display digits; babel gives only the symbol, the separators and
where the symbol goes for `LANGUAGE_CODE` (or the locale given). A business restyles its documents
by overriding the templates (HTML and CSS, `delivery/invoice_pdf.css`, `delivery/invoice_page.css`).

Everything a user typed (organization, customer, notes, line descriptions) reaches the templates as
plain strings and is autoescaped there. The PDF is rendered with no base URL and a URL fetcher that
refuses everything but `data:` URLs: no template, stylesheet or user text can make the server fetch
a URL (or read a file) while rendering.
"""

from __future__ import annotations

import copy
import datetime
import functools
import re
import threading
import unicodedata
from decimal import Decimal

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import get_currency_symbol, get_decimal_symbol, get_group_symbol, parse_pattern
from django.conf import settings
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.translation import to_locale

from billing import money
from billing.cooperative import Busy, off_the_loop, room

PDF_TEMPLATE = "delivery/invoice_pdf.html"
PAGE_TEMPLATE = "delivery/invoice_page.html"
# Where CLDR's currencySpacing puts a space between an alphabetic symbol ("KWD") and the digits;
# babel does not apply it. A plain space: "KWD 0.525", as API.md writes it.
SYMBOL_SPACE = " "
# Territories that print on US Letter; everyone else on A4.
LETTER_TERRITORIES = frozenset({"US", "CA", "MX", "PH", "CL", "CO", "VE", "GT", "CR", "PA", "PR", "DO", "SV"})
STATUS_LABELS = {"draft": "Draft", "sent": "Sent", "overdue": "Overdue", "paid": "Paid", "void": "Void"}


class PdfUnavailable(Exception):
    """WeasyPrint (or the system's Pango, which it loads) cannot be imported: no PDF can be made."""


class PdfBusy(Exception):
    """A gevent worker's render thread has PDF_RENDERS_PER_WORKER renders already, or this one did
    not finish within PDF_RENDER_TIMEOUT_SECONDS (billing.cooperative): try again shortly."""


# --- PDF engine ---------------------------------------------------------------------------------


@functools.cache
def pdf_available() -> bool:
    """Whether WeasyPrint loads. Importing it loads Pango through ctypes, which raises OSError when
    the system library is missing; cached, since the answer does not change while the process runs
    (`pdf_available.cache_clear()` asks again)."""
    try:
        import weasyprint  # noqa: F401
    except (OSError, ImportError):
        return False
    return True


@functools.cache
def _fetcher_class():
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    class DataOnlyFetcher(URLFetcher):
        """WeasyPrint's fetcher for one render: only `data:` URLs (decoded in memory); every other
        URL (http, https, file, ftp, a relative one) is refused without being opened."""

        def __init__(self):
            super().__init__(timeout=1, allowed_protocols=("data",), allow_redirects=False)

        def fetch(self, url, headers=None):
            if not url.lower().startswith("data:"):
                raise ValueError(f"Documents fetch no URL: {url[:100]}")
            import urllib.request

            with urllib.request.urlopen(url) as response:  # noqa: S310 (data: only, checked above)
                return URLFetcherResponse(url, response.read(), dict(response.headers.items()))

    return DataOnlyFetcher


_fonts = threading.local()


def _font_config():
    """WeasyPrint's font configuration, one a thread and kept: making one loads every system font
    (fontconfig), a large share of a small document's render time."""
    config = getattr(_fonts, "config", None)
    if config is None:
        from weasyprint.text.fonts import FontConfiguration

        config = _fonts.config = FontConfiguration()
    return config


def url_fetcher():
    """A new data-only URL fetcher for a WeasyPrint render (PdfUnavailable without WeasyPrint)."""
    if not pdf_available():
        raise PdfUnavailable("WeasyPrint cannot be loaded (is the system's Pango installed?)")
    return _fetcher_class()()


# --- formats ------------------------------------------------------------------------------------


def _locale(name: str | None) -> Locale:
    """The babel locale of `name` (a Django language code "en-us" or a locale "de_DE"), default
    LANGUAGE_CODE; an unknown one falls back to its language, then to en_US."""
    return _parse_locale(name or settings.LANGUAGE_CODE or "en-us")


@functools.lru_cache(maxsize=64)
def _parse_locale(name: str) -> Locale:
    tag = to_locale(name.replace("_", "-"))
    for candidate in (tag, tag.split("_")[0], "en_US"):
        try:
            return Locale.parse(candidate)
        except (UnknownLocaleError, ValueError):
            continue
    raise AssertionError("en_US is always known")  # pragma: no cover


def _is_symbol_char(char: str) -> bool:
    return unicodedata.category(char).startswith("S")


@functools.lru_cache(maxsize=512)
def _money_pattern(currency: str, locale: Locale, places: int):
    """The locale's standard currency pattern with exactly `places` fraction digits, and CLDR's
    currency spacing for this symbol (a space between "KWD" and a digit; none after "$")."""
    pattern = copy.copy(locale.currency_formats["standard"])
    pattern.frac_prec = (places, places)
    symbol = get_currency_symbol(currency, locale)
    prefix, suffix = list(pattern.prefix), list(pattern.suffix)
    for i in range(2):
        if prefix[i].endswith("¤") and symbol and not _is_symbol_char(symbol[-1]):
            prefix[i] += SYMBOL_SPACE
        if suffix[i].startswith("¤") and symbol and not _is_symbol_char(symbol[0]):
            suffix[i] = SYMBOL_SPACE + suffix[i]
        # CLDR's own spacing is a no-break space; documents write a plain one (amounts never wrap
        # there: the templates keep them on one line).
        prefix[i] = prefix[i].replace("\xa0", SYMBOL_SPACE)
        suffix[i] = suffix[i].replace("\xa0", SYMBOL_SPACE)
    pattern.prefix, pattern.suffix = tuple(prefix), tuple(suffix)
    return pattern


class _Format:
    """A babel number pattern laid out once for one locale (and currency): what
    `NumberPattern.apply` does for a plain pattern (no exponent, significant digits or scale) with
    its prefixes and suffixes, symbols and separators looked up once instead of on every amount. A
    100-line invoice writes some 500 numbers; tests/test_delivery_documents.py pins the output to
    babel's own across locales, currencies and values."""

    __slots__ = ("decimal", "fraction", "group", "grouping", "integer", "prefix", "quantum", "suffix")

    def __init__(self, pattern, locale: Locale, currency: str | None) -> None:
        self.integer = pattern.int_prec[0]
        self.fraction = pattern.frac_prec
        self.quantum = Decimal(1).scaleb(-self.fraction[1])
        self.grouping = pattern.grouping
        self.group = get_group_symbol(locale)
        self.decimal = get_decimal_symbol(locale)
        symbol = get_currency_symbol(currency, locale) if currency else None
        self.prefix = tuple(_affix(text, currency, symbol) for text in pattern.prefix)
        self.suffix = tuple(_affix(text, currency, symbol) for text in pattern.suffix)

    def apply(self, value: Decimal) -> str:
        negative = int(value.is_signed())
        whole, _, fraction = f"{abs(value).normalize().quantize(self.quantum):f}".partition(".")
        if len(whole) < self.integer:
            whole = "0" * (self.integer - len(whole)) + whole
        size, grouped = self.grouping[0], ""
        while len(whole) > size:
            grouped = self.group + whole[-size:] + grouped
            whole = whole[:-size]
            size = self.grouping[1]
        least, most = self.fraction
        fraction = fraction or "0"
        if len(fraction) < least:
            fraction += "0" * (least - len(fraction))
        if most == 0 or (least == 0 and int(fraction) == 0):
            fraction = ""
        else:
            while len(fraction) > least and fraction[-1] == "0":
                fraction = fraction[:-1]
            fraction = self.decimal + fraction
        return self.prefix[negative] + whole + grouped + fraction + self.suffix[negative]


def _affix(text: str, currency: str | None, symbol: str | None) -> str:
    if currency is not None:
        text = text.replace("¤¤", currency.upper()).replace("¤", symbol)
    return re.sub(r"'([^']*)'", lambda m: m.group(1) or "'", text)


def _layable(pattern, locale: Locale) -> bool:
    """Whether `_Format` writes what babel writes for this pattern: a plain one, whose prefixes and
    suffixes do not depend on the amount (no currency name, "¤¤¤") nor carry a quote the
    separators could pair with (babel unquotes the whole string)."""
    affixes = (*pattern.prefix, *pattern.suffix)
    return (
        not pattern.exp_prec
        and "@" not in pattern.pattern
        and pattern.scale == 0
        and not any("¤¤¤" in text or text.count("'") % 2 for text in affixes)
        and "'" not in get_group_symbol(locale) + get_decimal_symbol(locale)
    )


@functools.lru_cache(maxsize=512)
def _money_format(currency: str, locale: Locale, places: int):
    """The money pattern of `_money_pattern` as a `_Format`, or the pattern itself where babel must
    apply it."""
    pattern = _money_pattern(currency, locale, places)
    return _Format(pattern, locale, currency) if _layable(pattern, locale) else pattern


@functools.lru_cache(maxsize=64)
def _decimal_format(format: str, locale: Locale):
    pattern = parse_pattern(format)
    return _Format(pattern, locale, None) if _layable(pattern, locale) else pattern


def _format_exact(text: str, currency: str, locale: str | None) -> str:
    """`text` (a decimal written with the places to show) in the locale's currency format."""
    value = Decimal(text)
    loc = _locale(locale)
    layout = _money_format(currency, loc, money.places_written(value))
    if isinstance(layout, _Format):
        return layout.apply(value)
    return layout.apply(value, loc, currency=currency, currency_digits=False)


def _format_decimal(value: Decimal, format: str, locale: str | None) -> str:
    loc = _locale(locale)
    layout = _decimal_format(format, loc)
    if isinstance(layout, _Format):
        return layout.apply(value)
    return layout.apply(value, loc)


def format_money(amount, currency: str, locale: str | None = None) -> str:
    """An amount as documents write it: the places of `billing.money` (what the API writes), the
    symbol and separators of `locale` (default LANGUAGE_CODE). "$64.92", "¥1,079", "KWD 0.525",
    "€1,142.40"; de-DE: "1.142,40 €"."""
    return _format_exact(money.format_amount(Decimal(amount), currency), currency, locale)


def format_unit_price(price, currency: str, locale: str | None = None) -> str:
    """A unit price: the currency's places, or as many as it has up to 4 (`billing.money.format_price`)."""
    return _format_exact(money.format_price(Decimal(price), currency), currency, locale)


def _plain(value: Decimal) -> Decimal:
    """`value` without trailing zeros, never in exponent form (2.500 -> 2.5, 10.00 -> 10)."""
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


def format_quantity(quantity, locale: str | None = None) -> str:
    return _format_decimal(_plain(Decimal(quantity)), "#,##0.###", locale)


def format_percent(rate, locale: str | None = None) -> str:
    """A tax rate in percent as written: "8.25%", "19%", "0%"."""
    return f"{_format_decimal(_plain(Decimal(rate)), '#,##0.##', locale)}%"


def format_day(day: datetime.date | None, locale: str | None = None) -> str:
    return format_date(day, format="medium", locale=_locale(locale)) if day else ""


# --- context ------------------------------------------------------------------------------------


def _lines_of(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def _mark(invoice, draft: bool) -> str | None:
    if invoice.status == "void":
        return "VOID"
    if invoice.status == "paid":
        return "PAID"
    if draft or invoice.status == "draft":
        return "DRAFT"
    return None


def invoice_context(invoice, *, draft: bool, locale: str | None = None) -> dict:
    """Everything the templates read, as plain strings (formatted, not yet escaped): the seller, the
    customer, the number and dates, the lines, the totals and the mark (DRAFT, PAID, VOID or None).
    `invoice` comes with `organization` and `customer` loaded; its lines are `invoice.lines.all()`."""
    organization, customer, currency = invoice.organization, invoice.customer, invoice.currency
    loc = _locale(locale)

    def fmt(amount) -> str:
        return format_money(amount, currency, locale)

    lines, taxes = [], {}
    for index, line in enumerate(invoice.lines.all(), start=1):
        lines.append(
            {
                "position": index,
                "position_text": str(index),
                "description": line.description,
                "quantity": format_quantity(line.quantity, locale),
                "unit_price": format_unit_price(line.unit_price, currency, locale),
                "tax_rate": format_percent(line.tax_rate, locale),
                "tax_amount": fmt(line.tax_amount),
                "amount": fmt(line.amount),
            }
        )
        if line.tax_rate:
            base, tax = taxes.get(line.tax_rate, (money.ZERO, money.ZERO))
            taxes[line.tax_rate] = (base + line.amount, tax + line.tax_amount)

    # The lines table has a fixed layout (WeasyPrint's automatic one measures every cell: the most
    # of a long invoice's render time): each figure column as wide as its longest value or its
    # header, in "ch" (the width of a digit), counting the cell's padding (4mm, about 2.2ch) and
    # room for a symbol's letters; the description takes the rest.
    def widest(key: str, header: int, slack: int = 3) -> int:
        return max([header, *(len(line[key]) + slack for line in lines)])

    columns = {
        "position": widest("position_text", 4, slack=2),
        "quantity": widest("quantity", 12),
        "unit_price": widest("unit_price", 13),
        "tax_rate": widest("tax_rate", 7, slack=4),  # "%" is wider than a digit
        "amount": widest("amount", 10),
    }
    mark = _mark(invoice, draft)
    is_draft = mark == "DRAFT" or invoice.status == "draft"
    number = invoice.number or None  # a draft may carry the number it will be issued with
    paid_at = invoice.paid_at and timezone.localtime(invoice.paid_at, organization.zone).date()
    balance_due = invoice.balance_due
    return {
        "seller": {
            "name": organization.name,
            "legal_name": organization.legal_name,
            "display_name": organization.legal_name or organization.name,
            "trading_as": organization.name
            if organization.legal_name and organization.legal_name != organization.name
            else "",
            "address": organization.address,
            "address_lines": _lines_of(organization.address),
            "tax_id": organization.tax_id,
            "email": organization.email,
            "phone": organization.phone,
            "invoice_footer": organization.invoice_footer,
        },
        "customer": {
            "name": customer.name,
            "email": customer.email,
            "phone": getattr(customer, "phone", ""),
            "address": customer.address,
            "address_lines": _lines_of(customer.address),
            "tax_id": customer.tax_id,
        },
        "number": number,
        "title": number or "Draft",
        "document_title": f"Invoice {number}" if number else "Draft invoice",
        "currency": currency,
        "issue_date": format_day(invoice.issue_date, locale),
        "due_date": format_day(invoice.due_date, locale),
        "paid_date": format_day(paid_at, locale) if paid_at else "",
        "status": invoice.status,
        "status_label": STATUS_LABELS.get(invoice.status, invoice.status.title()),
        "draft": is_draft,
        "notes": invoice.notes,
        "lines": lines,
        "taxes": [
            {"rate": format_percent(rate, locale), "base": fmt(base), "amount": fmt(tax)}
            for rate, (base, tax) in sorted(taxes.items())
        ],
        "subtotal": fmt(invoice.subtotal),
        "tax_total": fmt(invoice.tax_total),
        "total": fmt(invoice.total),
        "amount_paid": fmt(invoice.amount_paid),
        "balance_due": fmt(balance_due),
        # What the customer still owes: nothing once void (the API's balance_due stays the total).
        "amount_due": fmt(money.ZERO if invoice.status == "void" else balance_due),
        "has_payments": invoice.amount_paid > 0,
        "columns": columns,
        "mark": mark,
        "locale": str(loc),
        "language": loc.language,
        "page_size": "letter" if loc.territory in LETTER_TERRITORIES else "A4",
    }


# --- rendering ----------------------------------------------------------------------------------


def render_html(invoice, *, draft: bool = False) -> str:
    """The PDF's HTML (`delivery/invoice_pdf.html`)."""
    return render_to_string(PDF_TEMPLATE, invoice_context(invoice, draft=draft))


def render_pdf(invoice, *, draft: bool = False) -> bytes:
    """The invoice as a PDF, whose metadata title is its number. PdfUnavailable when WeasyPrint
    cannot be loaded; PdfBusy when a gevent worker has its renders already. No URL is fetched and
    no file read (`url_fetcher`)."""
    fetcher = url_fetcher()
    if not room(settings.PDF_RENDERS_PER_WORKER):  # refused before its HTML is made, not after
        raise PdfBusy(f"{settings.PDF_RENDERS_PER_WORKER} renders are running or waiting already")
    html = render_html(invoice, draft=draft)  # here: it may read the invoice's rows
    # The layout is CPU alone, seconds of it for a long invoice: under gevent, on a native thread,
    # so that the worker's other requests are served meanwhile (billing.cooperative).
    try:
        return off_the_loop(
            _write_pdf,
            html,
            fetcher,
            limit=settings.PDF_RENDERS_PER_WORKER,
            timeout=settings.PDF_RENDER_TIMEOUT_SECONDS,
        )
    except Busy as exc:
        raise PdfBusy(str(exc)) from None


def _write_pdf(html: str, fetcher) -> bytes:
    import weasyprint

    document = weasyprint.HTML(string=html, base_url=None, url_fetcher=fetcher)
    return document.write_pdf(font_config=_font_config())


def render_page(invoice, *, pdf_url: str) -> str:
    """The hosted invoice page (`delivery/invoice_page.html`): standalone HTML, no JavaScript."""
    context = invoice_context(invoice, draft=invoice.status == "draft")
    context["pdf_url"] = pdf_url
    return render_to_string(PAGE_TEMPLATE, context)
