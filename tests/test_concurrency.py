"""Races with real threads against the real database (PostgreSQL in CI, and SQLite too).

Each test lets many requests loose at once, then checks the invariants of the books:
Σ payments = amount_paid ≤ total, one payment per idempotency key, and verify_ledger clean.
"""

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection, connections, transaction

from invoices.models import Invoice
from payments.ledger import ledger_mismatches
from payments.models import Payment
from payments.services import payment_record
from tests.concurrency import run_concurrently
from tests.conftest import client_for
from tests.factories import LinePayloadFactory, org

pytestmark = pytest.mark.django_db(transaction=True)


def assert_books_balance():
    assert list(ledger_mismatches()) == []


def test_32_concurrent_payments_of_10_on_a_100_invoice_exactly_10_succeed(alice, make_invoice):
    invoice = make_invoice(alice, amount="100.00")
    clients = [client_for(alice) for _ in range(32)]
    body = {"invoice": invoice.pk, "amount": "10.00", "method": "card"}

    responses = run_concurrently(lambda i: clients[i].post("/api/payments/", body), 32)

    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 10, statuses
    assert set(statuses) <= {201, 400, 409}  # refused: over the balance, or already paid
    invoice.refresh_from_db()
    assert invoice.status == "paid"
    assert invoice.amount_paid == invoice.total == Decimal("100.00")
    assert sum(Payment.objects.filter(invoice=invoice).values_list("amount", flat=True)) == Decimal("100.00")
    assert_books_balance()


def test_12_concurrent_replays_of_one_key_make_one_payment(alice, make_invoice):
    invoice = make_invoice(alice, amount="100.00")
    clients = [client_for(alice) for _ in range(12)]
    body = {"invoice": invoice.pk, "amount": "10.00", "method": "card"}

    responses = run_concurrently(
        lambda i: clients[i].post("/api/payments/", body, HTTP_IDEMPOTENCY_KEY="one-key"), 12
    )

    created = [r for r in responses if r.status_code == 201]
    in_progress = [r for r in responses if r.status_code == 409]
    assert len(created) + len(in_progress) == 12, [r.status_code for r in responses]
    assert created, "at least the first request completes"
    assert len({r.json()["id"] for r in created}) == 1
    assert all(r.json()["code"] == "request_in_progress" for r in in_progress)
    assert Payment.objects.filter(invoice=invoice).count() == 1
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("10.00")
    assert_books_balance()


def test_mixed_partial_payments_never_overpay(alice, make_invoice):
    invoice = make_invoice(alice, amount="100.00")
    amounts = ["33.33", "33.33", "33.34", "0.01", "50.00", "16.67", "25.00", "66.66"] * 2
    clients = [client_for(alice) for _ in amounts]

    def pay(i):
        return clients[i].post(
            "/api/payments/", {"invoice": invoice.pk, "amount": amounts[i], "method": "cash"}
        )

    run_concurrently(pay, len(amounts))

    invoice.refresh_from_db()
    paid = sum(Payment.objects.filter(invoice=invoice).values_list("amount", flat=True), Decimal("0"))
    assert paid == invoice.amount_paid <= invoice.total
    assert (invoice.status == "paid") == (paid == invoice.total)
    assert_books_balance()


def test_payments_on_different_invoices_do_not_block_each_other(alice, make_invoice):
    locked_invoice, other_invoice = make_invoice(alice), make_invoice(alice)
    holding, release = threading.Event(), threading.Event()

    def hold_lock():
        try:
            with transaction.atomic():
                Invoice.objects.select_for_update().get(pk=locked_invoice.pk)
                holding.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_lock)
    holder.start()
    assert holding.wait(10)
    finished = {}

    def pay_other():
        try:
            payment_record(
                organization=org(alice), invoice_id=other_invoice.pk, amount=Decimal("5.00"), method="card"
            )
            finished["at"] = time.monotonic()
        finally:
            connections.close_all()

    payer = threading.Thread(target=pay_other)
    started = time.monotonic()
    payer.start()
    payer.join(3)
    finished_while_held = not payer.is_alive()
    release.set()
    holder.join(10)
    payer.join(30)

    assert "at" in finished
    if connection.vendor == "postgresql":
        # Row locks: the payment on the other invoice went through while the first row was held.
        assert finished_while_held
        assert finished["at"] - started < 3
    else:
        # SQLite has one writer at a time: the payment waited for the lock holder, then succeeded.
        assert not finished_while_held
    assert Payment.objects.get(invoice=other_invoice).amount == Decimal("5.00")


def test_concurrent_creates_with_one_idempotency_key_make_one_invoice(alice, alice_customer):
    clients = [client_for(alice) for _ in range(8)]
    body = {
        "customer": alice_customer.pk,
        "due_date": "2030-01-01",
        "lines": [LinePayloadFactory(unit_price="9.99")],
    }

    responses = run_concurrently(
        lambda i: clients[i].post("/api/invoices/", body, HTTP_IDEMPOTENCY_KEY="inv"), 8
    )

    assert {r.status_code for r in responses} <= {201, 409}
    assert len({r.json()["id"] for r in responses if r.status_code == 201}) == 1
    assert Invoice.objects.filter(organization=org(alice)).count() == 1
    assert_books_balance()
