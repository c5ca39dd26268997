"""mark_overdue's events written by its own statement (PostgreSQL: invoices.overdue_sql) are the
events the serializers write (the Python path, `invoices.services._record_overdue`), field for
field, in every kind of current time zone, with the same deliveries and job; the statement falls
back to that path where it cannot write them (SQLite, a current time zone PostgreSQL does not know
by name) and for an invoice paid in part while it waited for the invoice's lock."""

import datetime
import re
import threading
import time
from decimal import Decimal

import pytest
from django.db import connection, connections, models, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from customers.services import customer_create
from events.models import Event, WebhookDelivery, WebhookEndpoint
from events.services import previous_attributes
from invoices import overdue_sql, services
from invoices.models import Invoice
from invoices.selectors import CREATOR, detail_prefetch
from invoices.serializers import InvoiceDetailSerializer, InvoiceSerializer, event_context
from invoices.services import invoice_create, invoice_mark_overdue, invoice_send
from payments.services import payment_record
from tests.conftest import key_client
from tests.factories import LineFactory, org

IN_SQL = connection.vendor == "postgresql"
PAST = {"issue_date": datetime.date(2026, 1, 1), "due_date": datetime.date(2026, 1, 2)}
MOVED_AT = datetime.datetime(2026, 12, 3, 9, 30, 0, 654321, tzinfo=datetime.UTC)
EVENT_ID = re.compile(r"evt_[0-9A-HJKMNP-TV-Z]{26}")
# Their times are the moment each path ran: not compared.
DELIVERY_COLUMNS = [
    f.attname
    for f in WebhookDelivery._meta.concrete_fields
    if f.attname not in ("id", "event_id") and not isinstance(f, models.DateTimeField)
]
JOB_COLUMNS = [
    f.attname for f in DBTaskResult._meta.concrete_fields if f.attname not in ("id", "args_kwargs")
]


def line(description: str, quantity: str, price: str, tax: str = "0") -> dict:
    """A line as the services take it (`LineFactory`), from its values written as strings."""
    return LineFactory(
        description=description, quantity=Decimal(quantity), unit_price=Decimal(price), tax_rate=Decimal(tax)
    )


@pytest.fixture
def invoices(alice, bob, monkeypatch):
    """Sent invoices past due of two organizations, with every kind of value the representation
    writes."""
    alices, bobs = org(alice), org(bob)
    _, api_key = key_client(alices)
    quoted = customer_create(organization=alices, name='Zoë "O\'Brien" <script>', email="z@example.com")
    plain = customer_create(organization=bobs, name="Bob's customer", email="b@example.com")
    made = []

    def make(organization, customer, lines, *, currency=None, actor=None, notes="", sent_at, paid=()):
        with monkeypatch.context() as patch:  # the invoice made, sent and paid at `sent_at`
            patch.setattr(timezone, "now", lambda: sent_at)
            made.append(record(organization, customer, lines, currency, actor, notes, paid))

    def record(organization, customer, lines, currency, actor, notes, paid) -> int:
        invoice = invoice_create(
            organization=organization,
            customer_id=customer.pk,
            lines=lines,
            currency=currency,
            notes=notes,
            actor=actor,
            **PAST,
        )
        invoice_send(organization=organization, invoice_id=invoice.pk, actor=actor)
        for amount, payer in paid:
            payment_record(
                organization=organization,
                invoice_id=invoice.pk,
                amount=Decimal(amount),
                method="card",
                reference='ref "1" %s',
                paid_at=datetime.date(2026, 1, 5),
                actor=payer,
            )
        return invoice.pk

    whole = datetime.datetime(2026, 2, 1, 8, 0, 0, tzinfo=datetime.UTC)  # no microseconds
    fraction = datetime.datetime(2026, 2, 1, 8, 0, 0, 1, tzinfo=datetime.UTC)
    make(
        alices,
        quoted,
        [
            line("Design <b>work</b> \"quoted\" 'single' %s ü", "1.5", "0.0125", "20"),
            line("Hours", "3", "99.99"),
        ],
        actor=alice,
        notes='Notes with "quotes", <script>alert(1)</script>, ünïcödé and 100% % %s',
        sent_at=whole,
        paid=[("0.01", alice), ("1.00", api_key)],
    )
    make(
        alices, quoted, [line("Yen", "2", "333.5"), line("Free", "1", "0")], currency="JPY", sent_at=fraction
    )
    make(alices, quoted, [line("Fils", "1", "1.2345", "5")], currency="KWD", actor=api_key, sent_at=fraction)
    make(alices, quoted, [line("Whole", "7", "10")], currency="USD", sent_at=whole, paid=[("20.00", api_key)])
    make(bobs, plain, [line("Bob's", "1", "12.5")], currency="EUR", actor=bob, sent_at=whole)
    return made


@pytest.fixture
def endpoints(alice, bob):
    def make(organization, events, enabled=True):
        return WebhookEndpoint.objects.create(
            organization=org(organization),
            url="https://hooks.example.com/in",
            events=events,
            secret="x",
            enabled=enabled,
        )

    return [
        make(alice, ["*"]),
        make(alice, ["invoice.overdue"]),
        make(alice, ["invoice.paid"]),
        make(alice, ["*"], enabled=False),
        make(bob, ["invoice.overdue", "customer.created"]),
    ]


def serialized() -> dict:
    """The overdue invoices as the serializers write them, after the move and before it (the same
    rows with the status they had): the `data` and `previous_attributes` of their events."""
    out = {}
    invoices = Invoice.objects.filter(status="overdue").select_related("customer", *CREATOR)
    for invoice in invoices.prefetch_related(detail_prefetch("lines"), detail_prefetch("payments")):
        after = InvoiceDetailSerializer(invoice, context=event_context()).data
        invoice.status = "sent"
        before = InvoiceSerializer(invoice, context=event_context()).data
        out[invoice.pk] = {
            "data": {"object": after},
            "previous_attributes": previous_attributes(before, after),
        }
    return out


def written(since: str) -> dict:
    """What a move wrote: its events by invoice, their deliveries and their job."""
    events = Event.objects.filter(id__gt=since, type="invoice.overdue").order_by("id")
    by_event = {event.pk: event.object_id for event in events}
    deliveries = WebhookDelivery.objects.filter(event__in=events).order_by("pk")
    jobs = DBTaskResult.objects.filter(task_path="events.tasks.send_webhooks").order_by("pk")
    return {
        "serializers": serialized(),
        "ids": [event.pk for event in events],
        "order": [(event.organization_id, event.object_id) for event in events],
        "events": {
            event.object_id: {
                "organization": event.organization_id,
                "object_type": event.object_type,
                "data": event.data,
                "previous_attributes": event.previous_attributes,
                "actor": event.actor,
                "request_id": event.request_id,
            }
            for event in events
        },
        "deliveries": sorted(
            (by_event[d.event_id], *(getattr(d, name) for name in DELIVERY_COLUMNS)) for d in deliveries
        ),
        "delivery_ids": [d.pk for d in deliveries],
        "jobs": [
            (
                {name: getattr(job, name) for name in JOB_COLUMNS if name not in ("enqueued_at",)},
                job.args_kwargs,
            )
            for job in jobs
        ],
    }


def move(monkeypatch, *, in_python: bool) -> tuple[dict, list[str]]:
    """mark_overdue at MOVED_AT, rolled back: what it wrote and the statements it sent."""
    since = Event.objects.order_by("-id").values_list("id", flat=True).first() or ""
    with monkeypatch.context() as patch, transaction.atomic():
        if in_python:
            patch.setattr(services, "overdue_with_events_sql", lambda due, now: None)
        with CaptureQueriesContext(connection) as queries:
            assert invoice_mark_overdue(now=MOVED_AT) == 5
        rows = written(since)
        transaction.set_rollback(True)
    return rows, [q["sql"] for q in queries.captured_queries]


# The current time zone the date-times are written in: UTC ("Z"), whole hours, a half hour west
# and east, and an offset of zero that is not UTC (London in winter: "Z" too).
# CET is also an abbreviation in PostgreSQL (a fixed +01:00): it takes the Python path, and its
# events are the serializers' all the same.
ZONES = ["UTC", "Europe/Berlin", "Asia/Kolkata", "America/St_Johns", "Europe/London", "CET"]


@pytest.mark.django_db
@pytest.mark.parametrize("zone", ZONES)
def test_the_statement_writes_the_events_deliveries_and_job_the_python_path_writes(
    invoices, endpoints, monkeypatch, zone
):
    with timezone.override(zone):
        in_sql, statements = move(monkeypatch, in_python=False)
        in_python, _ = move(monkeypatch, in_python=True)
    offset = {"UTC": "Z", "Europe/Berlin": "+01:00", "Asia/Kolkata": "+05:30", "CET": "+01:00"}
    offset |= {"America/St_Johns": "-03:30", "Europe/London": "Z"}
    assert all(e["data"]["object"]["updated_at"].endswith(offset[zone]) for e in in_sql["events"].values())

    assert sorted(in_sql["events"]) == sorted(invoices)
    for rows in (in_sql, in_python):  # each path against the serializers themselves
        assert {
            i: {"data": e["data"], "previous_attributes": e["previous_attributes"]}
            for i, e in rows["events"].items()
        } == rows["serializers"]
    for invoice_id in invoices:  # field by field, for a readable failure
        assert in_sql["events"][invoice_id] == in_python["events"][invoice_id], invoice_id
    assert in_sql["events"] == in_python["events"]
    assert in_sql["deliveries"] == in_python["deliveries"]
    # Alice's 4 invoices to her two subscribed, enabled endpoints; Bob's one to his.
    assert len(in_sql["deliveries"]) == 4 * 2 + 1
    assert [job for job, _ in in_sql["jobs"]] == [job for job, _ in in_python["jobs"]]
    for rows in (in_sql, in_python):
        (job,) = rows["jobs"]
        assert job[1] == {"args": [sorted(rows["delivery_ids"])], "kwargs": {}}
        assert all(EVENT_ID.fullmatch(event_id) for event_id in rows["ids"])
    # The events' ids in the order of (organization, invoice), as the Python path gives them: one
    # time, counted up (both organizations are in one time zone: one statement).
    assert in_sql["order"] == sorted(in_sql["order"])
    assert in_python["order"] == sorted(in_python["order"])

    moves = [sql for sql in statements if "SAVEPOINT" not in sql.upper() and "pg_timezone_names" not in sql]
    if IN_SQL and zone != "CET":  # the zones' read, then one statement: the move, its history, events, ...
        assert len(moves) == 2, moves
        assert moves[1].startswith("SET LOCAL jit = off; WITH moved AS (UPDATE")
    else:
        with timezone.override(zone):
            assert overdue_sql.overdue_with_events_sql(Invoice.objects.all(), MOVED_AT) is None


@pytest.mark.django_db(transaction=True)
def test_a_payment_committed_while_the_move_waits_for_the_invoice_is_in_its_event(alice):
    """The move's statement reads the payments in its snapshot, taken before it waited for the
    invoice's lock; the row it moves has the payment committed meanwhile. Its event is then written
    after the statement (which holds the lock), with that payment: amount_paid, balance_due and the
    payments agree. (SQLite serializes the two writes: the move comes after the payment.)"""
    organization = org(alice)
    customer = customer_create(organization=organization, name="Racer", email="r@example.com")
    invoice = invoice_create(
        organization=organization, customer_id=customer.pk, lines=[line("Work", "1", "100.00")], **PAST
    )
    invoice_send(organization=organization, invoice_id=invoice.pk)
    locked = threading.Event()

    def pay():
        try:
            with transaction.atomic():
                Invoice.objects.select_for_update().get(pk=invoice.pk)
                locked.set()
                time.sleep(1)  # the move starts meanwhile, and waits for this lock
                payment_record(
                    organization=organization, invoice_id=invoice.pk, amount=Decimal("5.00"), method="card"
                )
        finally:
            connections.close_all()

    payer = threading.Thread(target=pay)
    payer.start()
    assert locked.wait(10)
    started = time.monotonic()
    assert invoice_mark_overdue() == 1
    payer.join(10)
    if IN_SQL:
        assert time.monotonic() - started > 0.5  # it did wait for the payment's lock

    event = Event.objects.get(type="invoice.overdue", object_id=invoice.pk)
    shown = event.data["object"]
    assert shown["status"] == "overdue"
    assert shown["amount_paid"] == "5.00"
    assert shown["balance_due"] == "95.00"
    assert [payment["amount"] for payment in shown["payments"]] == ["5.00"]
    assert shown["available_actions"] == Invoice.objects.get(pk=invoice.pk).available_actions
    assert event.previous_attributes == {"status": "sent"}


@pytest.mark.django_db
def test_a_time_zone_postgresql_does_not_know_by_name_takes_the_python_path(alice, make_invoice):
    """A current time zone that is a fixed offset (no IANA name) or a name PostgreSQL lacks: the
    serializers write the events, after the move."""
    invoice = make_invoice(alice, **PAST)
    fixed = datetime.timezone(datetime.timedelta(hours=2))
    with timezone.override(fixed):
        assert overdue_sql.overdue_with_events_sql(Invoice.objects.all(), MOVED_AT) is None
        assert invoice_mark_overdue(now=MOVED_AT) == 1
    shown = Event.objects.get(type="invoice.overdue", object_id=invoice.pk).data["object"]
    assert shown["updated_at"] == "2026-12-03T11:30:00.654321+02:00"
    if IN_SQL:
        overdue_sql._ZONES_KNOWN.clear()
        with CaptureQueriesContext(connection) as queries:  # asked once, then known
            for _ in range(2):
                with timezone.override("Asia/Kolkata"):
                    assert overdue_sql._known_zone() == "Asia/Kolkata"
        assert len(queries) == 1
        with timezone.override("CET"):  # an abbreviation too: PostgreSQL would read it as +01:00 all year
            assert overdue_sql._known_zone() is None
        overdue_sql._ZONES_KNOWN[(connection.alias, "Asia/Kolkata")] = False  # as for a name it lacks
        try:
            with timezone.override("Asia/Kolkata"):
                assert overdue_sql.overdue_with_events_sql(Invoice.objects.all(), MOVED_AT) is None
        finally:
            overdue_sql._ZONES_KNOWN.clear()
