"""Money per currency (issue 14), through the API: every amount held and written with its currency's
ISO 4217 minor units (JPY 0, USD 2, KWD and BHD 3), refused with more, rounded half-up at each
exponent, summed per currency in the summary and kept exact in InvoiceTotals (in minor units).

Every expected value here is computed by hand, in the comments beside it.
"""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from invoices.models import Invoice, InvoiceTotals
from payments.ledger import ledger_mismatches
from payments.models import Payment
from tests.conftest import client_for, member_of, row_counts
from tests.invoice_helpers import (
    INVOICES,
    SUMMARY,
    invoice_payload,
    invoice_url,
    make_overdue,
    send_invoice,
    void_invoice,
)

pytestmark = pytest.mark.django_db

PAYMENTS = "/api/payments/"
MONEY_FIELDS = ("subtotal", "tax_total", "total", "amount_paid", "balance_due")
NO_STATUSES = {"draft": 0, "sent": 0, "overdue": 0, "paid": 0, "void": 0}


@pytest.fixture
def carol(alice_org):
    return member_of(alice_org, "carol", "member")


@pytest.fixture
def member_api(carol, alice_org):
    """A member's (not the owner's) token client of alice's organization."""
    return client_for(carol, alice_org)


@pytest.fixture
def customer(alice_org, make_customer):
    return make_customer(alice_org, name="Acme Corp")


def line(quantity: str, unit_price: str, tax_rate: str = "0", description: str = "Item") -> dict:
    return {"description": description, "quantity": quantity, "unit_price": unit_price, "tax_rate": tax_rate}


def post_invoice(api, customer, currency: str, lines: list[dict], **fields):
    return api.post(INVOICES, invoice_payload(customer, lines, currency=currency, **fields))


def create(api, customer, currency: str, lines: list[dict], **fields) -> dict:
    response = post_invoice(api, customer, currency, lines, **fields)
    assert response.status_code == 201, response.json()
    return response.json()


def pay(api, invoice_id: int, amount: str):
    return api.post(PAYMENTS, {"invoice": invoice_id, "amount": amount, "method": "bank_transfer"})


def paid(api, invoice_id: int, amount: str) -> dict:
    response = pay(api, invoice_id, amount)
    assert response.status_code == 201, response.json()
    return response.json()


def money_of(body: dict) -> dict:
    return {name: body[name] for name in MONEY_FIELDS}


def lines_of(body: dict) -> list[tuple]:
    return [
        (item["quantity"], item["unit_price"], item["tax_rate"], item["amount"], item["tax_amount"])
        for item in body["lines"]
    ]


def listed(api, invoice_id: int) -> dict:
    response = api.get(f"{INVOICES}?page_size=100")
    assert response.status_code == 200, response.json()
    (row,) = [item for item in response.json()["results"] if item["id"] == invoice_id]
    return row


def assert_list_agrees_with_detail(api, invoice_id: int) -> dict:
    detail = api.get(invoice_url(invoice_id))
    assert detail.status_code == 200, detail.json()
    detail = detail.json()
    row = listed(api, invoice_id)
    assert row == {name: detail[name] for name in row}
    assert set(detail) - set(row) == {"lines", "payments"}
    return detail


# --- 1. the whole life of an invoice in each exponent -----------------------------------------------

# (currency, lines sent, lines as written back, money after create, first payment, balance after it)
LIFE = [
    pytest.param(
        "JPY",
        [line("3", "250", "10"), line("1", "333")],
        # 3 x 250 = 750, tax 75; 1 x 333 = 333, tax 0
        [("3.000", "250", "10.00", "750", "75"), ("1.000", "333", "0.00", "333", "0")],
        # subtotal 750 + 333 = 1083, tax 75, total 1158
        {"subtotal": "1083", "tax_total": "75", "total": "1158", "amount_paid": "0", "balance_due": "1158"},
        "1000",
        "158",
        id="JPY-0",
    ),
    pytest.param(
        "USD",
        [line("2", "50.00", "8.25"), line("4", "0.0125")],
        # 2 x 50.00 = 100.00, tax 8.25; 4 x 0.0125 = 0.05, tax 0.00
        [("2.000", "50.00", "8.25", "100.00", "8.25"), ("4.000", "0.0125", "0.00", "0.05", "0.00")],
        # subtotal 100.05, tax 8.25, total 108.30
        {
            "subtotal": "100.05",
            "tax_total": "8.25",
            "total": "108.30",
            "amount_paid": "0.00",
            "balance_due": "108.30",
        },
        "100.01",
        "8.29",
        id="USD-2",
    ),
    pytest.param(
        "KWD",
        [line("2", "0.625"), line("1", "0.0125", "10")],
        # 2 x 0.625 = 1.250, tax 0; 1 x 0.0125 = 0.0125 -> 0.013 (half-up), tax 0.0013 -> 0.001
        [("2.000", "0.625", "0.00", "1.250", "0.000"), ("1.000", "0.0125", "10.00", "0.013", "0.001")],
        # subtotal 1.250 + 0.013 = 1.263, tax 0.001, total 1.264
        {
            "subtotal": "1.263",
            "tax_total": "0.001",
            "total": "1.264",
            "amount_paid": "0.000",
            "balance_due": "1.264",
        },
        "1.001",
        "0.263",
        id="KWD-3",
    ),
    pytest.param(
        "BHD",
        [line("4", "2.5", "5")],
        # 4 x 2.5 = 10.000, tax 0.500; the unit price written with the currency's 3 places
        [("4.000", "2.500", "5.00", "10.000", "0.500")],
        {
            "subtotal": "10.000",
            "tax_total": "0.500",
            "total": "10.500",
            "amount_paid": "0.000",
            "balance_due": "10.500",
        },
        "0.125",
        "10.375",
        id="BHD-3",
    ),
]


@pytest.mark.parametrize(("currency", "lines", "written", "created", "first", "balance"), LIFE)
def test_an_invoice_is_created_sent_and_paid_with_its_currencys_places(
    member_api, carol, customer, currency, lines, written, created, first, balance
):
    body = create(member_api, customer, currency, lines)
    invoice_id = body["id"]
    zero = created["amount_paid"]

    assert body["currency"] == currency
    assert lines_of(body) == written
    assert money_of(body) == created

    sent = send_invoice(member_api, invoice_id)
    assert (sent["status"], money_of(sent)) == ("sent", created)
    assert assert_list_agrees_with_detail(member_api, invoice_id)["lines"] == body["lines"]

    partial = paid(member_api, invoice_id, first)
    assert partial == {
        "id": partial["id"],
        "invoice": invoice_id,
        "amount": first,
        "currency": currency,
        "method": "bank_transfer",
        "reference": "",
        "paid_at": timezone.localdate().isoformat(),
        "created_by": {"type": "user", "id": carol.pk, "name": "carol"},
        "created_at": partial["created_at"],
        "invoice_status": "sent",
        "invoice_balance_due": balance,
    }
    detail = assert_list_agrees_with_detail(member_api, invoice_id)
    assert (detail["status"], detail["amount_paid"], detail["balance_due"]) == ("sent", first, balance)

    rest = paid(member_api, invoice_id, balance)
    assert (rest["amount"], rest["currency"], rest["invoice_status"], rest["invoice_balance_due"]) == (
        balance,
        currency,
        "paid",
        zero,
    )

    detail = assert_list_agrees_with_detail(member_api, invoice_id)
    assert detail["status"] == "paid"
    assert money_of(detail) == {**created, "amount_paid": created["total"], "balance_due": zero}
    assert lines_of(detail) == written
    assert [p["amount"] for p in detail["payments"]] == [first, balance]
    for payment_id, amount in ((partial["id"], first), (rest["id"], balance)):
        one = member_api.get(f"{PAYMENTS}{payment_id}/").json()
        assert (one["amount"], one["currency"]) == (amount, currency)
    listed_payments = member_api.get(f"{PAYMENTS}?invoice={invoice_id}").json()["results"]
    assert sorted((p["amount"], p["currency"]) for p in listed_payments) == sorted(
        [(first, currency), (balance, currency)]
    )
    invoice = Invoice.objects.get(pk=invoice_id)
    assert invoice.amount_paid == invoice.total == Decimal(created["total"])
    assert list(ledger_mismatches()) == []


def test_a_drafts_currency_change_computes_its_lines_again_at_the_new_places(member_api, customer):
    body = create(member_api, customer, "USD", [line("1", "12.50", "8")])
    # USD: 12.50, tax 1.00, total 13.50
    assert (lines_of(body), body["total"]) == ([("1.000", "12.50", "8.00", "12.50", "1.00")], "13.50")

    response = member_api.patch(invoice_url(body["id"]), {"currency": "JPY"})

    # JPY: 12.5 -> 13, tax 13 x 8 % = 1.04 -> 1, total 14
    assert response.status_code == 200, response.json()
    assert lines_of(response.json()) == [("1.000", "12.5", "8.00", "13", "1")]
    assert money_of(response.json()) == {
        "subtotal": "13",
        "tax_total": "1",
        "total": "14",
        "amount_paid": "0",
        "balance_due": "14",
    }

    response = member_api.patch(invoice_url(body["id"]), {"currency": "KWD"})

    # KWD: 12.500, tax 1.000, total 13.500 (the unit price was never rounded)
    assert response.status_code == 200, response.json()
    assert lines_of(response.json()) == [("1.000", "12.500", "8.00", "12.500", "1.000")]
    assert (response.json()["subtotal"], response.json()["total"]) == ("12.500", "13.500")
    assert assert_list_agrees_with_detail(member_api, body["id"])["total"] == "13.500"
    assert kept_totals() == {("KWD", "draft"): (1, 13500, 0)}
    assert list(ledger_mismatches()) == []


@pytest.mark.parametrize("currency", ["JPY", "USD", "KWD"])
def test_a_put_of_the_invoice_as_read_is_no_change(member_api, customer, currency):
    body = create(member_api, customer, currency, [line("3", "333", "8"), line("1.5", "0.0125")])
    writable = ("number", "customer", "currency", "issue_date", "due_date", "notes")
    read_back = {name: body[name] for name in writable if body[name] is not None} | {
        "lines": [
            {name: item[name] for name in ("description", "quantity", "unit_price", "tax_rate")}
            for item in body["lines"]
        ],
    }

    response = member_api.put(invoice_url(body["id"]), read_back)

    assert response.status_code == 200, response.json()
    assert response.json() == body


def test_the_organizations_default_currency_gives_a_new_invoice_its_places(alice_api, member_api, customer):
    assert alice_api.patch("/api/organization/", {"default_currency": "KWD"}).status_code == 200

    response = member_api.post(INVOICES, invoice_payload(customer, [line("1.5", "0.333", "5")]))

    assert response.status_code == 201, response.json()
    assert (response.json()["currency"], response.json()["total"]) == ("KWD", "0.525")


# --- 2. refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("CLF", id="CLF-4-places"),
        pytest.param("UYW", id="UYW-4-places"),
        pytest.param("XAU", id="XAU-no-minor-unit"),
        pytest.param("XDR", id="XDR-no-minor-unit"),
        pytest.param("XTS", id="XTS-testing"),
        pytest.param("XXX", id="XXX-no-currency"),
        pytest.param("HRK", id="HRK-withdrawn"),
        pytest.param("SLL", id="SLL-withdrawn"),
        pytest.param("ZWL", id="ZWL-withdrawn"),
        pytest.param("jpy", id="lowercase"),
    ],
)
def test_a_currency_that_is_not_money_with_0_to_3_places_is_refused(member_api, customer, code):
    before = row_counts()

    response = post_invoice(member_api, customer, code, [line("1", "100")])

    assert response.status_code == 400, response.json()
    assert list(response.json()) == ["currency"]
    assert row_counts() == before


@pytest.mark.parametrize("code", ["XCG", "ZWG"])
def test_new_currencies_are_taken(member_api, customer, code):
    body = create(member_api, customer, code, [line("1", "100")])

    assert body["currency"] == code
    assert (body["total"], body["lines"][0]["amount"]) == ("100.00", "100.00")  # both have 2 places
    assert Invoice.objects.get(pk=body["id"]).currency == code


@pytest.fixture
def sent_invoices(member_api, customer):
    """A sent invoice in each currency: JPY 5000, USD 50.00, KWD 5.000."""
    made = {}
    for currency, price in (("JPY", "5000"), ("USD", "50.00"), ("KWD", "5.000")):
        invoice_id = create(member_api, customer, currency, [line("1", price)])["id"]
        send_invoice(member_api, invoice_id)
        made[currency] = invoice_id
    return made


@pytest.mark.parametrize(
    ("currency", "amount"),
    [
        pytest.param("JPY", "12.5", id="JPY-1-place"),
        pytest.param("JPY", "1000.00", id="JPY-places-as-written"),
        pytest.param("JPY", "1000.0", id="JPY-one-zero-place"),
        pytest.param("USD", "0.001", id="USD-3-places"),
        pytest.param("USD", "10.000", id="USD-zero-third-place"),
        pytest.param("KWD", "1.2345", id="KWD-4-places"),
        pytest.param("KWD", "1.0000", id="KWD-zero-fourth-place"),
        pytest.param("JPY", "0", id="JPY-zero"),
        pytest.param("JPY", "0.001", id="JPY-a-thousandth"),
        pytest.param("KWD", "0.000", id="KWD-zero"),
        pytest.param("KWD", "0.0001", id="KWD-below-a-fils"),
    ],
)
def test_a_payment_with_more_places_than_its_currency_is_400_on_amount_and_writes_nothing(
    member_api, sent_invoices, currency, amount
):
    invoice_id = sent_invoices[currency]
    before = row_counts()

    response = pay(member_api, invoice_id, amount)

    assert response.status_code == 400, response.json()
    assert list(response.json()) == ["amount"]
    assert row_counts() == before
    invoice = Invoice.objects.get(pk=invoice_id)
    assert (invoice.status, invoice.amount_paid) == ("sent", Decimal(0))
    assert not Payment.objects.filter(invoice_id=invoice_id).exists()


@pytest.mark.parametrize(
    ("currency", "amount", "written", "balance"),
    [
        pytest.param("JPY", "1000", "1000", "4000", id="JPY"),
        pytest.param("JPY", "1", "1", "4999", id="JPY-one-yen"),
        pytest.param("USD", "0.01", "0.01", "49.99", id="USD-cent"),
        pytest.param("USD", "7", "7.00", "43.00", id="USD-fewer-places"),
        pytest.param("KWD", "1.234", "1.234", "3.766", id="KWD"),
        pytest.param("KWD", "0.001", "0.001", "4.999", id="KWD-one-fils"),
        pytest.param("KWD", "1.2", "1.200", "3.800", id="KWD-fewer-places"),
    ],
)
def test_a_payment_with_at_most_its_currencys_places_is_taken_and_written_with_them(
    member_api, sent_invoices, currency, amount, written, balance
):
    body = paid(member_api, sent_invoices[currency], amount)

    assert (body["amount"], body["currency"], body["invoice_balance_due"]) == (written, currency, balance)
    assert Invoice.objects.get(pk=sent_invoices[currency]).amount_paid == Decimal(amount)


@pytest.mark.parametrize(
    ("currency", "amount", "balance"),
    [
        pytest.param("JPY", "5001", "5000", id="JPY"),
        pytest.param("USD", "50.01", "50.00", id="USD"),
        pytest.param("KWD", "5.001", "5.000", id="KWD"),
    ],
)
def test_an_overpayment_by_one_minor_unit_is_400_on_amount(
    member_api, sent_invoices, currency, amount, balance
):
    before = row_counts()

    response = pay(member_api, sent_invoices[currency], amount)

    assert response.status_code == 400, response.json()
    assert list(response.json()) == ["amount"]
    assert balance in response.json()["amount"][0]
    assert row_counts() == before


@pytest.mark.parametrize("currency", ["JPY", "USD", "KWD"])
@pytest.mark.parametrize("unit_price", ["1.23456", "0.00001"])
def test_a_unit_price_with_5_places_is_400_on_lines(member_api, customer, currency, unit_price):
    before = row_counts()

    response = post_invoice(member_api, customer, currency, [line("1", unit_price)])

    assert response.status_code == 400, response.json()
    assert list(response.json()) == ["lines"]
    assert row_counts() == before


@pytest.mark.parametrize("currency", ["JPY", "USD", "KWD"])
def test_a_unit_price_with_4_places_is_taken_in_every_currency(member_api, customer, currency):
    body = create(member_api, customer, currency, [line("10000", "1.2345")])

    # 10000 x 1.2345 = 12345 (exact at every exponent)
    expected = {"JPY": "12345", "USD": "12345.00", "KWD": "12345.000"}[currency]
    assert (body["lines"][0]["unit_price"], body["lines"][0]["amount"], body["total"]) == (
        "1.2345",
        expected,
        expected,
    )


TOO_LARGE = [
    pytest.param("JPY", [line("2", "500000000000")], id="JPY-line-10^12"),
    pytest.param("JPY", [line("1", "500000000000"), line("1", "500000000000")], id="JPY-total-10^12"),
    pytest.param("JPY", [line("1", "999999999999.5")], id="JPY-line-rounds-to-10^12"),
    pytest.param("JPY", [line("1", "999999999999", "1")], id="JPY-tax-takes-line-over"),
    pytest.param("JPY", [line("1", "999999999999"), line("1", "1")], id="JPY-total-one-yen-over"),
    pytest.param("KWD", [line("2", "500000000000")], id="KWD-line-10^12"),
    pytest.param("KWD", [line("1", "500000000000"), line("1", "500000000000")], id="KWD-total-10^12"),
    pytest.param("KWD", [line("1", "999999999999.9995")], id="KWD-line-rounds-to-10^12"),
    pytest.param("KWD", [line("1", "999999999999.999"), line("1", "0.001")], id="KWD-total-one-fils-over"),
]


@pytest.mark.parametrize(("currency", "lines"), TOO_LARGE)
def test_a_line_or_total_reaching_10_to_the_12_in_the_major_unit_is_400_on_lines(
    member_api, customer, currency, lines
):
    before = row_counts()

    response = post_invoice(member_api, customer, currency, lines)

    assert response.status_code == 400, response.json()
    assert list(response.json()) == ["lines"]
    assert row_counts() == before


@pytest.mark.parametrize(
    ("currency", "lines", "total"),
    [
        pytest.param("JPY", [line("1", "999999999999")], "999999999999", id="JPY-one-line"),
        pytest.param(
            "JPY", [line("1", "500000000000"), line("1", "499999999999")], "999999999999", id="JPY-two-lines"
        ),
        pytest.param("KWD", [line("1", "999999999999.999")], "999999999999.999", id="KWD-one-line"),
        pytest.param(
            "KWD",
            [line("1", "500000000000"), line("1", "499999999999.999")],
            "999999999999.999",
            id="KWD-two-lines",
        ),
    ],
)
def test_the_largest_total_below_10_to_the_12_is_taken_sent_and_paid(
    member_api, customer, currency, lines, total
):
    body = create(member_api, customer, currency, lines)
    assert body["total"] == total
    send_invoice(member_api, body["id"])

    result = paid(member_api, body["id"], total)

    assert (result["amount"], result["invoice_status"]) == (total, "paid")
    assert Invoice.objects.get(pk=body["id"]).amount_paid == Decimal(total)
    assert list(ledger_mismatches()) == []


# --- 3. rounding half-up at each exponent -----------------------------------------------------------

ROUNDING = [
    pytest.param(
        "JPY",
        [
            line("3", "333", "8"),
            line("1", "12.5"),
            line("1", "12.4999"),
            line("2", "75", "3"),
            line("1", "0.5"),
        ],
        [
            ("3.000", "333", "8.00", "999", "80"),  # 999; tax 79.92 -> 80
            ("1.000", "12.5", "0.00", "13", "0"),  # 12.5 -> 13 (exactly half: up)
            ("1.000", "12.4999", "0.00", "12", "0"),  # 12.4999 -> 12
            ("2.000", "75", "3.00", "150", "5"),  # 150; tax 4.5 -> 5 (exactly half: up)
            ("1.000", "0.5", "0.00", "1", "0"),  # 0.5 -> 1
        ],
        # subtotal 999 + 13 + 12 + 150 + 1 = 1175; tax 80 + 5 = 85; total 1260
        ("1175", "85", "1260"),
        id="JPY-0",
    ),
    pytest.param(
        "USD",
        [line("1", "0.005"), line("1", "0.0049"), line("1.5", "0.67", "10"), line("1", "0.10", "5")],
        [
            ("1.000", "0.005", "0.00", "0.01", "0.00"),  # 0.005 -> 0.01
            ("1.000", "0.0049", "0.00", "0.00", "0.00"),  # 0.0049 -> 0.00
            ("1.500", "0.67", "10.00", "1.01", "0.10"),  # 1.005 -> 1.01; tax 0.101 -> 0.10
            ("1.000", "0.10", "5.00", "0.10", "0.01"),  # 0.10; tax 0.005 -> 0.01
        ],
        # subtotal 0.01 + 0.00 + 1.01 + 0.10 = 1.12; tax 0.10 + 0.01 = 0.11; total 1.23
        ("1.12", "0.11", "1.23"),
        id="USD-2",
    ),
    pytest.param(
        "KWD",
        [
            line("1.5", "0.333", "5"),
            line("1", "0.0005"),
            line("1", "0.0004"),
            line("3", "1.111", "2.5"),
            line("1", "0.010", "25"),
        ],
        [
            ("1.500", "0.333", "5.00", "0.500", "0.025"),  # 0.4995 -> 0.500; tax 0.025
            ("1.000", "0.0005", "0.00", "0.001", "0.000"),  # 0.0005 -> 0.001 (exactly half: up)
            ("1.000", "0.0004", "0.00", "0.000", "0.000"),  # 0.0004 -> 0.000
            ("3.000", "1.111", "2.50", "3.333", "0.083"),  # 3.333; tax 0.083325 -> 0.083
            ("1.000", "0.010", "25.00", "0.010", "0.003"),  # 0.010; tax 0.0025 -> 0.003 (half: up)
        ],
        # subtotal 0.500 + 0.001 + 0 + 3.333 + 0.010 = 3.844; tax 0.025 + 0.083 + 0.003 = 0.111; total 3.955
        ("3.844", "0.111", "3.955"),
        id="KWD-3",
    ),
    pytest.param(
        "BHD",
        [line("1", "0.0025", "50"), line("7", "0.1429", "10")],
        [
            ("1.000", "0.0025", "50.00", "0.003", "0.002"),  # 0.0025 -> 0.003; tax 0.0015 -> 0.002
            ("7.000", "0.1429", "10.00", "1.000", "0.100"),  # 1.0003 -> 1.000; tax 0.1
        ],
        # subtotal 0.003 + 1.000 = 1.003, tax 0.002 + 0.100 = 0.102, total 1.105
        ("1.003", "0.102", "1.105"),
        id="BHD-3",
    ),
]


@pytest.mark.parametrize(("currency", "lines", "written", "totals"), ROUNDING)
def test_line_amounts_and_taxes_round_half_up_to_the_currencys_places(
    member_api, customer, currency, lines, written, totals
):
    body = create(member_api, customer, currency, lines)

    assert lines_of(body) == written
    assert (body["subtotal"], body["tax_total"], body["total"]) == totals
    # The invoice's figures are the sums of its lines' (as written), and total = subtotal + tax.
    assert Decimal(body["subtotal"]) == sum(Decimal(item["amount"]) for item in body["lines"])
    assert Decimal(body["tax_total"]) == sum(Decimal(item["tax_amount"]) for item in body["lines"])
    assert Decimal(body["total"]) == Decimal(body["subtotal"]) + Decimal(body["tax_total"])
    invoice = Invoice.objects.get(pk=body["id"])
    assert (invoice.subtotal, invoice.tax_total, invoice.total) == tuple(Decimal(v) for v in totals)
    assert [(row.amount, row.tax_amount) for row in invoice.lines.order_by("position")] == [
        (Decimal(amount), Decimal(tax)) for *_, amount, tax in written
    ]
    sent = send_invoice(member_api, body["id"])
    assert (sent["subtotal"], sent["tax_total"], sent["total"]) == totals
    assert list(ledger_mismatches()) == []


# --- 4. the summary, a row per currency in its own places ------------------------------------------


def summary_row(currency, invoiced, collected, outstanding, overdue) -> dict:
    return {
        "currency": currency,
        "invoiced": invoiced,
        "collected": collected,
        "outstanding": outstanding,
        "overdue": overdue,
    }


@pytest.fixture
def book(member_api, customer):
    """Three currencies in one organization, by hand:

    | currency | status  | lines                 | total | paid  | balance |
    | JPY      | draft   | 1 x 100               |   100 |       |         | not invoiced
    | JPY      | sent    | 3 x 333 @ 8 %         |  1079 |   500 |     579 |
    | JPY      | overdue | 1 x 2000              |  2000 |       |    2000 |
    | USD      | sent    | 1 x 100.00            | 100.00| 40.00 |   60.00 |
    | USD      | overdue | 1 x 20.05             |  20.05|  0.05 |   20.00 |
    | USD      | paid    | 1 x 10.00             |  10.00| 10.00 |    0.00 |
    | KWD      | sent    | 1.5 x 0.333 @ 5 %     | 0.525 | 0.125 |   0.400 |
    | KWD      | overdue | 1 x 2.5               | 2.500 | 1.001 |   1.499 |
    | KWD      | void    | 1 x 9.999             | 9.999 |       |         | not invoiced

    JPY: invoiced 3079, collected 500, outstanding 2579, overdue 2000.
    USD: invoiced 130.05, collected 50.05, outstanding 80.00, overdue 20.00.
    KWD: invoiced 3.025, collected 1.126, outstanding 1.899, overdue 1.499.
    """
    rows = [
        ("JPY", "draft", [line("1", "100")], None),
        ("JPY", "sent", [line("3", "333", "8")], "500"),
        ("JPY", "overdue", [line("1", "2000")], None),
        ("USD", "sent", [line("1", "100.00")], "40.00"),
        ("USD", "overdue", [line("1", "20.05")], "0.05"),
        ("USD", "paid", [line("1", "10.00")], "10.00"),
        ("KWD", "sent", [line("1.5", "0.333", "5")], "0.125"),
        ("KWD", "overdue", [line("1", "2.5")], "1.001"),
        ("KWD", "void", [line("1", "9.999")], None),
    ]
    made = {}
    for currency, state, lines, amount in rows:
        invoice_id = create(member_api, customer, currency, lines)["id"]
        if state != "draft":
            send_invoice(member_api, invoice_id)
        if amount:
            paid(member_api, invoice_id, amount)
        if state == "overdue":
            make_overdue(invoice_id)
        if state == "void":
            void_invoice(member_api, invoice_id)
        assert Invoice.objects.get(pk=invoice_id).status == state
        made[(currency, state)] = invoice_id
    return made


JPY_ROW = summary_row("JPY", "3079", "500", "2579", "2000")
KWD_ROW = summary_row("KWD", "3.025", "1.126", "1.899", "1.499")
USD_ROW = summary_row("USD", "130.05", "50.05", "80.00", "20.00")
ALL_STATUSES = {"draft": 1, "sent": 3, "overdue": 3, "paid": 1, "void": 1}


def test_the_summary_writes_each_currencys_row_with_its_own_places(member_api, book):
    response = member_api.get(SUMMARY)  # the unfiltered path: read from InvoiceTotals

    assert response.status_code == 200
    assert response.json() == {"count": 9, "by_status": ALL_STATUSES, "totals": [JPY_ROW, KWD_ROW, USD_ROW]}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(
            "status=draft&status=sent&status=overdue&status=paid&status=void",
            {"count": 9, "by_status": ALL_STATUSES, "totals": [JPY_ROW, KWD_ROW, USD_ROW]},
            id="every-status",
        ),
        pytest.param(
            "currency=JPY",
            {
                "count": 3,
                "by_status": {**NO_STATUSES, "draft": 1, "sent": 1, "overdue": 1},
                "totals": [JPY_ROW],
            },
            id="JPY",
        ),
        pytest.param(
            "currency=KWD",
            {
                "count": 3,
                "by_status": {**NO_STATUSES, "sent": 1, "overdue": 1, "void": 1},
                "totals": [KWD_ROW],
            },
            id="KWD",
        ),
        pytest.param(
            "currency=USD",
            {
                "count": 3,
                "by_status": {**NO_STATUSES, "sent": 1, "overdue": 1, "paid": 1},
                "totals": [USD_ROW],
            },
            id="USD",
        ),
        pytest.param(
            "status=overdue",
            {
                "count": 3,
                "by_status": {**NO_STATUSES, "overdue": 3},
                "totals": [
                    summary_row("JPY", "2000", "0", "2000", "2000"),
                    summary_row("KWD", "2.500", "1.001", "1.499", "1.499"),
                    summary_row("USD", "20.05", "0.05", "20.00", "20.00"),
                ],
            },
            id="overdue",
        ),
        pytest.param(
            "status=draft&status=void",
            {
                "count": 2,
                "by_status": {**NO_STATUSES, "draft": 1, "void": 1},
                "totals": [
                    summary_row("JPY", "0", "0", "0", "0"),
                    summary_row("KWD", "0.000", "0.000", "0.000", "0.000"),
                ],
            },
            id="nothing-invoiced",
        ),
    ],
)
def test_a_filtered_summary_gives_the_same_rows(member_api, book, query, expected):
    response = member_api.get(f"{SUMMARY}?{query}")

    assert response.status_code == 200, response.json()
    assert response.json() == expected


def test_the_books_and_the_kept_totals_are_exact_after_every_flow(member_api, book):
    assert list(ledger_mismatches()) == []
    assert kept_totals() == {
        ("JPY", "draft"): (1, 100, 0),
        ("JPY", "sent"): (1, 1079, 500),
        ("JPY", "overdue"): (1, 2000, 0),
        ("KWD", "sent"): (1, 525, 125),
        ("KWD", "overdue"): (1, 2500, 1001),
        ("KWD", "void"): (1, 9999, 0),
        ("USD", "sent"): (1, 10000, 4000),
        ("USD", "overdue"): (1, 2005, 5),
        ("USD", "paid"): (1, 1000, 1000),
    }


# --- 5. the kept totals in minor units --------------------------------------------------------------


def kept_totals() -> dict[tuple[str, str], tuple[int, int, int]]:
    """InvoiceTotals added up over its shards: (currency, status) -> (count, total, paid), each sum
    an integer in the currency's minor unit."""
    rows = (
        InvoiceTotals.objects.values_list("currency", "status")
        .annotate(n=Sum("count"), total=Sum("total_minor"), paid=Sum("paid_minor"))
        .order_by("currency", "status")
    )
    kept = {}
    for currency, status, n, total, paid_ in rows:
        for value in (total, paid_):
            assert Decimal(value) == Decimal(value).to_integral_value(), (currency, status, value)
        if n:
            kept[(currency, status)] = (int(n), int(total), int(paid_))
    for value in InvoiceTotals.objects.values_list("total_minor", flat=True):
        assert Decimal(value) == Decimal(value).to_integral_value()
    return kept


def test_invoice_totals_hold_integers_in_each_currencys_minor_unit(member_api, customer):
    yen = create(member_api, customer, "JPY", [line("3", "333", "8")])["id"]  # 1079 yen
    fils = create(member_api, customer, "KWD", [line("1.5", "0.333", "5")])["id"]  # 0.525 KWD
    cents = create(member_api, customer, "USD", [line("2", "50.00", "8.25"), line("4", "0.0125")])[
        "id"
    ]  # 108.30

    assert kept_totals() == {
        ("JPY", "draft"): (1, 1079, 0),
        ("KWD", "draft"): (1, 525, 0),
        ("USD", "draft"): (1, 10830, 0),
    }

    for invoice_id in (yen, fils, cents):
        send_invoice(member_api, invoice_id)
    paid(member_api, yen, "79")
    paid(member_api, fils, "0.125")
    paid(member_api, cents, "0.30")
    assert kept_totals() == {
        ("JPY", "sent"): (1, 1079, 79),
        ("KWD", "sent"): (1, 525, 125),
        ("USD", "sent"): (1, 10830, 30),
    }
    assert list(ledger_mismatches()) == []

    paid(member_api, yen, "1000")
    paid(member_api, fils, "0.400")
    paid(member_api, cents, "108.00")
    assert kept_totals() == {
        ("JPY", "paid"): (1, 1079, 1079),
        ("KWD", "paid"): (1, 525, 525),
        ("USD", "paid"): (1, 10830, 10830),
    }
    assert list(ledger_mismatches()) == []
    assert member_api.get(SUMMARY).json()["totals"] == [
        summary_row("JPY", "1079", "1079", "0", "0"),
        summary_row("KWD", "0.525", "0.525", "0.000", "0.000"),
        summary_row("USD", "108.30", "108.30", "0.00", "0.00"),
    ]


def test_mark_overdue_keeps_the_totals_exact_in_minor_units(member_api, customer):
    past = {"issue_date": "2020-01-01", "due_date": "2020-01-02"}
    yen = create(member_api, customer, "JPY", [line("1", "1079")], **past)["id"]
    fils = create(member_api, customer, "KWD", [line("1", "0.525")], **past)["id"]
    for invoice_id in (yen, fils):
        send_invoice(member_api, invoice_id)
    paid(member_api, fils, "0.001")

    call_command("mark_overdue", stdout=StringIO())

    assert set(Invoice.objects.values_list("status", flat=True)) == {"overdue"}
    assert kept_totals() == {("JPY", "overdue"): (1, 1079, 0), ("KWD", "overdue"): (1, 525, 1)}
    assert list(ledger_mismatches()) == []
    assert member_api.get(SUMMARY).json()["totals"] == [
        summary_row("JPY", "1079", "0", "1079", "1079"),
        summary_row("KWD", "0.525", "0.001", "0.524", "0.524"),
    ]


# --- 6. total filters with 3-place bounds -----------------------------------------------------------


@pytest.fixture
def kwd_invoices(member_api, customer):
    """KWD invoices of 0.525, 1.250 and 1.251 (drafts: the filters read every status)."""
    return {
        total: create(member_api, customer, "KWD", [line("1", total)])["id"]
        for total in ("0.525", "1.250", "1.251")
    }


@pytest.mark.parametrize(
    ("query", "totals"),
    [
        ("total_min=1.250", {"1.250", "1.251"}),
        ("total_min=1.251", {"1.251"}),
        ("total_min=1.2505", {"1.251"}),  # a bound finer than the currency: rounded inwards
        ("total_min=1.252", set()),
        ("total_max=1.250", {"0.525", "1.250"}),
        ("total_max=1.2509", {"0.525", "1.250"}),
        ("total_max=0.524", set()),
        ("total_min=0.525&total_max=0.525", {"0.525"}),
        ("total_min=0.526&total_max=1.250", {"1.250"}),
        ("total_min=0.5&total_max=1.3", {"0.525", "1.250", "1.251"}),
    ],
)
def test_total_bounds_with_3_places_select_kwd_invoices_exactly(member_api, kwd_invoices, query, totals):
    response = member_api.get(f"{INVOICES}?{query}")

    assert response.status_code == 200, response.json()
    assert {item["total"] for item in response.json()["results"]} == totals
    assert {item["id"] for item in response.json()["results"]} == {kwd_invoices[t] for t in totals}
    summary = member_api.get(f"{SUMMARY}?{query}").json()
    assert summary["count"] == len(totals)
    assert summary["by_status"] == {**NO_STATUSES, "draft": len(totals)}
