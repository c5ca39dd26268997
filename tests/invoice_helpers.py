"""Helpers for the invoice tests: build invoices through the API and put them into a state.

Drafts, sending and voiding go through the API, with lines from `LinePayloadFactory`; overdue,
paid and partly paid invoices are made by updating the row directly, as `mark_overdue` and payments
would (the payment endpoint has its own tests in test_payments.py). Invoices made through the
services rather than the API: `tests.factories.InvoiceFactory`.
"""

from datetime import timedelta
from decimal import Decimal
from unittest.mock import ANY

from django.db.models import F
from django.utils import timezone
from rest_framework.fields import DateTimeField

from invoices.models import Invoice, Line
from tests.factories import LinePayloadFactory

INVOICES = "/api/invoices/"
SUMMARY = "/api/invoices/summary/"

ACTIONS = {
    "draft": ["edit", "delete", "send"],
    "sent": ["edit", "void", "pay"],
    "overdue": ["edit", "void", "pay"],
    "paid": [],
    "void": [],
}


def invoice_url(invoice_id: int, action: str | None = None) -> str:
    return f"{INVOICES}{invoice_id}/" + (f"{action}/" if action else "")


def today():
    return timezone.localdate()


def in_days(days: int) -> str:
    return (today() + timedelta(days=days)).isoformat()


def iso(value) -> str:
    """A datetime as the API renders it."""
    return DateTimeField().to_representation(value)


def invoice_payload(customer, lines=None, **fields) -> dict:
    payload = {
        "customer": customer if isinstance(customer, int) else customer.pk,
        "due_date": in_days(30),
        "lines": [LinePayloadFactory()] if lines is None else lines,
    }
    payload.update(fields)
    return payload


def create_invoice(api, customer, lines=None, **fields) -> dict:
    response = api.post(INVOICES, invoice_payload(customer, lines, **fields))
    assert response.status_code == 201, response.json()
    return response.json()


def send_invoice(api, invoice_id: int) -> dict:
    response = api.post(invoice_url(invoice_id, "send"))
    assert response.status_code == 200, response.json()
    return response.json()


def void_invoice(api, invoice_id: int) -> dict:
    response = api.post(invoice_url(invoice_id, "void"))
    assert response.status_code == 200, response.json()
    return response.json()


def _has_stored_balance() -> bool:
    field = next((f for f in Invoice._meta.concrete_fields if f.name == "balance_due"), None)
    return field is not None and not getattr(field, "generated", False)


def make_overdue(invoice_id: int) -> None:
    assert Invoice.objects.filter(pk=invoice_id, status="sent").update(status="overdue") == 1


def make_paid(invoice_id: int) -> None:
    fields = {"status": "paid", "amount_paid": F("total"), "paid_at": timezone.now()}
    if _has_stored_balance():
        fields["balance_due"] = Decimal("0.00")
    assert Invoice.objects.filter(pk=invoice_id).update(**fields) == 1


def set_amount_paid(invoice_id: int, amount: str) -> None:
    """A partial payment: the invoice keeps its state."""
    fields = {"amount_paid": Decimal(amount)}
    if _has_stored_balance():
        fields["balance_due"] = F("total") - Decimal(amount)
    assert Invoice.objects.filter(pk=invoice_id).update(**fields) == 1


def move_to_state(api, invoice_id: int, state: str) -> None:
    """Take a draft to `state`: sent and void through the API, overdue and paid by an update."""
    if state == "draft":
        return
    send_invoice(api, invoice_id)
    if state == "overdue":
        make_overdue(invoice_id)
    elif state == "paid":
        make_paid(invoice_id)
    elif state == "void":
        void_invoice(api, invoice_id)


def invoice_in_state(api, customer, state: str, lines=None, **fields) -> dict:
    """An invoice of `customer` in `state`, as the API shows it now."""
    invoice_id = create_invoice(api, customer, lines, **fields)["id"]
    move_to_state(api, invoice_id, state)
    response = api.get(invoice_url(invoice_id))
    assert response.json()["status"] == state
    return response.json()


def assert_error(response, status_code: int, code: str) -> None:
    assert response.status_code == status_code, response.json()
    assert response.json() == {"detail": ANY, "code": code}
    assert isinstance(response.json()["detail"], str)
    assert response.json()["detail"]


def ids(response) -> list[int]:
    assert response.status_code == 200, response.json()
    return [item["id"] for item in response.json()["results"]]


STATES = ["draft", "sent", "overdue", "paid", "void"]
MISSING = object()


def line_rows(invoice_id: int) -> list[tuple]:
    return [
        (row.description, row.quantity, row.unit_price, row.tax_rate, row.amount, row.tax_amount)
        for row in Line.objects.filter(invoice_id=invoice_id).order_by("id")
    ]


def line_ids(invoice_id: int) -> list[int]:
    return list(Line.objects.filter(invoice_id=invoice_id).order_by("id").values_list("id", flat=True))


def money(invoice: Invoice) -> tuple:
    return (invoice.subtotal, invoice.tax_total, invoice.total, invoice.amount_paid, invoice.balance_due)
