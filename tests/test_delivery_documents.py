"""The invoice documents (delivery.documents): the PDF (WeasyPrint, parsed back with pypdf), the
hosted page's HTML, the money formats, and what rendering never does (markup from user text, a URL
fetched). Invoices are made through the services, as the application makes them."""

import builtins
import datetime
import io
import re
import shutil
import threading
from decimal import Decimal
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import call_command
from pypdf import PdfReader

from delivery import documents
from delivery.documents import PdfUnavailable, format_money, render_html, render_page, render_pdf
from delivery.management.commands.render_documents import file_stem
from invoices.models import Invoice
from invoices.services import invoice_create, invoice_send, invoice_void
from payments.services import payment_record
from tests.factories import CustomerFactory
from users.services import organization_update

HOSTILE = "<script>alert(1)</script> \"quotes\" & 'apostrophes'"
SELLER = {
    "legal_name": "Alice Trading Ltd",
    "address": "1 Market Street\nSpringfield 12345",
    "tax_id": "GB-123456789",
    "email": "accounts@alice.example",
    "phone": "+44 20 7946 0000",
    "invoice_footer": "Pay by bank transfer: IBAN GB00 ALCE 0000 0000 0000 00.",
    "invoice_prefix": "ALC-",
}


# --- helpers ------------------------------------------------------------------------------------


def loaded(invoice: Invoice) -> Invoice:
    """The invoice as the callers hand it over: organization and customer joined, lines loaded."""
    return (
        Invoice.objects.select_related("organization", "customer")
        .prefetch_related("lines")
        .get(pk=invoice.pk)
    )


def line(description="Consulting", quantity="1", unit_price="100.00", tax_rate="0") -> dict:
    return {
        "description": description,
        "quantity": Decimal(quantity),
        "unit_price": Decimal(unit_price),
        "tax_rate": Decimal(tax_rate),
    }


def issue(organization, customer, *, lines, currency="USD", notes="", send=True, paid=None) -> Invoice:
    invoice = invoice_create(
        organization=organization,
        customer_id=customer.pk,
        currency=currency,
        issue_date=datetime.date(2030, 1, 2),
        due_date=datetime.date(2030, 2, 1),
        lines=lines,
        notes=notes,
    )
    if send:
        invoice = invoice_send(organization=organization, invoice_id=invoice.pk)
    if paid is not None:
        payment_record(
            organization=organization, invoice_id=invoice.pk, amount=Decimal(paid), method="bank_transfer"
        )
    return loaded(invoice)


def pdf_pages(pdf: bytes) -> list[str]:
    assert pdf.startswith(b"%PDF-")
    return [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]


def pdf_text(pdf: bytes) -> str:
    return "\n".join(pdf_pages(pdf))


def flat(text: str) -> str:
    """Text with each run of whitespace as one space (a long value wraps over lines)."""
    return re.sub(r"\s+", " ", text)


class Elements(HTMLParser):
    """The start tags (with their attributes) and the text of an HTML document (its body's: not
    the style sheet's)."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.in_head = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self.in_head = self.in_head or tag == "head"

    def handle_endtag(self, tag):
        if tag == "head":
            self.in_head = False

    def handle_data(self, data):
        if not self.in_head:
            self.text.append(data)

    def named(self, tag: str) -> list[dict]:
        return [attrs for name, attrs in self.tags if name == tag]

    @property
    def all_text(self) -> str:
        return "".join(self.text)


@pytest.fixture
def seller(alice_org):
    return organization_update(organization_id=alice_org.pk, **SELLER)


@pytest.fixture
def customer(seller):
    return CustomerFactory(
        organization=seller,
        name="Globex Corporation",
        email="ap@globex.example",
        address="42 Industrial Way\nCypress Creek",
        tax_id="US-55-1234567",
    )


@pytest.fixture
def fresh_pdf_check():
    """pdf_available() asked afresh in the test, and again after it (its answer is cached)."""
    documents.pdf_available.cache_clear()
    yield
    documents.pdf_available.cache_clear()


# --- money --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("64.92", "USD", "$64.92"),
        ("12.5", "USD", "$12.50"),  # always the currency's places
        ("0", "USD", "$0.00"),
        ("1142.40", "EUR", "€1,142.40"),
        ("1079", "JPY", "¥1,079"),
        ("1250000", "JPY", "¥1,250,000"),
        ("0.525", "KWD", "KWD 0.525"),
        ("1250.5", "KWD", "KWD 1,250.500"),
        ("1.5", "BHD", "BHD 1.500"),
        # CLDR shows Iraqi dinars with no decimals; ISO 4217 (and the API) has 3.
        ("1.25", "IQD", "IQD 1.250"),
        ("999999999999.999", "KWD", "KWD 999,999,999,999.999"),
    ],
)
def test_format_money_has_the_api_places_and_the_locale_symbol(settings, amount, currency, expected):
    settings.LANGUAGE_CODE = "en-us"
    assert format_money(Decimal(amount), currency) == expected


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "expected"),
    [
        ("1142.40", "EUR", "de-de", "1.142,40 €"),
        ("64.92", "USD", "de-de", "64,92 $"),
        ("1.5", "BHD", "de-de", "1,500 BHD"),
        ("1079", "JPY", "ja", "￥1,079"),
        ("1142.4", "EUR", "fr-fr", "1\u202f142,40 €"),
        ("5", "CHF", "de-ch", "CHF 5.00"),
        ("1.25", "USD", "xx-yy", "$1.25"),  # an unknown locale: en-us
    ],
)
def test_format_money_locale_override(amount, currency, locale, expected):
    assert format_money(Decimal(amount), currency, locale=locale) == expected


def test_format_money_follows_language_code(settings):
    settings.LANGUAGE_CODE = "de-de"
    assert format_money(Decimal("1142.40"), "EUR") == "1.142,40 €"
    settings.LANGUAGE_CODE = "en-us"
    assert format_money(Decimal("1142.40"), "EUR") == "€1,142.40"


def test_unit_prices_keep_their_finer_places():
    assert documents.format_unit_price(Decimal("0.0333"), "KWD") == "KWD 0.0333"
    assert documents.format_unit_price(Decimal("333"), "JPY") == "¥333"
    assert documents.format_unit_price(Decimal("333.5000"), "JPY") == "¥333.5"
    assert documents.format_unit_price(Decimal("50.0000"), "USD") == "$50.00"
    assert documents.format_quantity(Decimal("2.500")) == "2.5"
    assert documents.format_quantity(Decimal("1500.000")) == "1,500"
    assert documents.format_percent(Decimal("8.25")) == "8.25%"
    assert documents.format_percent(Decimal("10.00")) == "10%"


AMOUNTS = ["0", "-0.00", "0.5", "12.34", "-12.34", "999.99", "1000", "1234567.891", "-9876543210.12", "0.001"]


def test_numbers_are_written_as_babel_writes_them_in_every_locale():
    # The formats laid out once (documents._Format) against babel's own NumberPattern.apply, for
    # every locale babel knows: money in currencies of 0, 2 and 3 places and with their symbols
    # before and after, quantities and rates. Where the layout cannot be babel's it is not used.
    from babel import Locale, localedata
    from babel.numbers import format_decimal

    from billing import money

    laid_out = 0
    for name in localedata.locale_identifiers():
        locale = Locale.parse(name)
        for currency in ("USD", "EUR", "JPY", "KWD", "INR"):
            for text in AMOUNTS:
                value = Decimal(money.format_amount(Decimal(text), currency))
                places = money.places_written(value)
                layout = documents._money_format(currency, locale, places)
                if isinstance(layout, documents._Format):
                    laid_out += 1
                    babel = documents._money_pattern(currency, locale, places)
                    expected = babel.apply(value, locale, currency=currency, currency_digits=False)
                    assert layout.apply(value) == expected, (name, currency, text)
        for pattern in ("#,##0.###", "#,##0.##"):
            layout = documents._decimal_format(pattern, locale)
            if isinstance(layout, documents._Format):
                for text in AMOUNTS:
                    value = documents._plain(Decimal(text))
                    assert layout.apply(value) == format_decimal(value, format=pattern, locale=locale)
    assert laid_out > 0.9 * len(localedata.locale_identifiers()) * 5 * len(AMOUNTS)


def test_a_pattern_babel_must_apply_is_left_to_babel():
    from babel import Locale
    from babel.numbers import parse_pattern

    locale = Locale.parse("en_US")
    for pattern in ("#,##0.00 ¤¤¤", "0.###E0", "@@@", "#,##0%"):  # a name, exponent, digits, scale
        assert not documents._layable(parse_pattern(pattern), locale), pattern
    for pattern in ("¤#,##0.00", "'#'#,##0.00"):  # babel unquotes '#': so does the layout
        assert documents._layable(parse_pattern(pattern), locale), pattern
    quoted = documents._Format(parse_pattern("'#'#,##0.00"), locale, None)
    assert (
        quoted.apply(Decimal("1234.5"))
        == "#1,234.50"
        == parse_pattern("'#'#,##0.00").apply(Decimal("1234.5"), locale)
    )


# --- the PDF ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "lines", "paid", "total", "paid_shown", "balance"),
    [
        # 3 x 333 = 999, tax 8% = 79.92 -> 80: 1,079 yen
        ("JPY", [line("Localisation, per screen", "3", "333", "8")], "79", "¥1,079", "¥79", "¥1,000"),
        # 2.5 x 23.98 = 59.95, tax 8.25% = 4.945875 -> 4.95 (half-up): 64.90; + 0.02 line
        (
            "USD",
            [line("Support hours", "2.5", "23.98", "8.25"), line("Rounding", "1", "0.02")],
            "10.00",
            "$64.92",
            "$10.00",
            "$54.92",
        ),
        # 1500 x 0.0003 = 0.45, tax 5% = 0.0225 -> 0.023: 0.473; + 0.052 line
        (
            "KWD",
            [line("Translation, per word", "1500", "0.0003", "5"), line("Fee", "1", "0.052")],
            "0.100",
            "KWD 0.525",
            "KWD 0.100",
            "KWD 0.425",
        ),
    ],
)
def test_pdf_shows_the_invoice(seller, customer, currency, lines, paid, total, paid_shown, balance):
    invoice = issue(seller, customer, lines=lines, currency=currency, paid=paid, notes="Thank you!")
    pdf = render_pdf(invoice)
    text = pdf_text(pdf)

    assert invoice.number
    assert invoice.number in text
    assert format_money(invoice.total, currency) == total
    assert format_money(invoice.balance_due, currency) == balance
    assert total in text
    assert paid_shown in text
    assert balance in text
    # The seller: the legal name (not the short name), address, tax id, contact, footer.
    assert "Alice Trading Ltd" in text
    assert "GB-123456789" in text
    assert "1 Market Street" in text
    assert "Springfield 12345" in text
    assert "accounts@alice.example" in text
    assert "+44 20 7946 0000" in text
    assert SELLER["invoice_footer"] in text
    # The customer.
    assert "Globex Corporation" in text
    assert "US-55-1234567" in text
    assert "ap@globex.example" in text
    assert "Cypress Creek" in text
    # Dates, status, every line, the notes.
    assert "Jan 2, 2030" in text
    assert "Feb 1, 2030" in text
    assert "Sent" in text
    for item in lines:
        assert item["description"] in text
    assert "Thank you!" in text
    assert "Page 1 of 1" in text
    assert PdfReader(io.BytesIO(pdf)).metadata.title == invoice.number


def test_a_long_invoice_pages_with_its_header_and_page_numbers(seller, customer):
    lines = [line(f"Service item {i:03d}", "2", "10.00", "20") for i in range(1, 121)]
    invoice = issue(seller, customer, lines=lines)
    pages = pdf_pages(render_pdf(invoice))

    count = len(pages)
    assert count >= 3
    for n, page in enumerate(pages, start=1):
        assert f"Page {n} of {count}" in page
        assert invoice.number in page
        # The lines table's header row repeats on every page that has lines.
        if re.search(r"Service item \d{3}", page):
            assert re.search(r"DESCRIPTION\s+QUANTITY\s+UNIT PRICE\s+TAX\s+AMOUNT", page), page[:300]
    # Every line exactly once, in order, across the pages.
    found = re.findall(r"Service item (\d{3})", "\n".join(pages))
    assert found == [f"{i:03d}" for i in range(1, 121)]
    # The totals after the last line (120 x 20.00 + 20 % tax), kept together on one page.
    after = "\n".join(pages).split("Service item 120", 1)[1]
    assert re.search(r"Subtotal\s+\$2,400\.00", after)
    totals = [page for page in pages if "Subtotal" in page]
    assert len(totals) == 1
    assert re.search(r"Total\s+\$2,880\.00", totals[0])
    assert re.search(r"Amount paid\s+\$0\.00\s+Balance due\s+\$2,880\.00", totals[0])


def test_a_draft_is_marked_draft(seller, customer):
    invoice = issue(seller, customer, lines=[line()], send=False)
    text = pdf_text(render_pdf(invoice, draft=True))
    assert "DRAFT" in text
    assert "not a request for payment" in text
    assert PdfReader(io.BytesIO(render_pdf(invoice, draft=True))).metadata.title == "Draft"
    assert documents.invoice_context(invoice, draft=True)["mark"] == "DRAFT"


def test_void_and_paid_are_marked(seller, customer):
    void = issue(seller, customer, lines=[line()])
    invoice_void(organization=seller, invoice_id=void.pk)
    text = pdf_text(render_pdf(loaded(void)))
    assert "VOID" in text
    assert "Nothing is due" in text

    paid = issue(seller, customer, lines=[line()], paid="100.00")
    text = pdf_text(render_pdf(paid))
    assert "PAID" in text
    assert "VOID" not in text
    assert "DRAFT" not in text

    sent = issue(seller, customer, lines=[line()])
    assert documents.invoice_context(sent, draft=False)["mark"] is None
    text = pdf_text(render_pdf(sent))
    assert "PAID" not in text
    assert "VOID" not in text
    assert "DRAFT" not in text


def test_the_seller_name_stands_in_for_a_missing_legal_name(alice_org, customer):
    organization = organization_update(organization_id=alice_org.pk, legal_name="")
    invoice = issue(organization, customer, lines=[line()])
    assert "Trading as" not in pdf_text(render_pdf(invoice))
    assert documents.invoice_context(invoice, draft=False)["seller"]["display_name"] == "alice"


# --- user text stays text -----------------------------------------------------------------------


@pytest.fixture
def hostile_invoice(alice_org):
    organization = organization_update(
        organization_id=alice_org.pk,
        legal_name=f"Seller {HOSTILE}",
        address="<b>1 Street</b>",
        invoice_footer=f"Footer {HOSTILE}",
    )
    customer = CustomerFactory(organization=organization, name=f"Customer {HOSTILE}")
    return issue(
        organization,
        customer,
        lines=[line(f"Line {HOSTILE}"), line('<img src="data:image/png;base64,AAAA"> <a href="x">link</a>')],
        notes=f"Notes {HOSTILE}",
    )


def test_user_text_is_text_in_the_pdf(hostile_invoice):
    text = flat(pdf_text(render_pdf(hostile_invoice)))
    for where in ("Seller", "Customer", "Line", "Notes", "Footer"):
        assert f"{where} <script>alert(1)</script>" in text
    assert '"quotes"' in text
    assert "'apostrophes'" in text
    assert '<img src="data:image/png;base64,AAAA">' in text

    html = Elements(render_html(hostile_invoice))
    assert html.named("script") == []
    assert html.named("img") == []
    assert html.named("a") == []
    assert html.named("b") == []
    assert f"Customer {HOSTILE}" in html.all_text


def test_user_text_is_escaped_in_the_page(hostile_invoice):
    page = render_page(hostile_invoice, pdf_url="https://billing.example/i/abc/pdf/")
    html = Elements(page)
    assert html.named("script") == []
    assert html.named("img") == []
    assert html.named("b") == []
    # Only the page's own links: the seller's email and the PDF.
    assert [a["href"] for a in html.named("a")] == [
        "mailto:alice@example.com",
        "https://billing.example/i/abc/pdf/",
    ]
    for where in ("Seller", "Customer", "Line", "Notes", "Footer"):
        assert f"{where} {HOSTILE}" in html.all_text
    # Escaped wherever it is written (text, the title, attributes such as aria-label).
    assert (
        page.count("&lt;script&gt;alert(1)&lt;/script&gt; &quot;quotes&quot; &amp; &#x27;apostrophes&#x27;")
        >= 5
    )
    assert "<script" not in page
    assert '"quotes"' not in page
    assert "'apostrophes'" not in page


# --- no URL is fetched --------------------------------------------------------------------------


@pytest.fixture
def web_server():
    """A local HTTP server that records every request it receives."""
    requests = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/css")
            self.end_headers()
            self.wfile.write(b"body { color: red }")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", requests
    server.shutdown()
    server.server_close()


def test_a_url_in_user_text_is_never_fetched(seller, customer, web_server, monkeypatch):
    base, requests = web_server
    asked = []
    fetcher_class = documents._fetcher_class()
    original = fetcher_class.fetch

    def spy(self, url, headers=None):
        asked.append(url)
        return original(self, url, headers)

    monkeypatch.setattr(fetcher_class, "fetch", spy)
    invoice = issue(
        seller,
        customer,
        lines=[
            line(f'<img src="{base}/line.png">'),
            line(f'<link rel="stylesheet" href="{base}/line.css"> <style>@import url({base}/i.css);</style>'),
        ],
        notes=f'<img src="{base}/notes.png"> {base}/plain',
    )
    text = pdf_text(render_pdf(invoice))
    assert f'<img src="{base}/line.png">' in text
    assert requests == []
    assert [url for url in asked if not url.startswith("data:")] == []


def test_render_pdf_fetches_nothing_a_template_names(seller, customer, web_server, monkeypatch, tmp_path):
    """Even a restyled template that names external files (a logo on a CDN, a font, a local file)
    makes render_pdf fetch nothing: only data: URLs load."""
    base, requests = web_server
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not an image")
    invoice = issue(seller, customer, lines=[line()])
    monkeypatch.setattr(
        documents,
        "render_html",
        lambda invoice, draft=False: (
            f'<html><head><title>{invoice.number}</title><link rel="stylesheet" href="{base}/t.css">'
            f"<style>@font-face {{ font-family: X; src: url({base}/f.woff) }} body {{ font-family: X }}</style>"
            f'</head><body><img src="{base}/logo.png"><img src="{secret.as_uri()}">'
            '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACwAAAAAAQABAAA=">'
            f"{invoice.number}</body></html>"
        ),
    )
    pdf = render_pdf(invoice)
    assert invoice.number in pdf_text(pdf)
    assert requests == []


def test_the_fetcher_refuses_every_url_but_data(web_server, tmp_path):
    import weasyprint

    base, requests = web_server
    secret = tmp_path / "secret.css"
    secret.write_text("body { color: red }")
    markup = (
        f'<link rel="stylesheet" href="{base}/style.css"><link rel="stylesheet" href="{secret.as_uri()}">'
        f'<img src="{base}/image.png"><p style="background: url({base}/bg.png)">x</p>'
    )
    weasyprint.HTML(string=markup, base_url=None, url_fetcher=documents.url_fetcher()).write_pdf()
    assert requests == []
    # The same markup with WeasyPrint's own fetcher does reach the server: the test can see a fetch.
    weasyprint.HTML(string=markup).write_pdf()
    assert "/style.css" in requests

    fetcher = documents.url_fetcher()
    for url in (f"{base}/x", "https://example.com/x", secret.as_uri(), "ftp://example.com/x", "x.png"):
        with pytest.raises(ValueError, match="fetch no URL"):
            fetcher.fetch(url)
    assert fetcher.fetch("data:text/plain;base64,aGk=").read() == b"hi"


# --- PDF engine missing -------------------------------------------------------------------------


def test_pdf_unavailable_when_weasyprint_cannot_load(seller, customer, monkeypatch, fresh_pdf_check):
    invoice = issue(seller, customer, lines=[line()])
    real_import = builtins.__import__

    def no_pango(name, *args, **kwargs):
        if name == "weasyprint" or name.startswith("weasyprint."):
            raise OSError("cannot load library 'libpango-1.0-0': No such file or directory")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pango)
    assert documents.pdf_available() is False
    with pytest.raises(PdfUnavailable):
        render_pdf(invoice)
    # The rest still renders: the page, the HTML.
    assert invoice.number in render_page(invoice, pdf_url="/i/x/pdf/")
    assert invoice.number in render_html(invoice)

    monkeypatch.setattr(builtins, "__import__", real_import)
    assert documents.pdf_available() is False  # cached until asked afresh
    documents.pdf_available.cache_clear()
    assert documents.pdf_available() is True
    assert render_pdf(invoice).startswith(b"%PDF-")


# --- the hosted page ----------------------------------------------------------------------------


def test_the_hosted_page(seller, customer):
    invoice = issue(seller, customer, lines=[line("Support hours", "2.5", "23.98", "8.25")], paid="4.90")
    page = render_page(invoice, pdf_url="https://billing.example/i/tok/pdf/")
    html = Elements(page)

    metas = {attrs.get("name"): attrs.get("content") for attrs in html.named("meta")}
    assert "noindex" in metas["robots"]
    assert metas["viewport"].startswith("width=device-width")
    assert html.named("script") == []
    # Standalone: nothing loaded from elsewhere.
    assert html.named("link") == []
    assert html.named("img") == []
    assert html.named("iframe") == []
    text = html.all_text
    for expected in (
        invoice.number,
        "Alice Trading Ltd",
        "GB-123456789",
        "Globex Corporation",
        "US-55-1234567",
        "Support hours",
        "$23.98",
        "8.25%",
        "$59.95",  # the line
        "$64.90",  # the total
        "$4.90",  # paid
        "$60.00",  # the balance due
        "Sent",
        "Feb 1, 2030",
        SELLER["invoice_footer"],
    ):
        assert expected in text, expected
    assert "VOID" not in text
    assert "PAID" not in text
    assert [a["href"] for a in html.named("a") if "pdf" in a["href"]] == [
        "https://billing.example/i/tok/pdf/"
    ]


def test_the_hosted_page_says_void_and_paid(seller, customer):
    void = issue(seller, customer, lines=[line()])
    invoice_void(organization=seller, invoice_id=void.pk)
    text = Elements(render_page(loaded(void), pdf_url="/i/a/pdf/")).all_text
    assert "VOID" in text
    assert "Nothing is due" in text
    assert re.search(r"Balance due\s*\$0\.00", text)

    paid = issue(seller, customer, lines=[line()], paid="100.00")
    text = Elements(render_page(paid, pdf_url="/i/b/pdf/")).all_text
    assert "PAID" in text
    assert "VOID" not in text


# --- the render_documents command ---------------------------------------------------------------


def test_render_documents_writes_each_issued_invoice(seller, customer, bob_org, make_customer, tmp_path):
    first = issue(seller, customer, lines=[line()], currency="JPY")
    second = issue(seller, customer, lines=[line()], paid="100.00")
    draft = issue(seller, customer, lines=[line()], send=False)
    other = issue(bob_org, make_customer(bob_org), lines=[line()])
    assert other.number == "INV-000001"
    assert first.number == "ALC-000001"
    out = io.StringIO()

    call_command(
        "render_documents", "--out", str(tmp_path / "one"), "--organization", str(seller.pk), stdout=out
    )

    directory = tmp_path / "one"
    assert sorted(path.name for path in directory.glob("*.pdf")) == ["ALC-000001.pdf", "ALC-000002.pdf"]
    for invoice in (first, second):
        pdf = (directory / f"{invoice.number}.pdf").read_bytes()
        assert invoice.number in pdf_text(pdf)
        assert str(directory / f"{invoice.number}.pdf") in out.getvalue()
        png = directory / f"{invoice.number}-1.png"
        # The first page as a PNG exactly when pdftoppm is installed (poppler-utils).
        assert png.exists() == bool(shutil.which("pdftoppm"))
        if png.exists():
            assert png.read_bytes().startswith(b"\x89PNG")
            assert str(png) in out.getvalue()
    assert "2 invoice(s) rendered" in out.getvalue()

    # Every organization's issued invoices; the drafts with --drafts, marked.
    call_command("render_documents", "--out", str(tmp_path / "all"), "--drafts", stdout=io.StringIO())
    names = sorted(path.name for path in (tmp_path / "all").glob("*.pdf"))
    assert names == ["ALC-000001.pdf", "ALC-000002.pdf", "INV-000001.pdf", f"draft-{draft.pk}.pdf"]
    assert "DRAFT" in pdf_text((tmp_path / "all" / f"draft-{draft.pk}.pdf").read_bytes())


def test_render_documents_names_files_safely(seller, customer):
    invoice = issue(seller, customer, lines=[line()], send=False)
    assert file_stem(invoice) == f"draft-{invoice.pk}"
    invoice.status, invoice.number = Invoice.Status.SENT, "../INV/2030 7"
    assert file_stem(invoice) == "_INV_2030_7"
