"""The number of queries a request makes does not grow with the page size or the data, and is the
same for a member's token and an organization's API key.

Every invoice and payment shows who made it (`created_by`: a member or an API key): the reads join
the creator, and a write's response reuses the actor it already has, so showing it costs no query.
"""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from invoices.services import invoice_send
from payments.services import payment_record
from tests.conftest import client_for, key_client
from tests.factories import InvoiceFactory, LineFactory, LinePayloadFactory, org
from users.models import ApiKey

pytestmark = pytest.mark.django_db

CALLERS = ["member token", "api key"]
# The read of the organization's webhook endpoints that every write's events make: its own statement
# on SQLite, part of the events' INSERT on PostgreSQL (events.services, a data-modifying WITH).
ENDPOINTS_READ = 0 if connection.vendor == "postgresql" else 1


def lines(n):
    """`n` lines of 2 x 5.00 at 10% tax."""
    return LineFactory.build_batch(
        n, quantity=Decimal("2"), unit_price=Decimal("5.00"), tax_rate=Decimal("10")
    )


def fresh_key(organization, role="member", name=None):
    """A client with a new API key whose `last_used_at` is recent, so that authenticating it writes
    nothing during a count (it is written at most once a minute; tests/test_auth.py pins that)."""
    client, api_key = key_client(organization, role=role)
    if name:
        ApiKey.objects.filter(pk=api_key.pk).update(name=name)
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now())
    api_key.refresh_from_db()
    return client, api_key


@pytest.fixture(params=CALLERS)
def caller(request, alice):
    """(client, actor) of alice's organization: her member token, or an API key of the organization."""
    if request.param == "member token":
        return client_for(alice), alice
    return fresh_key(org(alice))


@pytest.fixture
def other_actor(caller, alice):
    """Someone else of alice's organization who made the data the caller reads or changes: an API key
    when the caller is a member, alice when the caller is a key."""
    _, actor = caller
    if isinstance(actor, ApiKey):
        return alice
    return fresh_key(org(alice), name="integration")[1]


@pytest.fixture
def many_invoices(alice, make_customer, caller, other_actor):
    """120 invoices over 5 customers, made by the caller, by another actor and by the system in turn."""
    customers = [make_customer(alice, name=f"Customer {i}") for i in range(5)]
    actors = [caller[1], other_actor, None]
    return [
        InvoiceFactory(
            organization=org(alice),
            customer=customers[i % 5],
            lines=lines(3),
            sent=i < 40,
            actor=actors[i % 3],
        )
        for i in range(120)
    ]


def count_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(ctx.captured_queries)


def creators(results) -> set:
    return {(r["created_by"] or {}).get("type") for r in results}


def test_invoice_list_queries_do_not_grow_with_page_size(caller, many_invoices):
    client, _ = caller
    small = count_queries(client, "/api/invoices/?page_size=1")
    large = count_queries(client, "/api/invoices/?page_size=100")
    filtered = count_queries(client, "/api/invoices/?page_size=100&status=sent")

    # the credential, the count (kept in InvoiceTotals; the filtered one: a COUNT), the page (with
    # the customer and the creator joined)
    assert small == large == filtered == 3
    assert creators(client.get("/api/invoices/?page_size=100").json()["results"]) == {"user", "api_key", None}


def test_invoice_detail_queries_do_not_grow_with_lines(alice, caller, other_actor, alice_customer):
    client, actor = caller
    few = InvoiceFactory(organization=org(alice), customer=alice_customer, lines=lines(1), actor=actor)
    many = InvoiceFactory(
        organization=org(alice), customer=alice_customer, lines=lines(200), actor=other_actor, paid="10.00"
    )
    payment_record(
        organization=org(alice), invoice_id=many.pk, amount=Decimal("1.00"), method="card", actor=actor
    )

    # the credential, the invoice (customer and creator joined), its lines, its payments (each
    # with its creator joined)
    assert count_queries(client, f"/api/invoices/{few.pk}/") == 4
    assert count_queries(client, f"/api/invoices/{many.pk}/") == 4
    detail = client.get(f"/api/invoices/{many.pk}/").json()
    assert detail["created_by"]["id"] == other_actor.pk
    assert [p["created_by"] for p in detail["payments"]] == [None, detail["payments"][1]["created_by"]]
    assert detail["payments"][1]["created_by"]["id"] == actor.pk


def test_summary_is_one_aggregate_query(caller, many_invoices):
    client, _ = caller
    assert count_queries(client, "/api/invoices/summary/") == 2  # the credential, then the aggregate
    assert count_queries(client, "/api/invoices/summary/?status=sent&search=Customer") == 2


def test_payment_list_and_detail_queries_do_not_grow_with_page_size(alice, caller, other_actor, make_invoice):
    client, actor = caller
    invoices = [make_invoice(alice, amount="100.00") for _ in range(3)]
    for i in range(30):
        payment_record(
            organization=org(alice),
            invoice_id=invoices[i % 3].pk,
            amount=Decimal("1.00"),
            method="card",
            actor=[actor, other_actor, None][i % 3],
        )

    # the credential, the count, the page (with the invoice and the creator joined)
    assert count_queries(client, "/api/payments/?page_size=1") == 3
    assert count_queries(client, "/api/payments/?page_size=100") == 3
    results = client.get("/api/payments/?page_size=100").json()["results"]
    assert creators(results) == {"user", "api_key", None}
    # the credential, the payment (invoice and creator joined)
    assert count_queries(client, f"/api/payments/{results[0]['id']}/") == 2


def test_create_queries_do_not_grow_with_lines(caller, alice_customer):
    client, _ = caller

    def create(n):
        body = {
            "customer": alice_customer.pk,
            "due_date": "2030-01-31",
            "lines": LinePayloadFactory.build_batch(n, description="x", quantity="1", unit_price="1.00"),
        }
        with CaptureQueriesContext(connection) as ctx:
            response = client.post("/api/invoices/", body, format="json")
        assert response.status_code == 201
        return len(ctx.captured_queries)

    assert create(1) == create(100)
    assert create(100) <= 10


def test_customer_list_queries_do_not_grow_with_page_size(alice_api, alice, make_customer):
    for i in range(30):
        make_customer(alice, name=f"C{i}")

    assert count_queries(alice_api, "/api/customers/?page_size=1") == count_queries(
        alice_api, "/api/customers/?page_size=100"
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", CALLERS)
def test_write_requests_make_a_bounded_number_of_queries(alice, alice_customer, make_invoice, kind):
    """Counted outside any test transaction, as in production: BEGIN and COMMIT count too."""
    client, actor = client_for(alice), alice
    if kind == "api key":
        client, actor = fresh_key(org(alice))
    invoice = make_invoice(alice, amount="100.00")

    def count(method, url, body, **headers):
        with CaptureQueriesContext(connection) as ctx:
            response = getattr(client, method)(url, body, format="json", **headers)
        assert response.status_code == 201, response.content
        return len(ctx.captured_queries), response.json()

    payment = {"invoice": invoice.pk, "amount": "1.00", "method": "card"}
    # the credential, BEGIN, lock the invoice, insert the payment, update the invoice, the events
    # (issue 16: the invoice's lines for its representation — its payments are known: this is its
    # first —, the events' INSERT, the organization's webhook endpoints), COMMIT
    queries, paid = count("post", "/api/payments/", payment)
    assert queries == 8 + ENDPOINTS_READ
    # A second payment reads the invoice's payments too.
    assert count("post", "/api/payments/", payment)[0] == 9 + ENDPOINTS_READ
    assert paid["created_by"]["id"] == actor.pk
    # + the key's lock and lookup in one statement, + the key's insert, + the service's own
    # transaction as a savepoint inside the idempotency layer's (SAVEPOINT, RELEASE)
    assert count("post", "/api/payments/", payment, HTTP_IDEMPOTENCY_KEY="p-1")[0] == 13 + ENDPOINTS_READ
    # On PostgreSQL the events' statement is held (the idempotency layer's billing.db.held_writes):
    # logged without text, it goes with the write's next statement, the savepoint's RELEASE, in the
    # same round trip — one round trip fewer than statements.
    with CaptureQueriesContext(connection) as ctx:
        response = client.post("/api/payments/", payment, format="json", HTTP_IDEMPOTENCY_KEY="p-2")
    assert response.status_code == 201, response.content
    alone = [q["sql"] for q in ctx.captured_queries if q["sql"] is not None]
    if connection.vendor == "postgresql":
        assert len(alone) == len(ctx.captured_queries) - 1
        (carrier,) = [q for q in alone if 'INSERT INTO "events_event"' in q]
        assert carrier.rstrip().split(";")[-1].strip().startswith("RELEASE SAVEPOINT"), carrier
    else:
        assert len(alone) == len(ctx.captured_queries)

    def json_lines(n):
        return LinePayloadFactory.build_batch(n, quantity="2", unit_price="5.00")

    body = {"customer": alice_customer.pk, "due_date": "2030-01-31", "lines": json_lines(3)}
    with_key, created = count(
        "post", "/api/invoices/", {**body, "lines": json_lines(100)}, HTTP_IDEMPOTENCY_KEY="i-1"
    )
    assert created["created_by"]["id"] == actor.pk
    assert count("post", "/api/invoices/", body)[0] <= with_key - 2
    assert with_key <= 11 + ENDPOINTS_READ


def _write_counts(alice, client, creator, alice_customer, n_lines):
    """The service's locked read is the only read before a write; the response is built from what
    it returns plus at most one read each of the lines and the payments, and shows the invoice's
    creator (`creator`, not the caller) without reading it. Counted outside any test transaction, as
    in production (BEGIN and COMMIT count too), and the same for 1 and 60 lines.

    Events (issue 16) add two fixed statements to each write — the events' INSERT and the read of
    the organization's webhook endpoints (none here: no deliveries), one statement on PostgreSQL
    (ENDPOINTS_READ) — and move the read of the lines
    (and of the payments) that the response needs into the transaction, for the invoice's
    representation the event carries; the response then reads nothing more."""

    def count(method, url, body=None) -> tuple[int, list[str]]:
        with CaptureQueriesContext(connection) as ctx:
            response = getattr(client, method)(url, body, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["created_by"]["id"] == creator.pk
        return len(ctx.captured_queries), [q["sql"] for q in ctx.captured_queries]

    def draft():
        return InvoiceFactory(
            organization=org(alice), customer=alice_customer, lines=lines(n_lines), actor=creator
        )

    # An organization's first send creates its number sequence: + its insert and a second lock attempt.
    first, sql = count("post", f"/api/invoices/{draft().pk}/send/")
    assert first <= 16 + ENDPOINTS_READ, sql
    # the credential, BEGIN, lock (customer and creator joined), the delivery's job, the
    # sequence's lock, the number's check, UPDATE the invoice, its status change, UPDATE the
    # sequence, the email's row (2 fixed inserts of the delivery outbox, issue 15: the email's
    # worker writes the PDF's version 1), the lines, the invoice.sent event, the webhook endpoints,
    # COMMIT (a draft has no payments)
    sent, sql = count("post", f"/api/invoices/{draft().pk}/send/")
    held = connection.vendor == "postgresql"
    # On PostgreSQL the two rows and the events' statement are held (billing.db.held_writes): each is
    # logged with no text of its own and goes with the next statement, whose text carries it — no
    # round trip of their own; the events, the send's last, are sent at the block's end (+1 logged,
    # the round trip they had anyway): 11 round trips, as many as the plain send's.
    assert sent == (14 if held else 13 + ENDPOINTS_READ), sql
    # What needs no number is written before the sequence is locked (held to the commit, the
    # organization's sends queue on it): only the email, which shows the number, comes after.
    sent_alone = [q for q in sql if q is not None]
    assert len(sent_alone) == (11 if held else sent), sql
    (sequence_lock,) = [i for i, q in enumerate(sent_alone) if 'FROM "invoices_invoicesequence"' in q]
    # (the events' statement has a job of its own, for webhook deliveries when there are some)
    job = [
        i
        for i, q in enumerate(sent_alone)
        if 'INSERT INTO "django_tasks_database_dbtaskresult"' in q and "events_event" not in q
    ]
    email = [i for i, q in enumerate(sent_alone) if 'INSERT INTO "delivery_outboundemail"' in q]
    assert not [q for q in sent_alone if "delivery_document" in q], sql
    if held:
        assert job == [sequence_lock], sql  # carried by the sequence's lock, ahead of it
        assert sent_alone[sequence_lock].startswith('INSERT INTO "django_tasks_database_dbtaskresult"')
        assert email[0] > sequence_lock, sql  # with the next read (the lines, for the event)
    else:
        assert job[0] < sequence_lock < email[0], sql
    # Without an email, the PDF's version 1 instead of the email's row: as many statements.
    no_email, sql = count("post", f"/api/invoices/{draft().pk}/send/", {"email": False})
    assert no_email == sent, sql
    # the credential, BEGIN, lock, UPDATE, the lines (nothing paid: no payments), the event, the
    # endpoints, COMMIT
    notes, sql = count("patch", f"/api/invoices/{draft().pk}/", {"notes": "Thanks"})
    assert notes == 7 + ENDPOINTS_READ, sql
    issued = invoice_send(organization=org(alice), invoice_id=draft().pk)
    notes_issued, sql = count("patch", f"/api/invoices/{issued.pk}/", {"notes": "Thanks"})
    # + a new PDF version of the issued invoice: its number (the latest version), its row, its job
    assert notes_issued == 10 + ENDPOINTS_READ, sql
    # the credential, BEGIN, lock, UPDATE, the status change, the lines (nothing paid), the event,
    # the endpoints, COMMIT
    voided, sql = count("post", f"/api/invoices/{issued.pk}/void/")
    assert voided == 8 + ENDPOINTS_READ, sql
    body = {
        "lines": LinePayloadFactory.build_batch(n_lines, description="x", quantity="1", unit_price="1.00")
    }
    # the credential, BEGIN, lock, the current lines, DELETE them, INSERT the new ones, UPDATE, the
    # event, the endpoints, COMMIT
    replaced, sql = count("patch", f"/api/invoices/{draft().pk}/", body)
    assert replaced == 9 + ENDPOINTS_READ, sql
    return sent, notes, voided, replaced


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", CALLERS)
def test_each_write_reads_its_invoice_once_whatever_its_lines(alice, alice_customer, kind):
    """The invoices were made by someone else than the caller, whose name the response shows."""
    client, key = fresh_key(org(alice))
    if kind == "member token":
        client, creator = client_for(alice), key
    else:
        creator = alice
    few = _write_counts(alice, client, creator, alice_customer, 1)
    many = _write_counts(alice, client, creator, alice_customer, 60)
    assert few == many
