"""The invoice model's own rules: exact money, the frozen states, and the database constraints
that hold even when code bypasses the model."""

import datetime
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.errors import InvalidTransition, NotEditable
from customers.models import Customer
from events.models import Event
from invoices.models import AmountTooLarge, Invoice, InvoiceIncomplete, InvoiceStatusChange, Line
from invoices.services import invoice_create, invoice_mark_overdue, invoice_send
from payments.ledger import ledger_mismatches
from tests.factories import InvoiceFactory, LineFactory, org

pytestmark = pytest.mark.django_db

D = Decimal
DUE = datetime.date(2030, 1, 31)


@pytest.mark.parametrize(
    ("currency", "quantity", "unit_price", "tax_rate", "amount", "tax"),
    [
        ("USD", "3", "19.99", "8.25", "59.97", "4.95"),  # 4.947525 -> 4.95
        ("USD", "1.5", "33.33", "0", "50.00", "0.00"),  # 49.995 -> 50.00 (half-up, not banker's)
        ("USD", "1", "0.10", "5", "0.10", "0.01"),  # 0.005 tax -> 0.01
        ("USD", "2.5", "0.01", "0", "0.03", "0.00"),  # 0.025 -> 0.03
        ("USD", "0.001", "0.01", "100", "0.00", "0.00"),
        ("USD", "1", "0.05", "10", "0.05", "0.01"),  # 0.005 -> 0.01
        ("USD", "7", "14.285", "0", "100.00", "0.00"),  # 99.995 -> 100.00
        ("USD", "999999999.999", "0.01", "0", "10000000.00", "0.00"),
        ("JPY", "3", "333", "8", "999", "80"),  # tax 79.92 -> 80
        ("JPY", "2.5", "1", "0", "3", "0"),  # 2.5 -> 3 (half-up, not banker's 2)
        ("JPY", "1", "0.5", "10", "1", "0"),  # 0.5 -> 1; tax 0.1 -> 0
        ("JPY", "1", "1249.5", "0", "1250", "0"),  # a price finer than the currency
        ("KWD", "1.5", "0.333", "5", "0.500", "0.025"),  # 0.4995 -> 0.500
        ("KWD", "1", "0.0005", "0", "0.001", "0.000"),  # 0.0005 -> 0.001
        ("BHD", "3", "1.2345", "10", "3.704", "0.370"),  # 3.7035 -> 3.704; tax 0.3704 -> 0.370
    ],
)
def test_line_amounts_round_half_up(currency, quantity, unit_price, tax_rate, amount, tax):
    """Each amount rounded half-up to the currency's places, and held with exactly those places."""
    item = Line(quantity=D(quantity), unit_price=D(unit_price), tax_rate=D(tax_rate))

    item.compute_amounts(currency)

    assert (str(item.amount), str(item.tax_amount)) == (amount, tax)


def test_totals_are_sums_of_rounded_lines(alice, alice_customer):
    invoice = invoice_create(
        organization=org(alice),
        customer_id=alice_customer.pk,
        due_date=DUE,
        lines=[
            LineFactory(quantity=D("3"), unit_price=D("19.99"), tax_rate=D("8.25")),
            LineFactory(quantity=D("1.5"), unit_price=D("33.33")),
            LineFactory(unit_price=D("0.10"), tax_rate=D("5")),
        ],
    )

    invoice.refresh_from_db()
    assert (invoice.subtotal, invoice.tax_total, invoice.total) == (D("110.07"), D("4.96"), D("115.03"))
    assert invoice.balance_due == D("115.03")
    assert [ln.amount for ln in invoice.lines.order_by("position")] == [D("59.97"), D("50.00"), D("0.10")]


def test_a_total_beyond_the_column_is_refused_before_anything_is_written(alice, alice_customer):
    with pytest.raises(AmountTooLarge):
        invoice_create(
            organization=org(alice),
            customer_id=alice_customer.pk,
            due_date=DUE,
            lines=[LineFactory(quantity=D("999999999.999"), unit_price=D("999999999999.99"))],
        )
    assert not Invoice.objects.exists()
    assert not Line.objects.exists()


@pytest.fixture
def sent_invoice(alice, alice_customer):
    return InvoiceFactory(
        organization=org(alice),
        customer=alice_customer,
        lines=[LineFactory(unit_price=D("100.00"))],
        sent=True,
    )


def _paid(invoice: Invoice) -> Invoice:
    invoice.apply_payment(invoice.balance_due)
    invoice.save()
    return Invoice.objects.get(pk=invoice.pk)


def test_paid_invoice_refuses_any_change_at_the_model_layer(sent_invoice):
    paid = _paid(sent_invoice)
    assert paid.status == Invoice.Status.PAID

    for field, value in [
        ("notes", "changed"),
        ("due_date", DUE + datetime.timedelta(days=1)),
        ("number", "X"),
    ]:
        fresh = Invoice.objects.get(pk=paid.pk)
        setattr(fresh, field, value)
        with pytest.raises(NotEditable):
            fresh.save()
    with pytest.raises(NotEditable):
        Invoice.objects.get(pk=paid.pk).delete()
    assert Invoice.objects.get(pk=paid.pk).notes == ""


def test_void_invoice_refuses_any_change_at_the_model_layer(alice, sent_invoice):
    sent_invoice.void()
    sent_invoice.save()
    fresh = Invoice.objects.get(pk=sent_invoice.pk)
    fresh.notes = "sneaky"

    with pytest.raises(NotEditable):
        fresh.save()
    with pytest.raises(InvalidTransition):
        fresh.send()


def test_sent_invoice_accepts_notes_but_not_money_or_dates(sent_invoice):
    fresh = Invoice.objects.get(pk=sent_invoice.pk)
    fresh.notes = "Thanks!"
    fresh.save()

    fresh.total = D("1.00")
    with pytest.raises(NotEditable):
        fresh.save()
    fresh = Invoice.objects.get(pk=sent_invoice.pk)
    fresh.customer = Customer.objects.create(organization=fresh.organization, name="Other")
    with pytest.raises(NotEditable):
        fresh.save()


def test_a_line_changed_behind_the_services_back_is_reported_by_the_ledger_check(sent_invoice):
    """Lines are written only by invoice_create and invoice_update (replaced whole, totals
    recomputed in the same transaction); the model carries no guard that no path reaches. A line
    changed around them, by the ORM directly, is what verify_ledger reports."""
    assert list(ledger_mismatches(organization_id=sent_invoice.organization_id)) == []
    Line.objects.filter(invoice=sent_invoice).update(unit_price=D("999.00"))

    assert any(f"invoice {sent_invoice.pk}" in m or "line" in m for m in ledger_mismatches())


def test_send_needs_a_positive_total(alice, alice_customer):
    empty = invoice_create(organization=org(alice), customer_id=alice_customer.pk, due_date=DUE)
    free = invoice_create(
        organization=org(alice),
        customer_id=alice_customer.pk,
        due_date=DUE,
        lines=[LineFactory(unit_price=D("0.00"))],
    )

    for invoice in (empty, free):
        with pytest.raises(InvoiceIncomplete):
            invoice_send(organization=org(alice), invoice_id=invoice.pk)
        invoice.refresh_from_db()
        assert (invoice.status, invoice.number) == (Invoice.Status.DRAFT, None)


def test_available_actions_follow_the_guards(sent_invoice):
    assert sent_invoice.available_actions == ["edit", "void", "pay"]
    sent_invoice.apply_payment(D("10.00"))
    assert sent_invoice.available_actions == ["edit", "pay"]  # no void once money came in
    sent_invoice.apply_payment(D("90.00"))
    assert sent_invoice.status == Invoice.Status.PAID
    assert sent_invoice.available_actions == []


# --- the database refuses what the code refuses -----------------------------------------------


def _refused(write) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        write()


def test_constraints_refuse_bad_invoice_rows(alice, sent_invoice):
    rows = Invoice.objects.filter(pk=sent_invoice.pk)

    _refused(lambda: rows.update(amount_paid=F("total") + D("0.01")))
    _refused(lambda: rows.update(amount_paid=D("-0.01")))
    _refused(lambda: rows.update(status="bogus"))
    _refused(lambda: rows.update(due_date=F("issue_date") - datetime.timedelta(days=1)))
    _refused(lambda: rows.update(total=D("5.00")))  # total != subtotal + tax_total
    _refused(lambda: rows.update(status="paid"))  # paid but not settled
    _refused(lambda: rows.update(number=None))  # an issued invoice keeps its number
    _refused(lambda: rows.update(status="draft", amount_paid=D("1.00")))
    _refused(lambda: rows.update(status="void", amount_paid=D("1.00")))
    _refused(lambda: rows.update(number=""))
    sent_invoice.refresh_from_db()
    assert (sent_invoice.status, sent_invoice.amount_paid) == ("sent", D("0.00"))


def test_constraint_refuses_a_duplicate_number_per_organization(alice, bob, sent_invoice, make_customer):
    dates = {"issue_date": DUE, "due_date": DUE}
    dup = Invoice(
        organization=org(alice), customer=sent_invoice.customer, number=sent_invoice.number, **dates
    )
    # PostgreSQL names the constraint; SQLite names its columns.
    refused = r"invoice_org_number_unique|UNIQUE .*organization_id, invoices_invoice\.number"
    with pytest.raises(IntegrityError, match=refused), transaction.atomic():
        Invoice.objects.bulk_create([dup])

    # Another organization may use the same number.
    Invoice.objects.create(
        organization=org(bob), customer=make_customer(bob), number=sent_invoice.number, **dates
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"quantity": D("0")},
        {"quantity": D("-1")},
        {"unit_price": D("-0.01")},
        {"tax_rate": D("100.01")},
        {"tax_rate": D("-1")},
        {"amount": D("-1")},
    ],
)
def test_constraints_refuse_bad_lines(alice, alice_customer, bad):
    invoice = invoice_create(organization=org(alice), customer_id=alice_customer.pk, due_date=DUE)
    values = {"description": "x", "quantity": D("1"), "unit_price": D("1"), "tax_rate": D("0")}
    values |= {"amount": D("1"), "tax_amount": D("0")}
    values |= bad

    _refused(
        lambda: Line.objects.bulk_create(
            [Line(organization=org(alice), invoice=invoice, position=0, **values)]
        )
    )


# --- overdue detection --------------------------------------------------------------------------


def test_mark_overdue_moves_exactly_the_sent_invoices_past_due_in_one_statement_per_zone(
    alice, bob, alice_customer, make_customer
):
    today = timezone.localdate()
    yesterday = today - datetime.timedelta(days=1)
    past = datetime.date(2020, 1, 1)

    def make(user, customer, status, due_date):
        return InvoiceFactory(
            organization=org(user),
            customer=customer,
            issue_date=past,
            due_date=due_date,
            lines=[LineFactory(unit_price=D("10"))],
            sent=status != "draft",
            paid="10" if status == "paid" else None,
        ).pk

    bob_customer = make_customer(bob)
    should_move = {make(alice, alice_customer, "sent", yesterday), make(bob, bob_customer, "sent", past)}
    stays = {
        make(alice, alice_customer, "sent", today): "sent",
        make(alice, alice_customer, "sent", today + datetime.timedelta(days=3)): "sent",
        make(alice, alice_customer, "draft", past): "draft",
        make(alice, alice_customer, "paid", past): "paid",
    }

    with CaptureQueriesContext(connection) as queries:
        moved = invoice_mark_overdue()

    # Both organizations are in one time zone (TIME_ZONE, the default): one read of the zones in
    # use, then one move for that zone, in bulk, with each change and its event recorded, whatever
    # the number of invoices. On PostgreSQL that is one statement (invoices.overdue_sql): the UPDATE
    # ... RETURNING feeding the history insert, the events' insert with each invoice's
    # representation built by the database, their deliveries and their job. On SQLite, where writes
    # are serialized, the history insert and the UPDATE, then the events in Python: one read of the
    # moved invoices (customer and creator joined), their lines and payments, one INSERT of the
    # events, one read of the organizations' webhook endpoints (none subscribe here: no deliveries,
    # no job). The savepoint around each zone's move, which keeps an outer transaction usable if it
    # fails, is not a statement over the data.
    statements = [q["sql"].upper() for q in queries if "SAVEPOINT" not in q["sql"].upper()]
    assert statements[0].startswith('SELECT DISTINCT "USERS_ORGANIZATION"."TIME_ZONE"'), statements
    if connection.vendor == "postgresql":
        assert len(statements) == 2, statements
        assert statements[1].startswith("SET LOCAL JIT = OFF; WITH MOVED AS (UPDATE")
        assert 'INSERT INTO "EVENTS_EVENT"' in statements[1]
        assert 'JOIN "EVENTS_WEBHOOKENDPOINT"' in statements[1]
    else:
        assert statements[1].startswith("INSERT")
        assert statements[2].startswith("UPDATE")
        events = statements[3:]
        assert [
            q.split(" FROM ")[-1].split()[0] if q.startswith("SELECT") else q.split()[2] for q in events
        ] == [
            '"INVOICES_INVOICE"',
            '"INVOICES_LINE"',
            '"PAYMENTS_PAYMENT"',
            '"EVENTS_EVENT"',
            '"EVENTS_WEBHOOKENDPOINT"',
        ], events
    assert Event.objects.filter(type="invoice.overdue").count() == 2

    assert moved == 2
    history = InvoiceStatusChange.objects.filter(invoice__in=should_move, to_status="overdue")
    assert sorted(history.values_list("invoice_id", "from_status", "actor_user", "actor_api_key")) == sorted(
        (pk, "sent", None, None) for pk in should_move
    )
    assert not InvoiceStatusChange.objects.filter(to_status="overdue").exclude(invoice__in=should_move)
    assert set(Invoice.objects.filter(status="overdue").values_list("pk", flat=True)) == should_move
    for pk, status in stays.items():
        assert Invoice.objects.get(pk=pk).status == status
    assert invoice_mark_overdue() == 0  # idempotent: running again moves nothing


def test_mark_overdue_compares_due_dates_with_today_in_the_organizations_time_zone(alice, alice_customer):
    """At 09:00 UTC on March 10 it is 23:00 on March 10 at UTC+14 (Kiritimati); at 11:00 UTC it is
    already March 11 there, so an invoice due March 10 is overdue there, though not yet in UTC."""
    organization = org(alice)
    organization.time_zone = "Pacific/Kiritimati"
    organization.save()
    invoice = InvoiceFactory(
        organization=organization,
        customer=alice_customer,
        issue_date=datetime.date(2026, 3, 1),
        due_date=datetime.date(2026, 3, 10),
        sent=True,
    )

    assert invoice_mark_overdue(now=datetime.datetime(2026, 3, 10, 9, tzinfo=datetime.UTC)) == 0
    assert invoice_mark_overdue(now=datetime.datetime(2026, 3, 10, 11, tzinfo=datetime.UTC)) == 1
    assert Invoice.objects.get(pk=invoice.pk).status == "overdue"


def test_mark_overdue_command_prints_the_count(alice, sent_invoice, capsys):
    Invoice.objects.filter(pk=sent_invoice.pk).update(
        issue_date=datetime.date(2020, 1, 1), due_date=datetime.date(2020, 2, 1)
    )

    call_command("mark_overdue")

    assert capsys.readouterr().out.strip() == "1 invoice marked overdue"
    sent_invoice.refresh_from_db()
    assert sent_invoice.status == "overdue"


@pytest.mark.parametrize(
    ("start", "target"), [("sent", "draft"), ("overdue", "sent"), ("draft", "paid"), ("draft", "void")]
)
def test_save_refuses_a_status_change_off_the_lifecycle_graph(alice, alice_customer, start, target):
    invoice = invoice_create(
        organization=org(alice),
        customer_id=alice_customer.pk,
        due_date=DUE,
        lines=[LineFactory(unit_price=D("10"))],
    )
    if start != "draft":
        invoice_send(organization=org(alice), invoice_id=invoice.pk)
        Invoice.objects.filter(pk=invoice.pk).update(status=start)
    fresh = Invoice.objects.get(pk=invoice.pk)
    fresh.status = target

    with pytest.raises(InvalidTransition):
        fresh.save()
    assert Invoice.objects.get(pk=invoice.pk).status == start


def test_save_refuses_to_take_money_back(sent_invoice):
    sent_invoice.apply_payment(D("10.00"))
    sent_invoice.save()
    fresh = Invoice.objects.get(pk=sent_invoice.pk)
    fresh.amount_paid = D("5.00")

    with pytest.raises(NotEditable):
        fresh.save()
