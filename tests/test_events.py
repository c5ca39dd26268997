"""Events (API.md: Events and webhooks): written by the services in the change's transaction, from
every writer of the write-path matrix; read through `GET /api/events/` (cursor pages, filters); an
event never changes; old ones are purged."""

import datetime
import re
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from customers.models import Customer
from events.models import Event
from events.services import Change, events_record
from invoices.services import invoice_create, invoice_send
from payments.services import payment_record
from tests import test_write_path_matrix as matrix
from tests.conftest import client_for, key_client, make_user
from tests.factories import org
from tests.invoice_helpers import create_invoice, invoice_url

pytestmark = pytest.mark.django_db


def types(since: str = "") -> list[str]:
    return list(Event.objects.filter(id__gt=since).order_by("id").values_list("type", flat=True))


def latest_id() -> str:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or ""


# --- what each writer records -------------------------------------------------------------------

# writer of the write-path matrix -> (the state it starts from, the events it writes, who they name)
EXPECTED = {
    "api create invoice": ("draft", ["invoice.created"], "user"),
    "api put invoice": ("draft", ["invoice.updated"], "user"),
    "api patch invoice": ("draft", ["invoice.updated"], "user"),
    "api delete invoice": ("draft", ["invoice.deleted"], "user"),
    "api send": ("draft", ["invoice.sent"], "user"),
    "api void": ("sent past due", ["invoice.voided"], "user"),
    "api pay balance as read": (
        "sent past due",
        ["payment.created", "invoice.updated", "invoice.paid"],
        "user",
    ),
    "api pay part": ("sent past due", ["payment.created", "invoice.updated"], "user"),
    "api create customer": ("draft", ["customer.created"], "user"),
    "api put customer": ("draft", ["customer.updated"], "user"),
    "api patch customer": ("draft", ["customer.updated"], "user"),
    "api delete customer": ("no invoices", ["customer.deleted"], "user"),
    "admin add invoice": ("draft", ["invoice.created"], "user"),
    "admin change invoice": ("draft", ["invoice.updated"], "user"),
    "admin delete invoice": ("draft", ["invoice.deleted"], "user"),
    "admin mark overdue": ("sent past due", ["invoice.overdue"], "system"),
    "admin add customer": ("draft", ["customer.created"], "user"),
    "admin change customer": ("draft", ["customer.updated"], "user"),
    "admin delete customer": ("no invoices", ["customer.deleted"], "user"),
    "command mark_overdue": ("sent past due", ["invoice.overdue"], "system"),
}


def test_every_writer_of_the_matrix_says_what_it_records():
    """A writer added to the write-path matrix without its events here fails."""
    assert set(EXPECTED) == set(matrix.WRITERS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_writer_records_its_events_in_its_transaction(name):
    state, expected, actor_type = EXPECTED[name]
    rnd = matrix._setup(make_user("owner"), "draft" if state == "no invoices" else state)
    if state == "no invoices":
        rnd.customer = Customer.objects.create(organization=rnd.organization, name="Nothing owed")
    write = matrix.WRITERS[name][0](rnd)
    since = latest_id()

    outcome = write()

    assert getattr(outcome, "status_code", 200) < 400, getattr(outcome, "content", outcome)
    events = list(Event.objects.filter(id__gt=since).order_by("id"))
    assert [e.type for e in events] == expected
    for event in events:
        assert event.organization_id == rnd.organization.pk
        assert event.actor["type"] == actor_type
        assert event.data["object"]["id"] == event.object_id
    if actor_type == "user":
        assert {e.actor["name"] for e in events} <= {"owner", "operator"}


def test_a_payment_records_the_payment_the_invoice_it_changed_and_the_invoice_paid(
    alice, alice_api, alice_customer
):
    invoice = create_invoice(alice_api, alice_customer)
    alice_api.post(invoice_url(invoice["id"], "send"), {"email": False}, format="json")
    since = latest_id()
    response = alice_api.post(
        "/api/payments/",
        {"invoice": invoice["id"], "amount": invoice["total"], "method": "card"},
        format="json",
    )
    assert response.status_code == 201
    payment, updated, paid = Event.objects.filter(id__gt=since).order_by("id")
    assert [payment.type, updated.type, paid.type] == ["payment.created", "invoice.updated", "invoice.paid"]
    assert payment.id < updated.id < paid.id  # time-ordered, in the order written
    assert payment.data["object"] == response.json()
    detail = alice_api.get(f"/api/invoices/{invoice['id']}/").json()
    assert updated.data["object"] == {
        **detail,
        "hosted_url": updated.data["object"]["hosted_url"],
        "pdf_url": updated.data["object"]["pdf_url"],
    }
    assert updated.data["object"]["status"] == "paid"
    assert updated.previous_attributes["status"] == "sent"
    assert updated.previous_attributes["amount_paid"] == "0.00"
    assert updated.previous_attributes["balance_due"] == invoice["total"]
    assert paid.previous_attributes == updated.previous_attributes
    # The request that made them: its id is the response's X-Request-ID.
    assert payment.request_id == response["X-Request-ID"] == paid.request_id
    assert payment.actor == {"type": "user", "id": alice.pk, "name": "alice"}


def test_an_api_keys_change_names_the_key(alice_org):
    client, key = key_client(alice_org, role="member")
    assert client.post("/api/customers/", {"name": "By key"}, format="json").status_code == 201
    (event,) = Event.objects.filter(type="customer.created")
    assert event.actor == {"type": "api_key", "id": key.pk, "name": key.name}


def test_a_rolled_back_change_records_nothing(alice_org, alice_customer):
    lines = [{"description": "x", "quantity": Decimal("1"), "unit_price": Decimal("5.00")}]
    invoice = invoice_create(organization=alice_org, customer_id=alice_customer.pk, lines=lines)
    since = latest_id()
    seen = []

    def send_pay_then_fail():
        with transaction.atomic():
            invoice_send(organization=alice_org, invoice_id=invoice.pk)
            payment_record(
                organization=alice_org, invoice_id=invoice.pk, amount=Decimal("5.00"), method="card"
            )
            seen.extend(types(since))
            raise RuntimeError("the request failed after the writes")

    with pytest.raises(RuntimeError):
        send_pay_then_fail()
    assert seen == ["invoice.sent", "payment.created", "invoice.updated", "invoice.paid"]
    assert types(since) == []


def test_an_update_that_changes_nothing_records_nothing(alice_api, alice_customer):
    since = latest_id()
    response = alice_api.patch(
        f"/api/customers/{alice_customer.pk}/", {"name": alice_customer.name}, format="json"
    )
    assert response.status_code == 200
    assert types(since) == []


def test_an_event_is_never_changed_the_database_refuses_it(alice_api, alice_customer):
    event = Event.objects.filter(type="customer.created").get()
    with pytest.raises(ValueError, match="never changed"):
        event.save()
    with pytest.raises((DatabaseError, IntegrityError)), transaction.atomic():
        Event.objects.filter(pk=event.pk).update(type="customer.deleted")
    assert Event.objects.get(pk=event.pk).type == "customer.created"


@pytest.mark.django_db(transaction=True)
def test_an_event_outside_a_transaction_is_refused(alice_org):
    with pytest.raises(AssertionError, match="transaction"):
        events_record(organization_id=alice_org.pk, changes=[Change("customer.created", {"id": 1})])


# --- the list ---------------------------------------------------------------------------------


def test_the_list_is_newest_first_in_cursor_pages_and_the_organizations_own(
    alice, alice_api, bob_api, make_customer
):
    for n in range(25):
        make_customer(alice, name=f"Customer {n}")
    bob_api.post("/api/customers/", {"name": "Bob's"}, format="json")
    first = alice_api.get("/api/events/").json()
    assert set(first) == {"next", "previous", "results"}
    assert len(first["results"]) == 20
    second = alice_api.get(first["next"]).json()
    ids = [e["id"] for e in first["results"] + second["results"]]
    assert len(ids) == 25  # the 25 customers', and nothing of Bob's
    assert ids == sorted(ids, reverse=True)
    assert all(re.fullmatch(r"evt_[0-9A-HJKMNP-TV-Z]{26}", i) for i in ids)
    assert second["next"] is None
    event = first["results"][0]
    assert set(event) == {"id", "type", "created_at", "data", "previous_attributes", "actor", "request_id"}
    assert alice_api.get(f"/api/events/{event['id']}/").json() == event
    assert bob_api.get(f"/api/events/{event['id']}/").status_code == 404
    assert alice_api.get("/api/events/evt_nothing/").status_code == 404
    assert alice_api.get("/api/events/?page_size=5").json()["results"] == first["results"][:5]


def test_the_list_filters(alice, alice_api, alice_customer):
    invoice = create_invoice(alice_api, alice_customer)
    alice_api.post(invoice_url(invoice["id"], "send"), {"email": False}, format="json")
    alice_api.post(
        "/api/payments/", {"invoice": invoice["id"], "amount": "1.00", "method": "card"}, format="json"
    )

    def listed(query):
        response = alice_api.get(f"/api/events/?{query}")
        assert response.status_code == 200, response.content
        return [e["type"] for e in response.json()["results"]]

    assert listed("type=invoice.sent&type=payment.created") == ["payment.created", "invoice.sent"]
    # Any object with that id: the invoice's events (and the customer's or payment's of the same id).
    about = alice_api.get(f"/api/events/?object_id={invoice['id']}").json()["results"]
    assert {e["data"]["object"]["id"] for e in about} == {invoice["id"]}
    invoice_events = [e["type"] for e in about if e["type"].startswith("invoice.")]
    assert invoice_events == ["invoice.updated", "invoice.sent", "invoice.created"]
    now = timezone.now()
    assert (
        listed(f"created_before={(now - datetime.timedelta(hours=1)).isoformat().replace('+', '%2B')}") == []
    )
    assert (
        len(listed(f"created_after={(now - datetime.timedelta(hours=1)).isoformat().replace('+', '%2B')}"))
        == 5
    )
    bad_queries = (
        "type=invoice.exploded",
        "object_id=abc",
        "object_id=0",
        "object_id=1.5",
        "created_after=yesterday",
        "created_after=0001-01-01T00:00:00%2B05:00",  # before year 1 in UTC
        "cursor=x&cursor=y",
        "page_size=AAA",
        "page_size=0",
    )
    # Python accepts offsets up to 24 h, PostgreSQL only to 15:59: taken in UTC, it is a date-time.
    assert listed("created_after=0007-04-14T02:52:22%2B16:50") != []
    for bad in bad_queries:
        assert alice_api.get(f"/api/events/?{bad}").status_code == 400, bad


def test_every_role_reads_the_events(alice_org):
    for role in ("viewer", "member", "admin"):
        client, _ = key_client(alice_org, role=role)
        assert client.get("/api/events/").status_code == 200


# --- retention ----------------------------------------------------------------------------------


def test_purge_deletes_only_events_older_than_the_retention(alice_org, settings, capsys):
    settings.EVENT_RETENTION_DAYS = 30
    with transaction.atomic():
        old, recent = events_record(
            organization_id=alice_org.pk,
            changes=[Change("customer.created", {"id": 1}), Change("customer.created", {"id": 2})],
        )
    Event.objects.filter(pk=old.pk).delete()  # written again as 31 days old (events are never updated)
    Event.objects.create(
        id=old.id,
        organization_id=alice_org.pk,
        type=old.type,
        created_at=timezone.now() - datetime.timedelta(days=31),
        object_type="customer",
        object_id=1,
        data=old.data,
        actor=old.actor,
    )
    call_command("purge_events")
    assert "1 event(s) older than 30 days deleted." in capsys.readouterr().out
    assert list(Event.objects.values_list("pk", flat=True)) == [recent.pk]


def test_a_second_organization_member_sees_the_same_events(alice, alice_org):
    from tests.conftest import member_of

    dave = member_of(alice_org, "dave", "viewer")
    client_for(alice).post("/api/customers/", {"name": "Seen by all"}, format="json")
    listed = client_for(dave, alice_org).get("/api/events/").json()["results"]
    assert listed[0]["data"]["object"]["name"] == "Seen by all"
    assert org(dave) != alice_org  # dave's own organization is another one


def test_the_database_refuses_a_delivery_of_another_organizations_event_or_endpoint(alice_org, bob_org):
    from events.models import WebhookDelivery, WebhookEndpoint

    with transaction.atomic():
        (alices,) = events_record(
            organization_id=alice_org.pk, changes=[Change("customer.created", {"id": 1})]
        )
    endpoint = {"url": "https://example.com/hooks", "events": ["*"], "secret": "x"}
    bobs_endpoint = WebhookEndpoint.objects.create(organization=bob_org, **endpoint)
    alices_endpoint = WebhookEndpoint.objects.create(organization=alice_org, **endpoint)
    with transaction.atomic():
        (bobs,) = events_record(organization_id=bob_org.pk, changes=[Change("customer.created", {"id": 2})])
    for organization, event, target in (
        (bob_org, alices, bobs_endpoint),  # Alice's event to Bob's endpoint, as Bob's row
        (alice_org, alices, bobs_endpoint),  # Alice's event to Bob's endpoint, as Alice's row
        (bob_org, bobs, alices_endpoint),  # Bob's event to Alice's endpoint
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            WebhookDelivery.objects.create(organization=organization, event=event, endpoint=target)
    # Only the one the services queued: Bob's event to his own endpoint (Alice's came before hers).
    assert list(WebhookDelivery.objects.values_list("event_id", "endpoint_id")) == [
        (bobs.pk, bobs_endpoint.pk)
    ]


def test_mark_overdue_records_its_events_in_batches_of_a_bounded_size(alice_org, alice_customer, monkeypatch):
    from invoices import services as invoice_services

    monkeypatch.setattr(invoice_services, "EVENT_BATCH", 2)
    lines = [{"description": "x", "quantity": Decimal("1"), "unit_price": Decimal("5.00")}]
    past = {"issue_date": datetime.date(2026, 1, 1), "due_date": datetime.date(2026, 1, 2)}
    ids = []
    for _ in range(5):
        invoice = invoice_create(organization=alice_org, customer_id=alice_customer.pk, lines=lines, **past)
        ids.append(invoice_send(organization=alice_org, invoice_id=invoice.pk).pk)
    since = latest_id()
    assert invoice_services.invoice_mark_overdue() == 5
    overdue = Event.objects.filter(id__gt=since, type="invoice.overdue")
    assert sorted(overdue.values_list("object_id", flat=True)) == ids
    assert {e.previous_attributes["status"] for e in overdue} == {"sent"}
    assert {e.actor["type"] for e in overdue} == {"system"}


# --- the events' statement ----------------------------------------------------------------------


def _events(organization, count: int) -> list[Event]:
    """Events as events_record_many builds them, with fixed ids and time (written twice, rolled back
    between)."""
    now = datetime.datetime(2026, 12, 3, 10, 0, 0, 123456, tzinfo=datetime.UTC)
    return [
        Event(
            id=f"evt_{n:026d}",
            organization_id=organization.pk,
            type="invoice.updated",
            created_at=now,
            object_type="invoice",
            object_id=n,
            data={"object": {"id": n, "customer_name": 'Zoë "O\'Brien" <b>', "total": "10.00"}},
            previous_attributes={"notes": "é"} if n % 2 else None,
            actor={"type": "system", "id": None, "name": "system"},
            request_id="req-1",
        )
        for n in range(1, count + 1)
    ]


def _statements(write) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx, transaction.atomic():
        write()
        transaction.set_rollback(True)
    return [
        q["sql"]
        for q in ctx.captured_queries
        if not q["sql"].startswith(("SAVEPOINT", "RELEASE", "ROLLBACK"))
    ]


@pytest.mark.parametrize("count", [1, 3, 17])
def test_the_events_insert_is_the_orms_own_statement_with_the_same_values(alice_org, count):
    """The compiled INSERT (billing.db.CompiledInsert) sends what `bulk_create` sends, text and
    values, on both databases; on PostgreSQL inside the statement that also reads the endpoints."""
    from django.db import connection

    from events import services

    events = _events(alice_org, count)
    rows = [[getattr(event, name) for name in services.EVENT_FIELDS] for event in events]
    (orm,) = _statements(lambda: Event.objects.bulk_create(_events(alice_org, count)))
    (compiled,) = _statements(lambda: services._insert_events.execute(rows))
    assert compiled == orm
    if connection.vendor == "postgresql":
        statement = services._insert_events.sql(len(rows))
        (fused,) = _statements(lambda: services._insert_reading_endpoints(rows, statement))
        assert fused.startswith(f"WITH inserted AS ({orm} RETURNING ")


def test_events_are_written_in_as_many_statements_as_the_database_needs_and_read_back_equal(alice_org):
    """SQLite takes at most 999 parameters a statement: 150 events of 10 columns go in two."""
    from django.db import connection

    from events import services

    changes = [
        (alice_org.pk, Change("invoice.updated", {"id": n, "name": "Zoë <b>"}, {"status": "sent"}))
        for n in range(150)
    ]
    with transaction.atomic():
        statements = _statements(lambda: services.events_record_many(changes))
        written = services.events_record_many(changes)
    inserts = [s for s in statements if "INSERT" in s]
    assert len(inserts) == (1 if connection.vendor == "postgresql" else 2)
    stored = {e.pk: e for e in Event.objects.filter(pk__in=[e.pk for e in written])}
    assert len(stored) == 150
    for event in written:
        got = stored[event.pk]
        assert (got.type, got.object_id, got.data, got.previous_attributes, got.actor, got.created_at) == (
            event.type,
            event.object_id,
            event.data,
            event.previous_attributes,
            event.actor,
            event.created_at,
        )


def test_an_events_id_has_no_index_beside_its_primary_key():
    """Every write inserts events: no index maintained for nothing (PostgreSQL's pattern index for a
    character key, events 0005); the primary key serves every read by id."""
    from django.db import connection

    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Event._meta.db_table)
    on_id_alone = [name for name, c in constraints.items() if c["columns"] == ["id"] and not c["primary_key"]]
    assert on_id_alone == []
    assert any(c["primary_key"] and c["columns"] == ["id"] for c in constraints.values())


def test_an_insert_whose_layout_is_not_kept_goes_through_bulk_create(alice_org, monkeypatch):
    """A statement whose parameters Django lays out otherwise is not kept: the events are written by
    the ORM's bulk_create instead, the same rows (and, on PostgreSQL, the endpoints read apart)."""
    from events import services

    monkeypatch.setattr(services._insert_events, "sql", lambda rows: None)
    changes = [(alice_org.pk, Change("invoice.updated", {"id": n}, {"status": "sent"})) for n in (1, 2)]
    with transaction.atomic():
        written = services.events_record_many(changes)
    stored = Event.objects.filter(pk__in=[e.pk for e in written]).order_by("id")
    assert [(e.object_id, e.previous_attributes) for e in stored] == [
        (1, {"status": "sent"}),
        (2, {"status": "sent"}),
    ]
