"""Every path that writes keeps the money right, not only the API's: the admin, the model layer
itself, the database's own refusals, and the error each refusal becomes.

The races here are made deterministic: another writer commits at the exact moment after the admin
(or a view) has read a row and before it writes (`after_admin_reads`, a hook on the admin's read).
The write-path matrix (test_write_path_matrix.py) races every writer against every other for real.
"""

import datetime
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.db.models import ProtectedError
from django.test.utils import CaptureQueriesContext

from billing.errors import NotEditable, StaleWrite
from customers.models import Customer
from invoices.models import Invoice, Line
from invoices.services import invoice_send, invoice_update
from payments.ledger import ledger_mismatches
from payments.models import Payment
from payments.services import payment_record
from tests.admin_helpers import (
    add_url,
    after_admin_reads,
    change_form_data,
    change_url,
    commit_in_another_thread,
    delete_url,
    messages_of,
    operator_client,
)
from tests.concurrency import run_concurrently
from tests.conftest import client_for, make_user
from tests.factories import org
from tests.invoice_helpers import invoice_payload
from users.models import Membership

D = Decimal
DUE = datetime.date(2030, 1, 31)


def assert_books_balance():
    assert list(ledger_mismatches()) == []


def pay(organization, invoice, amount: str):
    return payment_record(
        organization=org(organization), invoice_id=invoice.pk, amount=D(amount), method="card"
    )


# --- 1. the admin never writes a stale read back -------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_admin_notes_save_keeps_a_payment_that_landed_after_the_admin_read_the_invoice(
    alice, make_invoice
):
    invoice = make_invoice(alice, amount="10.00")
    operator = operator_client()
    data = change_form_data(operator, invoice, notes="Called the customer")

    joins = []
    with after_admin_reads(
        Invoice, lambda: joins.append(commit_in_another_thread(lambda: pay(alice, invoice, "2.50")))
    ):
        response = operator.post(change_url(invoice), data)
    landed = joins[0]()

    assert response.status_code == 302
    assert landed.amount == D("2.50")
    invoice.refresh_from_db()
    assert invoice.notes == "Called the customer"
    assert invoice.amount_paid == D("2.50")
    assert invoice.status == "sent"
    assert_books_balance()


@pytest.mark.django_db(transaction=True)
def test_an_admin_save_of_an_invoice_paid_meanwhile_is_refused_and_the_payment_kept(alice, make_invoice):
    invoice = make_invoice(alice, amount="100.00")
    operator = operator_client()
    data = change_form_data(operator, invoice, notes="late edit")

    joins = []
    with after_admin_reads(
        Invoice, lambda: joins.append(commit_in_another_thread(lambda: pay(alice, invoice, "100.00")))
    ):
        response = operator.post(change_url(invoice), data, follow=True)
    joins[0]()

    invoice.refresh_from_db()
    assert invoice.status == "paid"
    assert invoice.amount_paid == invoice.total == D("100.00")
    if connection.vendor == "postgresql":  # the payment committed between the read and the save
        assert invoice.notes == ""
        assert any("paid invoice cannot be changed" in m for m in messages_of(response))
    # Paid once: a second full payment is refused.
    with pytest.raises(Exception, match=r"invoice accepts payments|balance due"):
        pay(alice, invoice, "100.00")
    assert Payment.objects.filter(invoice=invoice).count() == 1
    assert_books_balance()


@pytest.mark.django_db(transaction=True)
def test_an_admin_save_of_a_draft_keeps_lines_replaced_meanwhile_and_their_totals(
    alice, alice_customer, make_invoice
):
    draft = make_invoice(alice, amount="100.00", send=False)
    operator = operator_client()
    data = change_form_data(operator, draft, notes="checked")

    def replace_lines():
        return invoice_update(
            organization=org(alice),
            invoice_id=draft.pk,
            lines=[
                {"description": "A", "quantity": D("2"), "unit_price": D("30.00"), "tax_rate": D("0")},
                {"description": "B", "quantity": D("1"), "unit_price": D("0.29"), "tax_rate": D("0")},
            ],
        )

    joins = []
    with after_admin_reads(Invoice, lambda: joins.append(commit_in_another_thread(replace_lines))):
        response = operator.post(change_url(draft), data)
    joins[0]()

    assert response.status_code == 302
    draft.refresh_from_db()
    assert draft.notes == "checked"
    assert draft.total == D("60.29") == sum(ln.amount + ln.tax_amount for ln in draft.lines.all())
    assert_books_balance()


@pytest.mark.django_db
def test_a_save_from_a_stale_read_is_refused_by_the_model(alice, make_invoice):
    invoice = make_invoice(alice, amount="10.00")
    stale = Invoice.objects.get(pk=invoice.pk)
    pay(alice, invoice, "4.00")

    stale.notes = "overwrites nothing"
    with pytest.raises(StaleWrite), transaction.atomic():
        stale.save()

    invoice.refresh_from_db()
    assert (invoice.amount_paid, invoice.notes) == (D("4.00"), "")


@pytest.mark.django_db
def test_a_save_writes_only_the_columns_that_changed(alice, make_invoice):
    invoice = make_invoice(alice, amount="10.00")
    fresh = Invoice.objects.get(pk=invoice.pk)
    fresh.notes = "only this"

    with CaptureQueriesContext(connection) as queries:
        fresh.save()

    (update,) = [q["sql"] for q in queries if q["sql"].startswith("UPDATE")]
    assigned = update.split(" SET ", 1)[1].split(" WHERE ", 1)[0]
    assert '"notes"' in assigned
    assert '"amount_paid"' not in assigned
    assert '"status"' not in assigned
    assert '"version"' in update.split(" WHERE ", 1)[1]  # compare-and-set on the version read


@pytest.mark.django_db
def test_lines_and_payments_are_read_only_in_the_admin(alice, make_invoice):
    invoice = make_invoice(alice, amount="10.00")
    pay(alice, invoice, "1.00")
    payment = Payment.objects.get(invoice=invoice)
    operator = operator_client()

    assert operator.get(change_url(payment)).status_code in (200, 403)  # a view, never a form
    assert operator.post(change_url(payment), {"amount": "9.00"}).status_code == 403
    assert operator.post(delete_url(payment), {"post": "yes"}).status_code == 403
    assert operator.get(add_url(Payment)).status_code == 403
    # Lines have no admin of their own: the invoice's page shows them, the services write them.
    assert operator.get(add_url(Line)).status_code == 404
    assert Payment.objects.get(pk=payment.pk).amount == D("1.00")


@pytest.mark.django_db
def test_the_admin_offers_no_bulk_delete_of_invoices_or_customers(alice, make_invoice):
    invoice = make_invoice(alice, send=False)
    operator = operator_client()
    for model in (Invoice, Customer):
        response = operator.post(
            f"/admin/{model._meta.app_label}/{model._meta.model_name}/",
            {"action": "delete_selected", "_selected_action": [invoice.pk], "post": "yes"},
        )
        assert response.status_code in (200, 302)
    assert Invoice.objects.filter(pk=invoice.pk).exists()


# --- 4, 5. a row that vanishes under a request is 404; an update never inserts -------------------


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_deletes_of_a_draft_are_one_204_and_one_404(alice, make_invoice):
    clients = [client_for(alice), client_for(alice)]
    for _ in range(5):
        draft = make_invoice(alice, send=False)
        responses = run_concurrently(lambda i, pk=draft.pk: clients[i].delete(f"/api/invoices/{pk}/"), 2)
        assert sorted(r.status_code for r in responses) == [204, 404]
        assert not Invoice.objects.filter(pk=draft.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_delete_racing_send_leaves_either_a_sent_invoice_or_none(alice, make_invoice):
    clients = [client_for(alice), client_for(alice)]
    for _ in range(5):
        draft = make_invoice(alice, send=False)
        calls = [
            lambda pk=draft.pk: clients[0].delete(f"/api/invoices/{pk}/"),
            lambda pk=draft.pk: clients[1].post(f"/api/invoices/{pk}/send/"),
        ]
        deleted, sent = (r.status_code for r in run_concurrently(lambda i, calls=calls: calls[i](), 2))
        assert (deleted, sent) in {(204, 404), (409, 200)}, (deleted, sent)
        exists = Invoice.objects.filter(pk=draft.pk).first()
        assert (exists is None) == (deleted == 204)
        if exists:
            assert exists.status == "sent"
            assert exists.number


@pytest.mark.django_db
def test_an_update_of_a_customer_deleted_after_it_was_read_is_404_and_does_not_bring_it_back(
    alice, alice_api, alice_customer
):
    from customers.views import CustomerViewSet

    original = CustomerViewSet.get_object

    def get_object_then_delete(self):
        customer = original(self)
        Customer.objects.filter(pk=customer.pk).delete()  # a concurrent DELETE committed
        return customer

    CustomerViewSet.get_object = get_object_then_delete
    try:
        put = alice_api.put(f"/api/customers/{alice_customer.pk}/", {"name": "Back from the dead"})
    finally:
        CustomerViewSet.get_object = original

    assert put.status_code == 404
    assert put.json()["code"] == "not_found"
    assert not Customer.objects.filter(pk=alice_customer.pk).exists()


@pytest.mark.django_db
def test_saving_a_row_deleted_since_it_was_read_never_inserts_it_again(alice, alice_customer, make_invoice):
    customer = Customer.objects.get(pk=alice_customer.pk)
    Customer.objects.filter(pk=customer.pk).delete()
    customer.name = "Resurrected?"
    with pytest.raises(Customer.DoesNotExist), transaction.atomic():
        customer.save()
    assert not Customer.objects.filter(pk=customer.pk).exists()

    draft = make_invoice(alice, send=False)
    stale = Invoice.objects.get(pk=draft.pk)
    Invoice.objects.filter(pk=draft.pk).delete()
    stale.notes = "x"
    with pytest.raises(Invoice.DoesNotExist), transaction.atomic():
        stale.save()
    assert not Invoice.objects.filter(pk=draft.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_put_and_delete_of_a_customer_never_resurrect_it(alice, make_customer):
    clients = [client_for(alice), client_for(alice)]
    for round_ in range(6):
        customer = make_customer(alice, name=f"Round {round_}")
        calls = [
            lambda pk=customer.pk: clients[0].delete(f"/api/customers/{pk}/"),
            lambda pk=customer.pk: clients[1].put(f"/api/customers/{pk}/", {"name": "Renamed"}),
        ]
        deleted, put = (r.status_code for r in run_concurrently(lambda i, calls=calls: calls[i](), 2))
        assert deleted == 204
        assert put in (200, 404)
        assert not Customer.objects.filter(pk=customer.pk).exists()


# --- 6. an issued invoice is never deleted -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_admin_delete_confirmed_after_the_draft_was_sent_is_refused(alice, make_invoice):
    draft = make_invoice(alice, send=False)
    operator = operator_client()

    joins = []
    with after_admin_reads(
        Invoice,
        lambda: joins.append(
            commit_in_another_thread(lambda: invoice_send(organization=org(alice), invoice_id=draft.pk))
        ),
    ):
        response = operator.post(delete_url(draft), {"post": "yes"}, follow=True)

    if connection.vendor == "postgresql":  # the send committed between the admin's read and its delete
        joins[0]()
        invoice = Invoice.objects.get(pk=draft.pk)  # still there
        assert (invoice.status, invoice.number) == ("sent", "INV-000001")
        assert any("Only a draft can be deleted" in m for m in messages_of(response))
    else:  # serialized: the delete of the draft ran first, then the send found nothing to send
        with pytest.raises(Invoice.DoesNotExist):
            joins[0]()
        assert not Invoice.objects.filter(pk=draft.pk).exists()


@pytest.mark.django_db
def test_a_stale_instance_of_a_sent_invoice_cannot_be_deleted(alice, make_invoice):
    draft = make_invoice(alice, send=False)
    stale = Invoice.objects.get(pk=draft.pk)
    invoice_send(organization=org(alice), invoice_id=draft.pk)

    with pytest.raises(NotEditable):
        stale.delete()
    assert Invoice.objects.filter(pk=draft.pk, status="sent").exists()


@pytest.mark.django_db
def test_the_database_refuses_deleting_an_issued_invoice(alice, make_invoice):
    invoice = make_invoice(alice)
    if connection.vendor != "postgresql":
        # SQLite has no such trigger (see payments migration 0002): the model refuses.
        with pytest.raises(NotEditable):
            Invoice.objects.get(pk=invoice.pk).delete()
        return
    with pytest.raises(IntegrityError, match="only a draft can be deleted"), transaction.atomic():
        Invoice.objects.filter(pk=invoice.pk).delete()
    assert Invoice.objects.filter(pk=invoice.pk).exists()


@pytest.mark.django_db
def test_deleting_an_organization_that_has_books_is_refused_by_the_model_and_the_database(
    alice, make_invoice
):
    invoice = make_invoice(alice)
    organization = org(alice)

    with pytest.raises(ProtectedError), transaction.atomic():
        organization.delete()

    # Below the ORM too: the books' references are foreign keys with no cascade in the database.
    # The memberships go first, so that what refuses is the books' own references; the keys are
    # deferred (Django's default), so the check runs them now instead of at a commit.
    def delete_the_row():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM users_membership WHERE organization_id = %s", [organization.pk])
            cursor.execute("DELETE FROM users_organization WHERE id = %s", [organization.pk])
        connection.check_constraints()

    with pytest.raises(IntegrityError, match="organization_id"), transaction.atomic():
        delete_the_row()
    assert Invoice.objects.filter(pk=invoice.pk).exists()


@pytest.mark.django_db
def test_deleting_an_organization_that_has_invoices_is_refused_in_the_admin(alice, make_invoice):
    invoice = make_invoice(alice)
    operator = operator_client()

    response = operator.post(delete_url(org(alice)), {"post": "yes"})

    assert response.status_code == 200  # Django's "cannot delete: protected objects" page
    assert "cannot delete" in response.content.decode().lower()
    assert Invoice.objects.filter(pk=invoice.pk).exists()


@pytest.mark.django_db
def test_deleting_a_user_who_made_invoices_is_refused_in_the_admin(alice, make_invoice):
    # A member who owns no organization (a last owner is refused for that alone).
    carol = get_user_model().objects.create_user("carol", password="carol-password")
    Membership.objects.create(organization=org(alice), user=carol, role="member")
    invoice = make_invoice(alice, actor=carol)
    operator = operator_client()

    response = operator.post(delete_url(carol), {"post": "yes"})

    assert response.status_code == 200  # Django's "cannot delete: protected objects" page
    assert "cannot delete" in response.content.decode().lower()
    assert Invoice.objects.get(pk=invoice.pk).created_by == carol


@pytest.mark.django_db
def test_the_admin_refuses_an_invoice_number_that_does_not_print_as_itself(alice, make_invoice):
    draft = make_invoice(alice, send=False)
    operator = operator_client()
    data = change_form_data(operator, draft, number="INV-\u200b1")  # a zero-width space inside

    response = operator.post(change_url(draft), data)

    assert response.status_code == 200
    assert "number" in response.context["adminform"].form.errors
    draft.refresh_from_db()
    assert draft.number is None


# --- 7. references never cross organizations ------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_refuses_an_invoice_for_another_organizations_customer(alice, bob, make_customer):
    bobs_customer = make_customer(bob, name="Bob's client")
    operator = operator_client()

    response = operator.post(
        add_url(Invoice),
        {
            "organization": org(alice).pk,
            "customer": bobs_customer.pk,
            "currency": "USD",
            "issue_date": "2026-01-01",
            "due_date": "2026-02-01",
            "notes": "",
            "number": "",
            "lines-TOTAL_FORMS": "0",
            "lines-INITIAL_FORMS": "0",
            "lines-MIN_NUM_FORMS": "0",
            "lines-MAX_NUM_FORMS": "1000",
        },
    )

    assert response.status_code == 200  # the form again, with the error
    assert "customer" in response.context["adminform"].form.errors
    assert not Invoice.objects.exists()


@pytest.mark.django_db
def test_the_admin_creates_an_invoice_through_the_service(alice, alice_customer):
    operator = operator_client()
    response = operator.post(
        add_url(Invoice),
        {
            "organization": org(alice).pk,
            "customer": alice_customer.pk,
            "currency": "EUR",
            "issue_date": "2026-01-01",
            "due_date": "2026-02-01",
            "notes": "from the admin",
            "number": "",
            "lines-TOTAL_FORMS": "0",
            "lines-INITIAL_FORMS": "0",
            "lines-MIN_NUM_FORMS": "0",
            "lines-MAX_NUM_FORMS": "1000",
        },
    )
    assert response.status_code == 302
    invoice = Invoice.objects.get()
    assert (invoice.organization, invoice.customer, invoice.currency, invoice.status) == (
        org(alice),
        alice_customer,
        "EUR",
        "draft",
    )


@pytest.mark.django_db
def test_a_customer_never_moves_to_another_organization(alice, bob, alice_customer, make_invoice):
    make_invoice(alice, alice_customer)
    operator = operator_client()
    data = change_form_data(operator, alice_customer, organization=org(bob).pk, name="Moved?")
    assert operator.post(change_url(alice_customer), data).status_code == 302
    alice_customer.refresh_from_db()
    assert alice_customer.organization == org(alice)  # the organization is read-only in the admin
    assert alice_customer.name == "Moved?"

    alice_customer.organization = org(bob)
    with pytest.raises(NotEditable):
        alice_customer.save()


def _refused_by_database(write) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        write()


@pytest.mark.django_db
def test_the_database_refuses_references_across_organizations(alice, bob, make_customer, make_invoice):
    invoice = make_invoice(alice, amount="10.00")
    bobs_customer = make_customer(bob)
    bobs_invoice = make_invoice(bob, bobs_customer, amount="10.00")

    _refused_by_database(lambda: Invoice.objects.filter(pk=invoice.pk).update(customer=bobs_customer))
    _refused_by_database(lambda: Invoice.objects.filter(pk=invoice.pk).update(organization=org(bob)))
    _refused_by_database(lambda: Customer.objects.filter(pk=bobs_customer.pk).update(organization=org(alice)))
    _refused_by_database(
        lambda: Line.objects.bulk_create(
            [
                Line(
                    organization=org(bob),
                    invoice=invoice,
                    position=9,
                    description="x",
                    quantity=D("1"),
                    unit_price=D("1"),
                    amount=D("1"),
                    tax_amount=D("0"),
                )
            ]
        )
    )
    _refused_by_database(
        lambda: Payment.objects.create(
            organization=org(bob), invoice=invoice, amount=D("1.00"), method="card"
        )
    )
    _refused_by_database(
        lambda: Payment.objects.create(
            organization=org(alice), invoice=bobs_invoice, amount=D("1.00"), method="card"
        )
    )
    assert_books_balance()


@pytest.mark.django_db
def test_an_api_update_naming_another_organizations_customer_is_400(
    alice_api, bob, alice_customer, make_customer
):
    from tests.invoice_helpers import create_invoice

    draft = create_invoice(alice_api, alice_customer)
    response = alice_api.patch(f"/api/invoices/{draft['id']}/", {"customer": make_customer(bob).pk})
    assert response.status_code == 400
    assert "customer" in response.json()


@pytest.mark.django_db
def test_verify_ledger_reports_a_reference_across_organizations(alice, bob, make_customer, make_invoice):
    invoice = make_invoice(alice, amount="10.00")
    bobs_customer = make_customer(bob)
    with connection.cursor() as cursor:  # what an old database, or a bypassed guard, could hold
        if connection.vendor == "postgresql":
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute("ALTER TABLE invoices_invoice DROP CONSTRAINT invoice_customer_same_org")
        else:
            cursor.execute("DROP TRIGGER invoice_customer_same_org_update")
        cursor.execute(
            "UPDATE invoices_invoice SET customer_id = %s WHERE id = %s", [bobs_customer.pk, invoice.pk]
        )

    mismatches = list(ledger_mismatches())
    assert any("customer" in m and "another organization" in m for m in mismatches), mismatches
    with pytest.raises(CommandError):
        call_command("verify_ledger")


# --- 8. currencies --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_admin_offers_currencies_as_a_choice_and_refuses_others(alice, alice_customer):
    operator = operator_client()
    form = operator.get(add_url(Invoice)).context["adminform"].form
    assert ("JPY", "JPY") in form.fields["currency"].choices
    assert ("HRK", "HRK") not in form.fields["currency"].choices

    response = operator.post(
        add_url(Invoice),
        {
            "organization": org(alice).pk,
            "customer": alice_customer.pk,
            "currency": "xyz",
            "issue_date": "2026-01-01",
            "due_date": "2026-02-01",
            "lines-TOTAL_FORMS": "0",
            "lines-INITIAL_FORMS": "0",
            "lines-MIN_NUM_FORMS": "0",
            "lines-MAX_NUM_FORMS": "1000",
        },
    )
    assert "currency" in response.context["adminform"].form.errors
    assert not Invoice.objects.exists()


@pytest.mark.django_db
def test_the_database_refuses_a_currency_that_is_not_iso_4217(alice, make_invoice):
    invoice = make_invoice(alice)
    _refused_by_database(lambda: Invoice.objects.filter(pk=invoice.pk).update(currency="xyz"))
    _refused_by_database(lambda: Invoice.objects.filter(pk=invoice.pk).update(currency="HRK"))


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("code", "accepted"),
    [
        ("ZWG", True),
        ("XCG", True),
        ("SLE", True),
        ("HRK", False),
        ("SLL", False),
        ("ZWL", False),
        ("XAU", False),
        ("CLF", False),
    ],
)
def test_the_currency_list_is_the_current_iso_4217_one(alice_api, alice_customer, code, accepted):
    response = alice_api.post("/api/invoices/", invoice_payload(alice_customer, currency=code))
    assert response.status_code == (201 if accepted else 400), response.json()
    if not accepted:
        assert "currency" in response.json()


# --- 9. a rule the database would refuse is a 400 on its field, never a 409 "retry" ---------------


@pytest.mark.django_db
def test_a_due_date_before_the_default_issue_date_is_400_on_due_date_also_when_retried(
    alice_api, alice_customer
):
    body = invoice_payload(alice_customer, due_date="2020-01-01")  # issue_date defaults to today
    for _ in range(2):
        response = alice_api.post("/api/invoices/", body, HTTP_IDEMPOTENCY_KEY="past-due")
        assert response.status_code == 400
        assert "due_date" in response.json()
    assert not Invoice.objects.exists()


@pytest.mark.django_db
def test_a_check_violation_reaching_the_handler_is_400_and_logs_only_the_constraint(
    alice, make_invoice, caplog
):
    from billing.errors import exception_handler

    invoice = make_invoice(alice)
    try:
        with transaction.atomic():
            Invoice.objects.filter(pk=invoice.pk).update(
                notes="secret customer note", due_date=datetime.date(2000, 1, 1)
            )
    except IntegrityError as exc:
        response = exception_handler(exc, {})
    assert response.status_code == 400
    assert response.data["code"] == "constraint_violation"
    assert "invoice_due_date_gte_issue_date" in response.data["detail"]
    assert "secret customer note" not in caplog.text
    assert "invoice_due_date_gte_issue_date" in caplog.text


# --- 10. the kept totals cannot overflow; mark_overdue isolates an organization whose rows fail ---


@pytest.mark.django_db
def test_the_kept_totals_hold_sums_beyond_bigint(alice, alice_customer, make_invoice):
    """The largest invoice in minor units is a 3-place currency's: 999999999999.999 KWD, 10^15 - 1 fils."""
    from invoices.models import InvoiceTotals

    first = make_invoice(alice, amount="999999999999.999", currency="KWD")
    row = InvoiceTotals.objects.filter(
        organization_id=org(alice).pk, currency="KWD", status="sent", shard=first.pk % 16
    )
    assert row.get().total_minor == 999_999_999_999_999
    row.update(total_minor=9_223_372_036_854_775_000)  # next to bigint's maximum
    # Another invoice of the largest total in the same row (the same shard: id modulo 16); drafts
    # take the ids in between.
    while make_invoice(alice, alice_customer, send=False).pk % 16 != (first.pk - 1) % 16:
        pass
    second = make_invoice(alice, alice_customer, amount="999999999999.999", currency="KWD")
    assert second.pk % 16 == first.pk % 16

    kept = row.get().total_minor
    if connection.vendor == "postgresql":
        assert kept == 9_223_372_036_854_775_000 + 999_999_999_999_999
    else:  # SQLite's integers are 64-bit: past them it adds in floating point, without failing
        assert kept > 9_223_372_036_854_775_000


def _fail_updates_of(organization_id: int):
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'refused for the test'; END $$"
            )
            cursor.execute(
                "CREATE TRIGGER test_refuse BEFORE UPDATE ON invoices_invoice FOR EACH ROW "
                f"WHEN (NEW.organization_id = {int(organization_id)}) EXECUTE FUNCTION test_refuse()"
            )
        else:
            cursor.execute(
                f"CREATE TRIGGER test_refuse BEFORE UPDATE ON invoices_invoice WHEN NEW.organization_id = {int(organization_id)} "
                "BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"
            )


@pytest.mark.django_db
def test_mark_overdue_moves_every_other_organization_when_one_organizations_rows_fail(
    alice, bob, make_invoice
):
    carol = make_user("carol")
    past = {"issue_date": datetime.date(2026, 1, 1), "due_date": datetime.date(2026, 1, 2)}
    invoices = {user: make_invoice(user, **past) for user in (alice, bob, carol)}
    _fail_updates_of(org(bob).pk)

    with pytest.raises(CommandError, match=rf"\(organization ids {org(bob).pk};"):
        call_command("mark_overdue")

    status = {user: Invoice.objects.get(pk=inv.pk).status for user, inv in invoices.items()}
    assert status == {alice: "overdue", bob: "sent", carol: "overdue"}
    assert_books_balance()


@pytest.mark.django_db
def test_a_refused_delete_of_an_issued_invoice_reaching_the_handler_is_409_not_editable(alice, make_invoice):
    from billing.errors import exception_handler

    invoice = make_invoice(alice)
    try:
        with transaction.atomic():
            if connection.vendor == "postgresql":  # the trigger (payments migration 0002) refuses
                Invoice.objects.filter(pk=invoice.pk).delete()
            else:  # SQLite has no trigger: the model's locked guard refuses
                Invoice.objects.get(pk=invoice.pk).delete()
    except (IntegrityError, NotEditable) as exc:
        response = exception_handler(exc, {})
    assert response.status_code == 409
    assert response.data["code"] == "not_editable"
