"""The hosted invoice page (/i/<token>/) opened in a real headless Chromium, as a customer opens the
link in the email: invoices issued through the API of a live server, the page's visible text read
from the browser (seller, customer, number, lines, totals and balance in each currency's format,
PAID and VOID), a screenshot saved under the test's tmp_path at a desktop and at a phone size (where
nothing scrolls sideways), no script on the page and user text shown as text, and the page's PDF
link followed (fetched with urllib: Chromium's PDF viewer is not scriptable) and parsed with pypdf.

Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them); browser set up as in
tests/test_docs_browser.py, with a fresh profile.
"""

import base64
import io
import json
import re
import struct
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pypdf import PdfReader
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from users.services import api_key_create

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DESKTOP = (1280, 900)
PHONE = (390, 844)
HOSTILE_NAME = '<script>alert(1)</script> "Q"'

SELLER = {
    "name": "Northwind",
    "legal_name": "Northwind Studio Ltd",
    "email": "accounts@northwind.example",
    "phone": "+44 117 496 0000",
    "address": "12 Harbour Street\nBristol BS1 4QA\nUnited Kingdom",
    "tax_id": "GB123456789",
    "invoice_footer": "Bank transfer to IBAN GB33 BUKB 2020 1555 5555 55, quoting the invoice number.",
}
CUSTOMER = {
    "name": "Acme Corp",
    "email": "ap@acme.example",
    "address": "1 Main Street\nSpringfield",
    "tax_id": "US-99-1234567",
}

pytestmark = pytest.mark.django_db(transaction=True)


# --- the browser and plain HTTP ----------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    for program in (CHROMIUM, CHROMEDRIVER):
        assert Path(program).is_file(), "apt-get install chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-proxy-server",
        # Overlay scrollbars, as on a phone: the viewport keeps its whole width.
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


# No proxy from the environment between the tests and the live server.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, body=None, key: str | None = None):
    """(status, headers, body bytes) of one request; 4xx and 5xx answered, not raised."""
    data = None if body is None else json.dumps(body).encode()
    assert url.startswith("http://"), url
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (http, checked)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with OPENER.open(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


class Shop:
    """The seller's organization driven through the live server's API with an admin API key."""

    def __init__(self, base_url: str, key: str):
        self.base_url, self.key = base_url, key

    def call(self, method: str, path: str, body=None, expect: int = 200) -> dict:
        status, _, content = http(method, self.base_url + path, body, self.key)
        assert status == expect, (method, path, status, content[:2000])
        return json.loads(content) if content else {}

    def customer(self, **fields) -> int:
        return self.call("POST", "/api/customers/", {**CUSTOMER, **fields}, expect=201)["id"]

    def issue(self, customer: int, currency: str, lines: list[dict], **fields) -> dict:
        """A draft made, then sent (no email); the invoice as the API answers the send."""
        draft = self.call(
            "POST",
            "/api/invoices/",
            {"customer": customer, "currency": currency, "due_date": "2030-01-31", "lines": lines, **fields},
            expect=201,
        )
        return self.call("POST", f"/api/invoices/{draft['id']}/send/", {"email": False})

    def pay(self, invoice: dict, amount: str) -> dict:
        self.call(
            "POST",
            "/api/payments/",
            {"invoice": invoice["id"], "amount": amount, "method": "bank_transfer"},
            expect=201,
        )
        return self.call("GET", f"/api/invoices/{invoice['id']}/")


@pytest.fixture
def shop(live_server, alice_org):
    _, key = api_key_create(organization_id=alice_org.pk, name="browser test", role="admin")
    shop = Shop(live_server.url, key)
    shop.call("PATCH", "/api/organization/", SELLER)
    return shop


def line(description: str, quantity: str, unit_price: str, tax_rate: str = "0") -> dict:
    return {"description": description, "quantity": quantity, "unit_price": unit_price, "tax_rate": tax_rate}


# --- the page in the browser -------------------------------------------------------------------


def open_hosted(driver, invoice: dict, live_server, size=DESKTOP, *, check_layout: bool = True) -> str:
    """Open the invoice's hosted_url at `size` (and find no fault in its layout); its visible text."""
    url = invoice["hosted_url"]
    assert urlsplit(url).netloc == urlsplit(live_server.url).netloc, url
    assert re.fullmatch(r"/i/[A-Za-z0-9_-]{32,}/", urlsplit(url).path), url
    driver.set_window_size(*size)
    driver.get(url)
    WebDriverWait(driver, 20).until(expected_conditions.presence_of_element_located((By.TAG_NAME, "main")))
    assert driver.current_url == url
    if check_layout:
        assert layout_faults(driver) == []
    return driver.find_element(By.TAG_NAME, "body").text


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def screenshot(driver, path: Path) -> Path:
    """The viewport as a PNG at `path` (checked: a PNG of the window's size, not a blank few bytes),
    and beside it the whole page (`<name>-full.png`) to look at."""
    assert driver.save_screenshot(str(path))
    assert path.is_file()
    assert path.stat().st_size > 10_000, path.stat().st_size
    scale = driver.execute_script("return window.devicePixelRatio")
    width, height = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    assert png_size(path) == (round(width * scale), round(height * scale))
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    full = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1},
        },
    )
    path.with_name(f"{path.stem}-full.png").write_bytes(base64.b64decode(full["data"]))
    return path


# What a reader would see as broken, measured in the page: content wider than its box (text running
# out of its column, the page scrolling sideways) and amounts or other numbers split over two lines.
LAYOUT_FAULTS = """
const faults = [];
const width = document.documentElement.clientWidth;
if (document.documentElement.scrollWidth > width) {
  faults.push('page scrolls sideways: ' + document.documentElement.scrollWidth + ' > ' + width);
}
for (const e of document.querySelectorAll('body *')) {
  const box = e.getBoundingClientRect();
  if (box.width === 0) continue;
  if (box.right > width + 0.5) faults.push('sticks out: ' + e.tagName + '.' + e.className);
  if (e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0 && getComputedStyle(e).display !== 'inline') {
    faults.push('overflows its box: ' + e.tagName + '.' + e.className + ' ' + e.scrollWidth + ' > ' + e.clientWidth);
  }
}
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  for (const match of node.data.matchAll(/\\d[\\d,.]*\\d/g)) {
    const range = document.createRange();
    range.setStart(node, match.index);
    range.setEnd(node, match.index + match[0].length);
    const tops = new Set(Array.from(range.getClientRects()).filter(r => r.width > 0).map(r => Math.round(r.top)));
    if (tops.size > 1) faults.push('number split over lines: ' + match[0]);
  }
}
return faults;
"""


def layout_faults(driver) -> list[str]:
    return driver.execute_script(LAYOUT_FAULTS)


def assert_fits_a_phone(driver, tmp_path: Path, name: str) -> str:
    """At 390 x 844 the page is laid out for the phone's width: nothing scrolls sideways
    (scrollWidth <= innerWidth), no text runs out of its box, no number is split over two lines;
    screenshots saved; its visible text."""
    driver.set_window_size(*PHONE)
    try:
        inner_width = driver.execute_script("return window.innerWidth")
        assert inner_width == PHONE[0]
        assert driver.execute_script("return document.documentElement.scrollWidth") <= inner_width
        assert driver.execute_script("return document.documentElement.clientWidth") == inner_width
        # The phone layout is the one in use: the quantity, price and tax columns folded away.
        assert not any(
            cell.is_displayed() for cell in driver.find_elements(By.CSS_SELECTOR, "table.lines .wide")
        )
        screenshot(driver, tmp_path / f"{name}-phone.png")
        assert layout_faults(driver) == []
        return driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.set_window_size(*DESKTOP)


def line_rows(driver) -> list[str]:
    return [row.text for row in driver.find_elements(By.CSS_SELECTOR, "table.lines tbody tr")]


def total_row(driver, label: str) -> str:
    """The text of the totals table's row headed `label` ("Total", "Balance due", ...)."""
    for row in driver.find_elements(By.CSS_SELECTOR, "table.totals tr"):
        if row.find_element(By.TAG_NAME, "th").text == label:
            return row.find_element(By.TAG_NAME, "td").text
    raise AssertionError(f"no {label!r} row in the totals")


def words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z]+", text))


def assert_seller_and_customer(text: str) -> None:
    for expected in (
        SELLER["legal_name"],
        "Trading as Northwind",
        "12 Harbour Street",
        "Bristol BS1 4QA",
        "Tax ID: GB123456789",
        SELLER["email"],
        CUSTOMER["name"],
        "1 Main Street",
        "Springfield",
        "Tax ID: US-99-1234567",
    ):
        assert expected in text, expected


# --- the tests ---------------------------------------------------------------------------------


def test_a_dollar_invoice_shows_its_seller_customer_lines_and_balance(browser, live_server, shop, tmp_path):
    customer = shop.customer()
    invoice = shop.issue(
        customer,
        "USD",
        [
            line("Design sprint", "10", "100.00"),
            line("Hosting, March", "1", "150.00"),
            line("Support hours", "2", "42.25"),
        ],
    )
    invoice = shop.pay(invoice, "234.50")
    assert (invoice["status"], invoice["total"], invoice["balance_due"]) == ("sent", "1234.50", "1000.00")

    text = open_hosted(browser, invoice, live_server)

    assert_seller_and_customer(text)
    assert invoice["number"] in text
    assert f"Invoice {invoice['number']}" in text
    rows = line_rows(browser)
    assert len(rows) == 3
    for row, (description, quantity, unit_price, amount) in zip(
        rows,
        [
            ("Design sprint", "10", "$100.00", "$1,000.00"),
            ("Hosting, March", "1", "$150.00", "$150.00"),
            ("Support hours", "2", "$42.25", "$84.50"),
        ],
        strict=True,
    ):
        assert row.startswith(description), row
        assert row.split()[-4:] == [quantity, unit_price, "0%", amount], row
    assert total_row(browser, "Subtotal") == "$1,234.50"
    assert total_row(browser, "Total") == "$1,234.50"
    assert total_row(browser, "Amount paid") == "$234.50"
    assert total_row(browser, "Balance due") == "$1,000.00"
    assert browser.find_element(By.CSS_SELECTOR, ".amount-box .big").text == "$1,000.00"
    assert "Balance due by Jan 31, 2030" in text
    assert "HOW TO PAY" in text
    assert SELLER["invoice_footer"] in text
    assert not words(text) & {"PAID", "VOID", "DRAFT"}
    screenshot(browser, tmp_path / "hosted.png")

    phone = assert_fits_a_phone(browser, tmp_path, "hosted")
    # On a phone each line's quantity and price stand under its description.
    for detail in ("10 \u00d7 $100.00 · tax 0%", "1 \u00d7 $150.00 · tax 0%", "2 \u00d7 $42.25 · tax 0%"):
        assert detail in phone, detail
    for amount in ("$1,000.00", "$1,234.50", "$234.50"):
        assert amount in phone


def test_a_yen_invoice_is_written_without_decimals(browser, live_server, shop, tmp_path):
    invoice = shop.issue(shop.customer(), "JPY", [line("Localisation", "3", "333", "8")])
    assert (invoice["total"], invoice["balance_due"]) == ("1079", "1079")

    text = open_hosted(browser, invoice, live_server)

    assert_seller_and_customer(text)
    assert invoice["number"] in text
    (row,) = line_rows(browser)
    assert row.split() == ["Localisation", "3", "¥333", "8%", "¥999"]
    assert total_row(browser, "Subtotal") == "¥999"
    assert total_row(browser, "Tax 8%") == "¥80"
    assert total_row(browser, "Total") == "¥1,079"
    assert total_row(browser, "Balance due") == "¥1,079"
    assert browser.find_element(By.CSS_SELECTOR, ".amount-box .big").text == "¥1,079"
    assert not re.search(r"¥[\d,]+\.\d", text), "yen have no minor units"
    screenshot(browser, tmp_path / "hosted-jpy.png")
    assert "¥1,079" in assert_fits_a_phone(browser, tmp_path, "hosted-jpy")


def test_a_dinar_invoice_paid_in_full_says_paid(browser, live_server, shop, tmp_path):
    invoice = shop.issue(shop.customer(), "KWD", [line("Arabic translation, 1 page", "1", "0.525")])
    invoice = shop.pay(invoice, "0.525")
    assert (invoice["status"], invoice["total"], invoice["balance_due"]) == ("paid", "0.525", "0.000")

    text = open_hosted(browser, invoice, live_server)

    assert "PAID" in words(text)
    assert "Paid in full on" in text
    assert browser.find_element(By.CSS_SELECTOR, ".mark").text.startswith("PAID")
    assert_seller_and_customer(text)
    assert invoice["number"] in text
    (row,) = line_rows(browser)
    assert row.startswith("Arabic translation, 1 page"), row
    assert row.endswith("1 KWD 0.525 0% KWD 0.525"), row
    assert total_row(browser, "Total") == "KWD 0.525"
    assert total_row(browser, "Amount paid") == "KWD 0.525"
    assert total_row(browser, "Balance due") == "KWD 0.000"
    assert "VOID" not in words(text)
    assert "HOW TO PAY" not in text  # nothing left to pay: the footer stays, not as instructions
    screenshot(browser, tmp_path / "hosted-kwd-paid.png")
    phone = assert_fits_a_phone(browser, tmp_path, "hosted-kwd-paid")
    assert "PAID" in words(phone)
    assert "KWD 0.525" in phone


def test_a_void_invoice_says_void_and_asks_for_nothing(browser, live_server, shop, tmp_path):
    invoice = shop.issue(shop.customer(), "USD", [line("Workshop", "1", "640.00")])
    invoice = shop.call("POST", f"/api/invoices/{invoice['id']}/void/")
    assert invoice["status"] == "void"
    assert invoice["hosted_url"]

    text = open_hosted(browser, invoice, live_server)

    assert browser.find_element(By.CSS_SELECTOR, ".mark").text.startswith("VOID")
    assert "VOID" in words(text)
    assert "PAID" not in words(text)
    assert invoice["number"] in text
    assert_seller_and_customer(text)
    assert line_rows(browser)[0].split()[-4:] == ["1", "$640.00", "0%", "$640.00"]
    assert total_row(browser, "Total") == "$640.00"
    assert "Balance due by" not in text
    assert "HOW TO PAY" not in text
    screenshot(browser, tmp_path / "hosted-void.png")
    assert "VOID" in words(assert_fits_a_phone(browser, tmp_path, "hosted-void"))


def test_the_page_runs_no_script_is_not_indexed_and_shows_markup_as_text(
    browser, live_server, shop, tmp_path
):
    customer = shop.customer(name=HOSTILE_NAME, address=f"{HOSTILE_NAME}\n<img src=x onerror=alert(2)>")
    invoice = shop.issue(
        customer,
        "USD",
        [line(f"{HOSTILE_NAME} & <b>bold</b>", "1", "10.00")],
        notes="</p><script>alert(3)</script><a href='javascript:alert(4)'>x</a>",
    )

    text = open_hosted(browser, invoice, live_server)

    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert  # noqa: B018 (the property raises when no alert is open)
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert browser.find_elements(By.TAG_NAME, "b") == []
    assert browser.find_elements(By.CSS_SELECTOR, "a[href^='javascript']") == []
    assert browser.find_element(By.CSS_SELECTOR, ".customer-name").text == HOSTILE_NAME
    assert HOSTILE_NAME in text
    assert "<img src=x onerror=alert(2)>" in text
    assert f"{HOSTILE_NAME} & <b>bold</b>" in line_rows(browser)[0]
    assert "</p><script>alert(3)</script><a href='javascript:alert(4)'>x</a>" in text
    robots = browser.find_element(By.CSS_SELECTOR, "meta[name='robots']").get_attribute("content")
    assert "noindex" in [token.strip() for token in robots.split(",")]
    assert invoice["number"] in browser.title
    # The HTML as served has no script element either: the markup arrived escaped.
    status, _, html = http("GET", invoice["hosted_url"])
    assert status == 200
    assert b"<script" not in html.lower()
    assert b"&lt;script&gt;alert(1)&lt;/script&gt; &quot;Q&quot;" in html
    screenshot(browser, tmp_path / "hosted-hostile.png")
    assert_fits_a_phone(browser, tmp_path, "hosted-hostile")


def test_the_pdf_link_on_the_page_gives_the_invoice_as_a_pdf(browser, live_server, shop, tmp_path):
    invoice = shop.issue(
        shop.customer(),
        "USD",
        [line("Design sprint", "10", "100.00"), line("Support hours", "2", "42.25", "10")],
    )
    assert invoice["total"] == "1092.95"

    open_hosted(browser, invoice, live_server)
    (link,) = browser.find_elements(By.CSS_SELECTOR, "a[href$='/pdf/']")
    assert link.text == "Download PDF"
    href = link.get_attribute("href")
    assert href == invoice["hosted_url"] + "pdf/"
    assert urlsplit(href).netloc == urlsplit(live_server.url).netloc

    status, headers, pdf = http("GET", href)
    assert status == 200
    assert headers["Content-Type"] == "application/pdf"
    assert headers["Content-Disposition"] == f'inline; filename="{invoice["number"]}.pdf"'
    assert headers["X-Robots-Tag"].startswith("noindex")
    assert headers["Referrer-Policy"] == "no-referrer"
    assert pdf.startswith(b"%PDF")
    (tmp_path / "hosted.pdf").write_bytes(pdf)
    reader = PdfReader(io.BytesIO(pdf))
    text = "\n".join(page.extract_text() for page in reader.pages)
    assert invoice["number"] in text
    assert "$1,092.95" in text
    assert SELLER["legal_name"] in text
    # Asked again, the same (stored) document.
    assert http("GET", href)[2] == pdf


def test_the_page_headers_and_an_unknown_token(live_server, shop):
    invoice = shop.issue(shop.customer(), "USD", [line("Workshop", "1", "640.00")])

    status, headers, html = http("GET", invoice["hosted_url"])
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "noindex" in [token.strip() for token in headers["X-Robots-Tag"].split(",")]
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "private, no-store"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert invoice["number"].encode() in html

    token = urlsplit(invoice["hosted_url"]).path.split("/")[2]
    unknown = token[:-1] + ("A" if token[-1] != "A" else "B")
    for path in (f"/i/{unknown}/", f"/i/{unknown}/pdf/", "/i/x/", "/i/x/pdf/"):
        assert http("GET", live_server.url + path)[0] == 404, path
    # A draft has no page: its id is no token.
    draft = shop.call(
        "POST",
        "/api/invoices/",
        {"customer": shop.customer(), "due_date": "2030-01-31", "lines": [line("Later", "1", "5.00")]},
        expect=201,
    )
    assert draft["hosted_url"] is None
    assert http("GET", f"{live_server.url}/i/{draft['id']}/")[0] == 404


def test_long_names_addresses_and_amounts_still_fit_a_phone(browser, live_server, shop, tmp_path):
    """Long but ordinary values: a long legal name, a long accounts address, a long customer name and
    descriptions, eleven-digit dinar amounts."""
    shop.call(
        "PATCH",
        "/api/organization/",
        {
            "legal_name": "Northwind Creative Studio and Localisation Services Limited Liability Partnership",
            "email": "accounts-receivable.department@northwind-creative-studio.example",
            "invoice_prefix": "NW-2030/Q4-",
        },
    )
    customer = shop.customer(
        name="The Kuwait International Trading and Contracting Company W.L.L.",
        email="accounts.payable.invoices@kuwait-international-trading.example",
    )
    invoice = shop.issue(
        customer,
        "KWD",
        [
            line(
                "Arabic and English localisation of the full product catalogue, 2030 edition",
                "12.5",
                "81234.125",
            ),
            line("Project management, on site in Kuwait City, including travel", "1", "98765432.999", "5"),
        ],
    )
    assert invoice["total"] == "104719131.212"

    text = open_hosted(browser, invoice, live_server)

    assert invoice["number"] in text
    assert "KWD 104,719,131.212" in text
    screenshot(browser, tmp_path / "hosted-long.png")
    phone = assert_fits_a_phone(browser, tmp_path, "hosted-long")
    assert "KWD 104,719,131.212" in phone


def test_the_longest_values_still_fit_a_phone(browser, live_server, shop, tmp_path):
    """Every field at its longest with no place to break a line (a 200-character name, a
    500-character description, a 20-character number prefix, KWD's largest amount): the page
    still scrolls only downwards and no amount breaks, at a desktop's width and a phone's."""
    shop.call(
        "PATCH", "/api/organization/", {"legal_name": "L" * 200, "invoice_prefix": "NORTHWIND-2030/Q4-AB"}
    )
    customer = shop.customer(name="N" * 200, email=f"{'a' * 64}@{'b' * 60}.example", tax_id="T" * 50)
    invoice = shop.issue(
        customer,
        "KWD",
        [line("D" * 500, "1", "999999999999.000"), line("Rounding", "0.5", "1.998")],
    )
    assert invoice["total"] == "999999999999.999"

    text = open_hosted(browser, invoice, live_server, check_layout=False)

    assert invoice["number"] in text
    screenshot(browser, tmp_path / "hosted-longest.png")
    assert layout_faults(browser) == []
    phone = assert_fits_a_phone(browser, tmp_path, "hosted-longest")
    assert "KWD 999,999,999,999.999" in phone.replace("\n", " ")
