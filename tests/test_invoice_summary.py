"""GET /api/invoices/summary/: counts and money per currency, over the list's filters."""

import pytest

from tests.factories import LinePayloadFactory
from tests.invoice_helpers import (
    SUMMARY,
    create_invoice,
    invoice_in_state,
    move_to_state,
    set_amount_paid,
)
from tests.schema_helpers import openapi

pytestmark = pytest.mark.django_db

NO_STATUSES = {"draft": 0, "sent": 0, "overdue": 0, "paid": 0, "void": 0}


def row(currency, invoiced, collected, outstanding, overdue) -> dict:
    return {
        "currency": currency,
        "invoiced": invoiced,
        "collected": collected,
        "outstanding": outstanding,
        "overdue": overdue,
    }


@pytest.fixture
def book(alice_api, alice, bob_api, bob, make_customer):
    """Alice's invoices, by hand:

    | currency | customer | status  | total   | paid   | balance |
    | USD      | Acme     | draft   |  500.00 |        |         |  not invoiced
    | USD      | Acme     | sent    |  100.00 |  40.00 |   60.00 |
    | USD      | Globex   | sent    |  250.00 |        |  250.00 |  2 x 100.00 + 25% tax
    | USD      | Globex   | overdue |   80.00 |  30.00 |   50.00 |
    | USD      | Acme     | overdue |   20.00 |        |   20.00 |
    | USD      | Globex   | paid    |  150.00 | 150.00 |    0.00 |
    | USD      | Acme     | void    |   70.00 |        |         |  not invoiced
    | EUR      | Acme     | sent    | 1000.00 | 999.99 |    0.01 |
    | EUR      | Globex   | paid    |   45.50 |  45.50 |    0.00 |
    | EUR      | Globex   | overdue |   12.34 |        |   12.34 |  10.00 + 23.40% tax

    USD: invoiced 600.00, collected 220.00, outstanding 380.00, overdue 70.00.
    EUR: invoiced 1057.84, collected 1045.49, outstanding 12.35, overdue 12.34.
    Bob has one EUR invoice of 99.00 that must never be counted for alice.
    """
    acme = make_customer(alice, name="Acme Corp")
    globex = make_customer(alice, name="Globex")
    rows = [
        ("USD", acme, "draft", [LinePayloadFactory(unit_price="500.00")], None),
        ("USD", acme, "sent", [LinePayloadFactory(unit_price="100.00")], "40.00"),
        ("USD", globex, "sent", [LinePayloadFactory(quantity="2", unit_price="100.00", tax_rate="25")], None),
        ("USD", globex, "overdue", [LinePayloadFactory(unit_price="80.00")], "30.00"),
        ("USD", acme, "overdue", [LinePayloadFactory(unit_price="20.00")], None),
        ("USD", globex, "paid", [LinePayloadFactory(unit_price="150.00")], None),
        ("USD", acme, "void", [LinePayloadFactory(unit_price="70.00")], None),
        ("EUR", acme, "sent", [LinePayloadFactory(unit_price="1000.00")], "999.99"),
        ("EUR", globex, "paid", [LinePayloadFactory(unit_price="45.50")], None),
        ("EUR", globex, "overdue", [LinePayloadFactory(unit_price="10.00", tax_rate="23.40")], None),
    ]
    for currency, customer, state, lines, amount_paid in rows:
        invoice_id = create_invoice(alice_api, customer, lines, currency=currency)["id"]
        move_to_state(alice_api, invoice_id, state)
        if amount_paid:
            set_amount_paid(invoice_id, amount_paid)

    bobs_customer = make_customer(bob, name="Acme Corp")
    invoice_in_state(bob_api, bobs_customer, "sent", [LinePayloadFactory(unit_price="99.00")], currency="EUR")
    return {"acme": acme, "globex": globex, "bobs_customer": bobs_customer}


def test_summary_counts_and_sums_per_currency(alice_api, book):
    response = alice_api.get(SUMMARY)

    assert response.status_code == 200
    assert response.json() == {
        "count": 10,
        "by_status": {"draft": 1, "sent": 3, "overdue": 3, "paid": 2, "void": 1},
        "totals": [
            row("EUR", "1057.84", "1045.49", "12.35", "12.34"),
            row("USD", "600.00", "220.00", "380.00", "70.00"),
        ],
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param(
            "currency=EUR",
            {
                "count": 3,
                "by_status": {**NO_STATUSES, "sent": 1, "overdue": 1, "paid": 1},
                "totals": [row("EUR", "1057.84", "1045.49", "12.35", "12.34")],
            },
            id="currency",
        ),
        pytest.param(
            "status=paid",
            {
                "count": 2,
                "by_status": {**NO_STATUSES, "paid": 2},
                "totals": [
                    row("EUR", "45.50", "45.50", "0.00", "0.00"),
                    row("USD", "150.00", "150.00", "0.00", "0.00"),
                ],
            },
            id="status",
        ),
        pytest.param(
            "status=sent&status=overdue",
            {
                "count": 6,
                "by_status": {**NO_STATUSES, "sent": 3, "overdue": 3},
                "totals": [
                    row("EUR", "1012.34", "999.99", "12.35", "12.34"),
                    row("USD", "450.00", "70.00", "380.00", "70.00"),
                ],
            },
            id="statuses",
        ),
        pytest.param(
            "customer={acme}",
            {
                "count": 5,
                "by_status": {**NO_STATUSES, "draft": 1, "sent": 2, "overdue": 1, "void": 1},
                "totals": [
                    row("EUR", "1000.00", "999.99", "0.01", "0.00"),
                    row("USD", "120.00", "40.00", "80.00", "20.00"),
                ],
            },
            id="customer",
        ),
        pytest.param(
            "search=GLOBEX",
            {
                "count": 5,
                "by_status": {**NO_STATUSES, "sent": 1, "overdue": 2, "paid": 2},
                "totals": [
                    row("EUR", "57.84", "45.50", "12.34", "12.34"),
                    row("USD", "480.00", "180.00", "300.00", "50.00"),
                ],
            },
            id="search",
        ),
        pytest.param(
            "total_min=100&currency=USD",
            {
                "count": 4,
                "by_status": {**NO_STATUSES, "draft": 1, "sent": 2, "paid": 1},
                "totals": [row("USD", "500.00", "190.00", "310.00", "0.00")],
            },
            id="total-and-currency",
        ),
        pytest.param(
            "currency=GBP",
            {"count": 0, "by_status": NO_STATUSES, "totals": []},
            id="nothing-matches",
        ),
    ],
)
def test_summary_honours_the_list_filters(alice_api, book, query, expected):
    response = alice_api.get(f"{SUMMARY}?{query.format(acme=book['acme'].pk)}")

    assert response.status_code == 200
    assert response.json() == expected


def test_summary_counts_only_the_callers_invoices(bob_api, book):
    response = bob_api.get(SUMMARY)

    assert response.status_code == 200
    assert response.json() == {
        "count": 1,
        "by_status": {**NO_STATUSES, "sent": 1},
        "totals": [row("EUR", "99.00", "0.00", "99.00", "0.00")],
    }


def test_summary_of_a_user_with_no_invoices_is_empty(alice_api):
    response = alice_api.get(SUMMARY)

    assert response.status_code == 200
    assert response.json() == {"count": 0, "by_status": NO_STATUSES, "totals": []}


def test_a_currency_with_only_drafts_and_voids_has_a_row_of_zeros(alice_api, alice_customer):
    create_invoice(alice_api, alice_customer, currency="JPY")
    invoice_in_state(alice_api, alice_customer, "void", currency="JPY")

    response = alice_api.get(SUMMARY)

    assert response.json() == {
        "count": 2,
        "by_status": {**NO_STATUSES, "draft": 1, "void": 1},
        "totals": [row("JPY", "0", "0", "0", "0")],
    }


@pytest.mark.parametrize(
    "query", ["status=bogus", "total_min=abc", "issue_date_after=notadate", "customer=abc"]
)
def test_summary_rejects_malformed_filters(alice_api, book, query):
    assert alice_api.get(f"{SUMMARY}?{query}").status_code == 400


def test_summary_rejects_another_users_customer(alice_api, book):
    response = alice_api.get(f"{SUMMARY}?customer={book['bobs_customer'].pk}")

    assert response.status_code == 400
    assert "customer" in response.json()


# --- the schema ---------------------------------------------------------------------------------------


def test_the_summary_documents_the_list_filters_and_their_400(alice_api):
    # The summary takes the list's filters but documented neither them nor the 400 they give.
    operation = openapi()["paths"]["/api/invoices/summary/"]["get"]

    assert {"status", "customer", "total_min", "issue_date_after"} <= {
        p["name"] for p in operation["parameters"]
    }
    assert "400" in operation["responses"]
    assert alice_api.get("/api/invoices/summary/?status=nope").status_code == 400
