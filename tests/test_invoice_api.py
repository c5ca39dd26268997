"""The invoice endpoints: create, read, edit and delete a draft, with exact money and strict validation."""

import json
from decimal import Decimal
from unittest.mock import ANY

import pytest

from invoices.models import Invoice, Line
from tests.factories import LinePayloadFactory, org
from tests.invoice_helpers import (
    INVOICES,
    MISSING,
    create_invoice,
    ids,
    in_days,
    invoice_payload,
    invoice_url,
    iso,
    line_ids,
    line_rows,
    money,
    send_invoice,
    today,
)
from tests.schema_helpers import request_schema

pytestmark = pytest.mark.django_db


# --- create -----------------------------------------------------------------------------------------


def test_create_draft_returns_the_full_detail_with_computed_money(alice_api, alice, alice_customer):
    payload = {
        "customer": alice_customer.pk,
        "issue_date": "2026-11-02",
        "due_date": "2026-12-02",
        "currency": "EUR",
        "notes": "Thank you for your business",
        "lines": [
            {"description": "Design", "quantity": "3", "unit_price": "19.99", "tax_rate": "8.25"},
            {"description": "Hosting", "quantity": "1.5", "unit_price": "33.33"},
        ],
    }

    response = alice_api.post(INVOICES, payload)

    assert response.status_code == 201, response.json()
    invoice = Invoice.objects.get()
    first, second = line_ids(invoice.pk)
    assert response.json() == {
        "id": invoice.pk,
        "number": None,
        "customer": alice_customer.pk,
        "customer_name": "Acme Corp",
        "status": "draft",
        "currency": "EUR",
        "issue_date": "2026-11-02",
        "due_date": "2026-12-02",
        "notes": "Thank you for your business",
        "lines": [
            {
                "id": first,
                "description": "Design",
                "quantity": "3.000",
                "unit_price": "19.99",
                "tax_rate": "8.25",
                "amount": "59.97",
                "tax_amount": "4.95",
            },
            {
                "id": second,
                "description": "Hosting",
                "quantity": "1.500",
                "unit_price": "33.33",
                "tax_rate": "0.00",
                "amount": "50.00",
                "tax_amount": "0.00",
            },
        ],
        "subtotal": "109.97",
        "tax_total": "4.95",
        "total": "114.92",
        "amount_paid": "0.00",
        "balance_due": "114.92",
        "available_actions": ["edit", "delete", "send"],
        "hosted_url": None,  # a draft has no hosted page
        "pdf_url": f"http://testserver/api/invoices/{invoice.pk}/pdf/",
        "created_by": {"type": "user", "id": alice.pk, "name": "alice"},
        "payments": [],
        "sent_at": None,
        "paid_at": None,
        "created_at": iso(invoice.created_at),
        "updated_at": iso(invoice.updated_at),
    }
    assert invoice.organization == org(alice)
    assert invoice.customer == alice_customer
    assert (invoice.status, invoice.number, invoice.currency) == ("draft", None, "EUR")
    assert money(invoice) == (
        Decimal("109.97"),
        Decimal("4.95"),
        Decimal("114.92"),
        Decimal("0.00"),
        Decimal("114.92"),
    )
    assert line_rows(invoice.pk) == [
        ("Design", Decimal("3"), Decimal("19.99"), Decimal("8.25"), Decimal("59.97"), Decimal("4.95")),
        ("Hosting", Decimal("1.5"), Decimal("33.33"), Decimal("0"), Decimal("50.00"), Decimal("0.00")),
    ]


def test_create_needs_only_a_customer(alice_api, alice_customer):
    """The rest defaults by the organization's settings (tests/test_organization_behaviour.py): its
    default currency, its today, its payment terms (30 days unless changed)."""
    response = alice_api.post(INVOICES, {"customer": alice_customer.pk})

    assert response.status_code == 201, response.json()
    body = response.json()
    keys = ("number", "currency", "issue_date", "due_date", "notes", "lines", "payments")
    assert {k: body[k] for k in keys} == {
        "number": None,
        "currency": "USD",
        "issue_date": today().isoformat(),
        "due_date": in_days(30),
        "notes": "",
        "lines": [],
        "payments": [],
    }
    assert [body[k] for k in ("subtotal", "tax_total", "total", "amount_paid", "balance_due")] == ["0.00"] * 5
    invoice = Invoice.objects.get(pk=body["id"])
    assert (invoice.currency, invoice.issue_date, invoice.total) == ("USD", today(), Decimal("0.00"))
    assert not Line.objects.exists()


def test_create_keeps_a_client_given_number(alice_api, alice_customer):
    body = create_invoice(alice_api, alice_customer, number="ACME/2026/7")

    assert body["number"] == "ACME/2026/7"
    assert Invoice.objects.get(pk=body["id"]).number == "ACME/2026/7"


@pytest.mark.parametrize(
    ("quantity", "unit_price", "tax_rate", "amount", "tax_amount"),
    [
        ("3", "19.99", "8.25", "59.97", "4.95"),  # tax 4.947525
        ("1.5", "33.33", "0", "50.00", "0.00"),  # amount 49.995
        ("1", "0.10", "5", "0.10", "0.01"),  # tax 0.005
        ("2.125", "1.00", "0", "2.13", "0.00"),  # half-up, not half-even (2.12)
        ("0.25", "1.00", "10", "0.25", "0.03"),  # tax 0.025, half-up, not half-even (0.02)
        ("0.001", "0.01", "100", "0.00", "0.00"),
        ("7", "0.00", "20", "0.00", "0.00"),
        ("2", "10.00", "100", "20.00", "20.00"),
        ("1", "999999999999.99", "0", "999999999999.99", "0.00"),  # the largest total a column holds
    ],
)
def test_line_money_is_rounded_half_up_to_cents(
    alice_api, alice_customer, quantity, unit_price, tax_rate, amount, tax_amount
):
    body = create_invoice(
        alice_api,
        alice_customer,
        [LinePayloadFactory(quantity=quantity, unit_price=unit_price, tax_rate=tax_rate)],
    )

    total = str(Decimal(amount) + Decimal(tax_amount))
    assert (body["lines"][0]["amount"], body["lines"][0]["tax_amount"]) == (amount, tax_amount)
    assert (body["subtotal"], body["tax_total"], body["total"], body["balance_due"]) == (
        amount,
        tax_amount,
        total,
        total,
    )
    invoice = Invoice.objects.get(pk=body["id"])
    assert (invoice.subtotal, invoice.tax_total, invoice.total) == (
        Decimal(amount),
        Decimal(tax_amount),
        Decimal(total),
    )


def test_totals_are_sums_of_the_rounded_lines(alice_api, alice_customer):
    # Each line's tax is 0.005 -> 0.01; rounding the summed tax (0.015) would give 0.02, not 0.03.
    body = create_invoice(
        alice_api, alice_customer, [LinePayloadFactory(quantity="1", unit_price="0.10", tax_rate="5")] * 3
    )

    assert [(x["amount"], x["tax_amount"]) for x in body["lines"]] == [("0.10", "0.01")] * 3
    assert (body["subtotal"], body["tax_total"], body["total"]) == ("0.30", "0.03", "0.33")


def test_read_only_fields_in_a_create_body_are_ignored(alice_api, alice_customer):
    payload = invoice_payload(
        alice_customer,
        [{**LinePayloadFactory(unit_price="10.00"), "amount": "999.00", "tax_amount": "9.00"}],
        subtotal="1.00",
        tax_total="1.00",
        total="1.00",
        amount_paid="10.00",
        balance_due="0.00",
        available_actions=["void"],
        sent_at="2020-01-01T00:00:00Z",
        paid_at="2020-01-01T00:00:00Z",
        payments=[{"amount": "10.00"}],
    )

    response = alice_api.post(INVOICES, payload)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["lines"][0]["amount"] == "10.00"
    assert body["lines"][0]["tax_amount"] == "0.00"
    assert {k: body[k] for k in ("subtotal", "tax_total", "total", "amount_paid", "balance_due")} == {
        "subtotal": "10.00",
        "tax_total": "0.00",
        "total": "10.00",
        "amount_paid": "0.00",
        "balance_due": "10.00",
    }
    assert (body["available_actions"], body["sent_at"], body["paid_at"], body["payments"]) == (
        ["edit", "delete", "send"],
        None,
        None,
        [],
    )
    invoice = Invoice.objects.get(pk=body["id"])
    assert (invoice.total, invoice.amount_paid, invoice.sent_at, invoice.paid_at) == (
        Decimal("10.00"),
        Decimal("0.00"),
        None,
        None,
    )


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"issue_date": "2026-03-10", "due_date": "2026-03-10"}, id="due-on-issue-date"),
        pytest.param({"currency": "JPY"}, id="jpy"),
        pytest.param({"currency": "EUR"}, id="eur"),
        pytest.param({"lines": []}, id="no-lines"),
        pytest.param({"lines": [LinePayloadFactory(quantity="0.001")]}, id="smallest-quantity"),
        pytest.param({"lines": [LinePayloadFactory(unit_price="0")]}, id="free-line"),
        pytest.param({"lines": [LinePayloadFactory(unit_price="0.0125")]}, id="unit-price-4-places"),
        pytest.param(
            {"currency": "JPY", "lines": [LinePayloadFactory(unit_price="333.5")]}, id="jpy-unit-price-places"
        ),
        pytest.param({"lines": [LinePayloadFactory(tax_rate="100")]}, id="tax-100"),
        pytest.param({"lines": [LinePayloadFactory(tax_rate="0")]}, id="tax-0"),
    ],
)
def test_create_accepts_boundary_values(alice_api, alice_customer, fields):
    response = alice_api.post(INVOICES, invoice_payload(alice_customer, **fields))

    assert response.status_code == 201, response.json()
    assert Invoice.objects.count() == 1


def _line_case(field: str, value, line_field: str | None = None, **overrides):
    bad = {**LinePayloadFactory(), **overrides}
    if value is MISSING:
        del bad[field]
    else:
        bad[field] = value
    return {"lines": [LinePayloadFactory(), bad]}, "lines", line_field or field


INVALID_CREATES = {
    "customer-missing": ({"customer": MISSING}, "customer", None),
    "customer-null": ({"customer": None}, "customer", None),
    "customer-true": ({"customer": True}, "customer", None),
    "customer-garbage": ({"customer": "abc"}, "customer", None),
    "customer-unknown": ({"customer": 10**12}, "customer", None),
    "customer-list": ({"customer": [1]}, "customer", None),
    "due-date-null": ({"due_date": None}, "due_date", None),
    "due-date-impossible": ({"due_date": "2026-02-30"}, "due_date", None),
    "due-before-issue": ({"issue_date": "2026-03-10", "due_date": "2026-03-09"}, "due_date", None),
    "issue-date-garbage": ({"issue_date": "yesterday"}, "issue_date", None),
    "currency-lowercase": ({"currency": "usd"}, "currency", None),
    "currency-unknown": ({"currency": "ABC"}, "currency", None),
    "currency-two-letters": ({"currency": "US"}, "currency", None),
    "currency-blank": ({"currency": ""}, "currency", None),
    "currency-number": ({"currency": 123}, "currency", None),
    "currency-long": ({"currency": "EURO"}, "currency", None),
    "notes-object": ({"notes": {"a": 1}}, "notes", None),
    "notes-nul-byte": ({"notes": "a\x00b"}, "notes", None),
    "number-nul-byte": ({"number": "INV\x001"}, "number", None),
    "number-huge": ({"number": "N" * 1000}, "number", None),
    "number-object": ({"number": {"n": 1}}, "number", None),
    "lines-string": ({"lines": "abc"}, "lines", None),
    "lines-of-strings": ({"lines": ["abc"]}, "lines", None),
    "quantity-zero": _line_case("quantity", "0"),
    "quantity-negative": _line_case("quantity", "-1"),
    "quantity-4-places": _line_case("quantity", "1.0001"),
    "quantity-garbage": _line_case("quantity", "abc"),
    "quantity-nan": _line_case("quantity", "NaN"),
    "quantity-infinity": _line_case("quantity", "Infinity"),
    "quantity-minus-infinity": _line_case("quantity", "-Infinity"),
    "quantity-blank": _line_case("quantity", ""),
    "quantity-null": _line_case("quantity", None),
    "quantity-missing": _line_case("quantity", MISSING),
    "unit-price-negative": _line_case("unit_price", "-0.01"),
    "unit-price-5-places": _line_case("unit_price", "1.00001"),  # at most 4, in any currency
    "unit-price-garbage": _line_case("unit_price", "ten"),
    "unit-price-nan": _line_case("unit_price", "NaN"),
    "unit-price-infinity": _line_case("unit_price", "Infinity"),
    "unit-price-exponent": _line_case("unit_price", "1e400"),
    "unit-price-missing": _line_case("unit_price", MISSING),
    "tax-over-100": _line_case("tax_rate", "100.01"),
    "tax-negative": _line_case("tax_rate", "-0.01"),
    "tax-3-places": _line_case("tax_rate", "8.125"),
    "tax-garbage": _line_case("tax_rate", "high"),
    "tax-nan": _line_case("tax_rate", "NaN"),
    "description-missing": _line_case("description", MISSING),
    "description-blank": _line_case("description", ""),
    "description-spaces": _line_case("description", "   "),
    "description-null": _line_case("description", None),
    "description-nul-byte": _line_case("description", "Nul\x00byte"),
    # Amounts a 14-digit column cannot hold: 400, never a database error.
    "amount-overflow": (
        {"lines": [LinePayloadFactory(quantity="999999999.999", unit_price="999999999999.99")]},
        None,
        None,
    ),
    "quantity-overflow": (
        {"lines": [LinePayloadFactory(quantity="10000000000000", unit_price="1.00")]},
        None,
        None,
    ),
    "unit-price-overflow": ({"lines": [LinePayloadFactory(unit_price="10000000000000.00")]}, None, None),
    "subtotal-overflow": ({"lines": [LinePayloadFactory(unit_price="600000000000.00")] * 2}, None, None),
    "total-overflow": (
        {"lines": [LinePayloadFactory(unit_price="999999999999.99", tax_rate="100")]},
        None,
        None,
    ),
}


@pytest.mark.parametrize(("overrides", "field", "line_field"), INVALID_CREATES.values(), ids=INVALID_CREATES)
def test_create_rejects_invalid_input_and_writes_nothing(
    alice_api, alice_customer, overrides, field, line_field
):
    payload = invoice_payload(alice_customer)
    for key, value in overrides.items():
        if value is MISSING:
            del payload[key]
        else:
            payload[key] = value

    response = alice_api.post(INVOICES, payload)

    assert response.status_code == 400, response.json()
    body = response.json()
    if field is not None:
        assert field in body
    if line_field:
        # DRF's nested-list shape: one error dict per line, {} for the valid ones.
        assert body["lines"][0] == {}
        assert line_field in body["lines"][1]
    assert Invoice.objects.count() == 0
    assert Line.objects.count() == 0


def test_create_rejects_json_nan_literals(alice_api, alice_customer):
    raw = json.dumps(invoice_payload(alice_customer, [LinePayloadFactory(quantity=float("nan"))]))

    response = alice_api.post(INVOICES, raw, content_type="application/json")

    assert response.status_code == 400
    assert not Invoice.objects.exists()


def test_create_accepts_500_lines_but_not_501(alice_api, alice_customer):
    too_many = alice_api.post(
        INVOICES, invoice_payload(alice_customer, [LinePayloadFactory(unit_price="1.00")] * 501)
    )

    assert too_many.status_code == 400
    assert "lines" in too_many.json()
    assert not Invoice.objects.exists()
    assert not Line.objects.exists()

    body = create_invoice(alice_api, alice_customer, [LinePayloadFactory(unit_price="1.00")] * 500)

    assert len(body["lines"]) == 500
    assert body["total"] == "500.00"
    assert Line.objects.filter(invoice_id=body["id"]).count() == 500


def test_create_rejects_another_users_customer(bob_api, alice_customer):
    response = bob_api.post(INVOICES, invoice_payload(alice_customer))

    assert response.status_code == 400
    assert set(response.json()) == {"customer"}
    assert not Invoice.objects.exists()


# --- status is never written by a client ------------------------------------------------------------


# A status sent with the invoice's current one ("draft" for a new invoice) is no change: see
# tests/test_invoice_lifecycle.py. Any other value is refused.
@pytest.mark.parametrize("value", ["sent", "paid", "bogus", None])
@pytest.mark.parametrize("method", ["post", "put", "patch"])
def test_a_status_change_in_a_body_is_rejected(alice_api, alice_customer, method, value):
    if method == "post":
        response = alice_api.post(INVOICES, invoice_payload(alice_customer, status=value))

        assert response.status_code == 400
        assert "status" in response.json()
        assert not Invoice.objects.exists()
        return

    draft = create_invoice(alice_api, alice_customer)
    body = invoice_payload(alice_customer, notes="changed", status=value)
    if method == "patch":
        body = {"notes": "changed", "status": value}

    response = getattr(alice_api, method)(invoice_url(draft["id"]), body)

    assert response.status_code == 400
    assert "status" in response.json()
    invoice = Invoice.objects.get(pk=draft["id"])
    assert (invoice.status, invoice.notes) == ("draft", "")


# --- read --------------------------------------------------------------------------------------------


def test_retrieve_returns_the_detail_as_created(alice_api, alice_customer):
    created = create_invoice(
        alice_api, alice_customer, [LinePayloadFactory(), LinePayloadFactory(description="Support")]
    )

    response = alice_api.get(invoice_url(created["id"]))

    assert response.status_code == 200
    assert response.json() == created


def test_list_items_are_the_detail_without_lines_and_payments(alice_api, alice_customer):
    created = create_invoice(alice_api, alice_customer, [LinePayloadFactory(tax_rate="10")], notes="n")

    response = alice_api.get(INVOICES)

    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (1, None, None)
    expected = {k: v for k, v in created.items() if k not in ("lines", "payments")}
    assert body["results"] == [expected]


def test_list_is_newest_first(alice_api, alice_customer):
    created = [create_invoice(alice_api, alice_customer)["id"] for _ in range(3)]

    assert ids(alice_api.get(INVOICES)) == created[::-1]


# --- edit and delete a draft -------------------------------------------------------------------------


def test_put_replaces_a_draft_and_its_lines_whole(alice_api, alice_customer, other_customer):
    draft = create_invoice(
        alice_api, alice_customer, [LinePayloadFactory(), LinePayloadFactory(description="Support")]
    )
    old_lines = line_ids(draft["id"])
    payload = {
        "customer": other_customer.pk,
        "number": "Q-1",
        "currency": "GBP",
        "issue_date": "2026-10-01",
        "due_date": "2026-10-31",
        "notes": "Net 30",
        "lines": [LinePayloadFactory(description="Audit", quantity="2", unit_price="45.00", tax_rate="20")],
    }

    response = alice_api.put(invoice_url(draft["id"]), payload)

    assert response.status_code == 200, response.json()
    (new_line,) = line_ids(draft["id"])
    assert new_line not in old_lines
    body = response.json()
    assert body == {
        **draft,
        "customer": other_customer.pk,
        "customer_name": "Globex",
        "number": "Q-1",
        "currency": "GBP",
        "issue_date": "2026-10-01",
        "due_date": "2026-10-31",
        "notes": "Net 30",
        "lines": [
            {
                "id": new_line,
                "description": "Audit",
                "quantity": "2.000",
                "unit_price": "45.00",
                "tax_rate": "20.00",
                "amount": "90.00",
                "tax_amount": "18.00",
            }
        ],
        "subtotal": "90.00",
        "tax_total": "18.00",
        "total": "108.00",
        "balance_due": "108.00",
        "updated_at": ANY,
    }
    invoice = Invoice.objects.get(pk=draft["id"])
    assert (invoice.customer, invoice.number, invoice.currency, invoice.notes) == (
        other_customer,
        "Q-1",
        "GBP",
        "Net 30",
    )
    assert str(invoice.due_date) == "2026-10-31"
    assert invoice.total == Decimal("108.00")
    assert not Line.objects.filter(pk__in=old_lines).exists()


def test_patch_without_lines_keeps_the_lines(alice_api, alice_customer):
    draft = create_invoice(
        alice_api, alice_customer, [LinePayloadFactory(), LinePayloadFactory(description="Support")]
    )
    before = line_ids(draft["id"])

    response = alice_api.patch(invoice_url(draft["id"]), {"notes": "Please pay by transfer"})

    assert response.status_code == 200
    assert response.json() == {**draft, "notes": "Please pay by transfer", "updated_at": ANY}
    assert line_ids(draft["id"]) == before
    assert Invoice.objects.get(pk=draft["id"]).notes == "Please pay by transfer"


def test_patch_with_empty_lines_removes_them_all(alice_api, alice_customer):
    draft = create_invoice(alice_api, alice_customer, [LinePayloadFactory(), LinePayloadFactory()])

    response = alice_api.patch(invoice_url(draft["id"]), {"lines": []})

    assert response.status_code == 200
    body = response.json()
    assert (body["lines"], body["subtotal"], body["total"], body["balance_due"]) == (
        [],
        "0.00",
        "0.00",
        "0.00",
    )
    assert not Line.objects.exists()
    assert Invoice.objects.get(pk=draft["id"]).total == Decimal("0.00")


def test_an_invalid_edit_leaves_the_draft_untouched(alice_api, alice_customer):
    draft = create_invoice(
        alice_api, alice_customer, [LinePayloadFactory(), LinePayloadFactory(description="Support")]
    )
    before = line_rows(draft["id"])

    response = alice_api.patch(
        invoice_url(draft["id"]),
        {
            "notes": "changed",
            "lines": [LinePayloadFactory(unit_price="5.00"), LinePayloadFactory(quantity="0")],
        },
    )

    assert response.status_code == 400
    assert "lines" in response.json()
    assert line_rows(draft["id"]) == before
    invoice = Invoice.objects.get(pk=draft["id"])
    assert (invoice.notes, invoice.total) == ("", Decimal("200.00"))


@pytest.mark.parametrize("body", [{"due_date": "2026-06-09"}, {"issue_date": "2026-07-01"}])
def test_an_edit_cannot_put_the_due_date_before_the_issue_date(alice_api, alice_customer, body):
    draft = create_invoice(alice_api, alice_customer, issue_date="2026-06-10", due_date="2026-06-30")

    response = alice_api.patch(invoice_url(draft["id"]), body)

    assert response.status_code == 400
    assert "due_date" in response.json()
    stored = Invoice.objects.get(pk=draft["id"])
    assert (str(stored.issue_date), str(stored.due_date)) == ("2026-06-10", "2026-06-30")


def test_an_edit_cannot_name_another_users_customer(alice_api, alice_customer, bob, make_customer):
    draft = create_invoice(alice_api, alice_customer)

    response = alice_api.patch(invoice_url(draft["id"]), {"customer": make_customer(bob).pk})

    assert response.status_code == 400
    assert set(response.json()) == {"customer"}
    assert Invoice.objects.get(pk=draft["id"]).customer == alice_customer


def test_read_only_fields_in_an_edit_are_ignored(alice_api, alice_customer):
    draft = create_invoice(alice_api, alice_customer)

    response = alice_api.patch(
        invoice_url(draft["id"]),
        {"total": "1.00", "amount_paid": "100.00", "balance_due": "0.00", "sent_at": "2020-01-01T00:00:00Z"},
    )

    assert response.status_code == 200
    assert response.json() == {**draft, "updated_at": ANY}
    invoice = Invoice.objects.get(pk=draft["id"])
    assert (invoice.total, invoice.amount_paid, invoice.sent_at) == (Decimal("100.00"), Decimal("0.00"), None)


@pytest.mark.parametrize("cleared", [None, ""])
def test_a_drafts_number_can_be_changed_and_cleared(alice_api, alice_customer, cleared):
    draft = create_invoice(alice_api, alice_customer, number="Q-1")

    changed = alice_api.patch(invoice_url(draft["id"]), {"number": "Q-2"})

    assert changed.status_code == 200
    assert changed.json()["number"] == "Q-2"
    assert Invoice.objects.get(pk=draft["id"]).number == "Q-2"

    cleared_response = alice_api.patch(invoice_url(draft["id"]), {"number": cleared})

    assert cleared_response.status_code == 200
    assert cleared_response.json()["number"] is None
    assert Invoice.objects.get(pk=draft["id"]).number is None
    assert send_invoice(alice_api, draft["id"])["number"] == "INV-000001"


def test_delete_a_draft_removes_it_and_its_lines(alice_api, alice_customer):
    draft = create_invoice(alice_api, alice_customer, [LinePayloadFactory(), LinePayloadFactory()])

    response = alice_api.delete(invoice_url(draft["id"]))

    assert response.status_code == 204
    assert not Invoice.objects.exists()
    assert not Line.objects.exists()
    assert alice_api.get(invoice_url(draft["id"])).status_code == 404


def test_patch_with_lines_needs_complete_lines(alice_api, alice_customer):
    invoice = create_invoice(alice_api, alice_customer)

    response = alice_api.patch(
        f"/api/invoices/{invoice['id']}/", {"lines": [{"description": "x"}]}, format="json"
    )
    complete = alice_api.patch(
        f"/api/invoices/{invoice['id']}/",
        {"lines": [{"description": "x", "quantity": "2", "unit_price": "1.50"}]},
        format="json",
    )

    assert response.status_code == 400
    assert response.json() == {
        "lines": [{"quantity": ["This field is required."], "unit_price": ["This field is required."]}]
    }
    assert complete.status_code == 200
    assert complete.json()["lines"][0]["tax_rate"] == "0.00"
    assert complete.json()["total"] == "3.00"


# --- what the schema says of a new invoice is what the server accepts ---------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("customer", "CUSTOMER"),  # a numeric string, filled in below: "5" for the id 5
        ("customer", "FLOAT"),  # 5.5 for the id 5 (was read as the customer 5)
        ("due_date", "20301231"),  # ISO 8601 "basic" form: not the documented YYYY-MM-DD
    ],
)
def test_invoice_fields_take_only_their_documented_form(alice_api, alice_customer, field, value):
    value = {"CUSTOMER": str(alice_customer.pk), "FLOAT": alice_customer.pk + 0.5}.get(value, value)
    body = {"customer": alice_customer.pk, "due_date": "2030-12-31", field: value}

    response = alice_api.post("/api/invoices/", body)

    assert not request_schema("/api/invoices/", "post").is_valid(body)
    assert response.status_code == 400
    assert field in response.json()


def test_an_integer_may_be_written_with_a_zero_fraction(alice_api, alice_customer):
    # JSON Schema counts 5.0 as an integer, so the server takes it (and only it) as 5.
    body = {"customer": float(alice_customer.pk), "due_date": "2030-12-31"}

    assert request_schema("/api/invoices/", "post").is_valid(body)
    assert alice_api.post("/api/invoices/", body).json()["customer"] == alice_customer.pk


@pytest.mark.parametrize(
    ("line", "valid"),
    [
        ({"quantity": "0.001", "unit_price": "0", "tax_rate": "100"}, True),
        ({"quantity": "1", "unit_price": "0.00", "tax_rate": "100.00"}, True),
        ({"quantity": "0.000", "unit_price": "1", "tax_rate": "0"}, False),
        ({"quantity": "1", "unit_price": "1", "tax_rate": "100.01"}, False),
        ({"quantity": "1", "unit_price": "1", "tax_rate": "101"}, False),
        ({"quantity": "1", "unit_price": "-0", "tax_rate": "0"}, False),
        ({"quantity": "1", "unit_price": "0.0001", "tax_rate": "0"}, True),
        ({"quantity": "1", "unit_price": "0.00001", "tax_rate": "0"}, False),
        ({"quantity": 1, "unit_price": "1", "tax_rate": "0"}, False),  # a JSON number
    ],
)
def test_line_patterns_are_what_the_server_accepts(alice_api, alice_customer, line, valid):
    body = {"customer": alice_customer.pk, "due_date": "2030-01-31", "lines": [{"description": "x", **line}]}

    response = alice_api.post("/api/invoices/", body)

    assert request_schema("/api/invoices/", "post").is_valid(body) is valid
    assert response.status_code == (201 if valid else 400), response.json()


def test_currency_is_an_enum_of_the_accepted_codes(alice_api, alice_customer):
    # Finding: currency "000" was any three characters to the schema.
    body = {"customer": alice_customer.pk, "due_date": "2030-01-31"}
    currency = request_schema("/api/invoices/", "post")

    assert currency.is_valid({**body, "currency": "JPY"})
    assert alice_api.post("/api/invoices/", {**body, "currency": "JPY"}).status_code == 201
    for code in ("000", "XAU", "usd"):
        assert not currency.is_valid({**body, "currency": code})
        assert alice_api.post("/api/invoices/", {**body, "currency": code}).status_code == 400
