"""Every status change of an invoice is one InvoiceStatusChange row (from, to, who, when), written in
the transaction of the change, whatever made it: the API's actions, a payment that settles, the
bulk move to overdue, a save from a shell. A change rolled back leaves no row."""

import datetime
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from billing.exceptions import InvalidTransition, NotEditable
from invoices.models import Invoice, InvoiceStatusChange
from invoices.services import invoice_create, invoice_mark_overdue, invoice_send, invoice_void
from payments.services import payment_record
from tests.conftest import key_client
from tests.factories import org

pytestmark = pytest.mark.django_db

PAST = {"issue_date": datetime.date(2020, 1, 1), "due_date": datetime.date(2020, 1, 31)}
ONE_LINE = [{"description": "Work", "quantity": Decimal("1"), "unit_price": Decimal("100.00")}]


def history(invoice) -> list[tuple]:
    """(from, to, the member's user id) of each change; an API key's change: see `actors`."""
    return list(
        InvoiceStatusChange.objects.filter(invoice_id=invoice.pk)
        .order_by("id")
        .values_list("from_status", "to_status", "actor_user_id")
    )


def actors(invoice) -> list[tuple]:
    """(the member's user id, the API key's id) of each change: at most one of them set."""
    return list(
        InvoiceStatusChange.objects.filter(invoice_id=invoice.pk)
        .order_by("id")
        .values_list("actor_user_id", "actor_api_key_id")
    )


def draft(owner, customer, **fields):
    fields.setdefault("due_date", datetime.date(2099, 1, 1))
    return invoice_create(organization=org(owner), customer_id=customer.pk, lines=ONE_LINE, **fields)


def test_the_apis_actions_record_who_moved_the_invoice(alice, alice_api, alice_customer):
    invoice = draft(alice, alice_customer)
    assert history(invoice) == []  # a new draft has no change yet

    assert alice_api.post(f"/api/invoices/{invoice.pk}/send/").status_code == 200
    payment = {"invoice": invoice.pk, "amount": "40.00", "method": "card"}
    assert alice_api.post("/api/payments/", payment, format="json").status_code == 201  # partial: no change
    assert alice_api.post("/api/payments/", {**payment, "amount": "60.00"}, format="json").status_code == 201

    assert history(invoice) == [("draft", "sent", alice.pk), ("sent", "paid", alice.pk)]
    sent, paid = InvoiceStatusChange.objects.filter(invoice_id=invoice.pk).order_by("id")
    fresh = Invoice.objects.get(pk=invoice.pk)
    assert sent.changed_at == fresh.sent_at or sent.changed_at <= fresh.paid_at
    assert sent.organization_id == paid.organization_id == org(alice).pk
    assert actors(invoice) == [(alice.pk, None), (alice.pk, None)]


def test_an_api_keys_actions_are_recorded_as_the_keys(alice, alice_org, alice_customer):
    client, api_key = key_client(alice_org, role="member")
    invoice = draft(alice, alice_customer)

    assert client.post(f"/api/invoices/{invoice.pk}/send/").status_code == 200
    payment = {"invoice": invoice.pk, "amount": "100.00", "method": "card"}
    assert client.post("/api/payments/", payment, format="json").status_code == 201

    assert history(invoice) == [("draft", "sent", None), ("sent", "paid", None)]
    assert actors(invoice) == [(None, api_key.pk), (None, api_key.pk)]


def test_each_change_records_the_member_or_the_key_that_made_it(alice, alice_org, alice_customer):
    _, api_key = key_client(alice_org)
    invoice = invoice_send(organization=org(alice), invoice_id=draft(alice, alice_customer).pk, actor=api_key)
    void = invoice_void(organization=org(alice), invoice_id=invoice.pk, actor=alice)

    assert actors(void) == [(None, api_key.pk), (alice.pk, None)]


def test_the_database_refuses_a_change_made_by_both_a_member_and_a_key(alice, alice_org, alice_customer):
    _, api_key = key_client(alice_org)
    invoice = invoice_send(organization=org(alice), invoice_id=draft(alice, alice_customer).pk, actor=alice)

    with pytest.raises(IntegrityError), transaction.atomic():
        InvoiceStatusChange.objects.filter(invoice_id=invoice.pk).update(actor_api_key=api_key)
    assert [change.actor for change in invoice.status_changes.all()] == [alice]


def test_void_is_recorded(alice, alice_api, alice_customer):
    invoice = invoice_send(organization=org(alice), invoice_id=draft(alice, alice_customer).pk)

    assert alice_api.post(f"/api/invoices/{invoice.pk}/void/").status_code == 200

    assert history(invoice) == [("draft", "sent", None), ("sent", "void", alice.pk)]


def test_mark_overdue_records_each_moved_invoice_as_the_systems_change(alice, bob, make_customer):
    invoices = [
        invoice_send(organization=org(owner), invoice_id=draft(owner, make_customer(owner), **PAST).pk)
        for owner in (alice, bob, alice)
    ]
    not_due = invoice_send(
        organization=org(alice),
        invoice_id=draft(alice, make_customer(alice), due_date=datetime.date(2099, 1, 1)).pk,
    )

    assert invoice_mark_overdue() == 3

    for invoice in invoices:
        assert history(invoice) == [("draft", "sent", None), ("sent", "overdue", None)]
        assert (
            InvoiceStatusChange.objects.get(invoice_id=invoice.pk, to_status="overdue").organization_id
            == invoice.organization_id
        )
        moved = Invoice.objects.get(pk=invoice.pk)
        change = InvoiceStatusChange.objects.get(invoice_id=invoice.pk, to_status="overdue")
        assert change.changed_at == moved.updated_at  # one moment, stored in the ORM's own form
        assert InvoiceStatusChange.objects.filter(invoice_id=invoice.pk, changed_at=moved.updated_at).exists()
    assert history(not_due) == [("draft", "sent", None)]
    assert invoice_mark_overdue() == 0
    assert InvoiceStatusChange.objects.filter(to_status="overdue").count() == 3


def test_a_payment_settling_an_overdue_invoice_is_recorded(alice, alice_customer):
    invoice = invoice_send(organization=org(alice), invoice_id=draft(alice, alice_customer, **PAST).pk)
    invoice_mark_overdue()

    payment_record(
        organization=org(alice), invoice_id=invoice.pk, amount=Decimal("100.00"), method="cash", actor=alice
    )

    assert history(invoice)[-1] == ("overdue", "paid", alice.pk)


def test_a_change_rolled_back_leaves_no_history(alice, alice_customer):
    invoice = draft(alice, alice_customer)

    def send_then_fail():
        with transaction.atomic():
            invoice_send(organization=org(alice), invoice_id=invoice.pk, actor=alice)
            assert history(invoice) == [("draft", "sent", alice.pk)]  # written in the same transaction
            raise RuntimeError("the caller's transaction fails after the send")

    with pytest.raises(RuntimeError):
        send_then_fail()

    assert Invoice.objects.get(pk=invoice.pk).status == "draft"
    assert history(invoice) == []


def test_a_save_from_a_shell_is_recorded_and_held_to_the_lifecycle(alice, alice_customer):
    invoice = invoice_send(organization=org(alice), invoice_id=draft(alice, alice_customer).pk)
    fresh = Invoice.objects.get(pk=invoice.pk)

    fresh.status = Invoice.Status.OVERDUE  # an edge of TRANSITIONS: allowed, and recorded
    fresh.save()
    assert history(invoice)[-1] == ("sent", "overdue", None)

    fresh = Invoice.objects.get(pk=invoice.pk)
    fresh.status = Invoice.Status.DRAFT  # not an edge: refused, nothing recorded
    with pytest.raises(InvalidTransition):
        fresh.save()
    assert len(history(invoice)) == 2


def test_status_history_is_never_changed(alice, alice_customer):
    invoice = invoice_send(organization=org(alice), invoice_id=draft(alice, alice_customer).pk)
    change = InvoiceStatusChange.objects.get(invoice_id=invoice.pk)
    change.to_status = "paid"

    with pytest.raises(NotEditable):
        change.save()


def test_the_database_refuses_a_status_change_of_another_organizations_invoice(alice, bob, alice_customer):
    invoice = invoice_send(organization=org(alice), invoice_id=draft(alice, alice_customer).pk)

    with pytest.raises(IntegrityError), transaction.atomic():
        InvoiceStatusChange.objects.create(
            organization=org(bob),
            invoice_id=invoice.pk,
            from_status="sent",
            to_status="void",
            changed_at=invoice.sent_at,
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        InvoiceStatusChange.objects.filter(invoice_id=invoice.pk).update(organization=org(bob))
    with pytest.raises(IntegrityError), transaction.atomic():
        InvoiceStatusChange.objects.create(
            organization=org(alice),
            invoice_id=invoice.pk,
            from_status="sent",
            to_status="sent",
            changed_at=invoice.sent_at,
        )


def test_the_frozen_fields_follow_from_the_editable_ones():
    """The model's guard is derived from EDITABLE_FIELDS and STATE_FIELDS, not a second list."""
    S = Invoice.Status
    assert Invoice._writable_columns(S.PAID) == frozenset()
    assert Invoice._writable_columns(S.VOID) == frozenset()
    assert Invoice._writable_columns(S.SENT) == {"notes", "status", "amount_paid", "paid_at"}
    assert {"customer_id", "subtotal", "total", "number", "sent_at"} <= Invoice._writable_columns(S.DRAFT)
    for status, targets in Invoice.TRANSITIONS.items():
        assert targets <= set(S.values)
        assert ("status" in Invoice.STATE_FIELDS[status]) == bool(targets)


def test_an_invoice_read_without_its_status_is_still_held_to_its_state(alice, alice_customer):
    """`.only()` or `.defer("status")` leaves the status unread: the guard reads it before it judges
    the change, so a partial read is no way around the frozen fields."""
    sent = invoice_send(organization=org(alice), invoice_id=draft(alice, alice_customer).pk)

    partial = Invoice.objects.only("id", "version", "organization_id", "subtotal", "total", "number").get(
        pk=sent.pk
    )
    partial.subtotal = partial.total = Decimal("1.00")
    with pytest.raises(NotEditable):
        partial.save()

    deferred = Invoice.objects.defer("status").get(pk=sent.pk)
    deferred.due_date = datetime.date(2099, 12, 31)
    with pytest.raises(NotEditable):
        deferred.save()

    deferred = Invoice.objects.defer("status").get(pk=sent.pk)
    deferred.notes = "allowed on a sent invoice"
    deferred.save()
    deferred = Invoice.objects.defer("status").get(pk=sent.pk)
    deferred.status = Invoice.Status.OVERDUE  # a change made on a partial read is judged and recorded
    deferred.save()

    fresh = Invoice.objects.get(pk=sent.pk)
    assert (fresh.status, fresh.notes, fresh.total) == (
        "overdue",
        "allowed on a sent invoice",
        Decimal("100.00"),
    )
    assert history(fresh)[-1] == ("sent", "overdue", None)
