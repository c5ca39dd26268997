"""The statements the worker sends for a job, on SQLite and PostgreSQL: taking the job, claiming and
reading its outbox row, recording the outcome. Each is pinned, so a change that adds a round trip to
every webhook or email shows here; and what the statements written once (not compiled by the ORM on
every job) do is pinned against what the ORM's own would do.

- A job: taken in one statement (`run_worker.Worker.take`: the backend's SELECT ... FOR UPDATE SKIP
  LOCKED and its UPDATE to running), its result saved in one.
- A webhook delivery: claimed and read with its event and endpoint in one statement on PostgreSQL
  (two on SQLite), its success recorded in one UPDATE; the endpoint is written only when its
  failing streak ends.
- An email whose PDF is stored: claimed and read with its invoice, organization and customer in one
  statement on PostgreSQL (two on SQLite), the latest PDF version read, the outcome recorded.
"""

from __future__ import annotations

import datetime
import threading

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from delivery import services, tasks
from delivery.management.commands.run_worker import Worker
from delivery.models import Document, OutboundEmail
from events.models import WebhookDelivery, WebhookEndpoint
from events.services import Change, events_record
from events.webhooks import delivery_send, endpoint_create
from tests.conftest import client_for
from tests.invoice_helpers import create_invoice, invoice_url
from tests.smtp_helpers import smtp_server
from tests.webhook_helpers import Receiver

__all__ = ["smtp_server"]  # the fixture, imported to be used here

pytestmark = pytest.mark.django_db

POSTGRESQL = connection.vendor == "postgresql"
CLAIM_AND_READ = 1 if POSTGRESQL else 2  # a WITH on PostgreSQL; the claim, then the read, on SQLite


def statements(captured: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in captured.captured_queries]


def worker(**options) -> Worker:
    defaults = {
        "queue_names": ["default"],
        "interval": 0,
        "batch": True,
        "backend_name": "default",
        "startup_delay": False,
        "max_tasks": None,
        "worker_id": "worker-1",
        "excluded_queue_names": [],
    }
    return Worker(**(defaults | options))


# --- the job -------------------------------------------------------------------------------------


def test_a_job_is_taken_in_one_statement_and_marked_running_for_this_worker():
    result = tasks.send_email.enqueue(12345)

    with CaptureQueriesContext(connection) as captured:
        taken = worker(worker_id="worker-a").take()

    assert len(captured) == 1, statements(captured)
    assert str(taken.id) == result.id
    assert (taken.status, taken.worker_ids, taken.args_kwargs) == (
        "RUNNING",
        ["worker-a"],
        {"args": [12345], "kwargs": {}},
    )
    assert taken.started_at is not None
    stored = DBTaskResult.objects.get(pk=taken.pk)
    assert (stored.status, stored.worker_ids, stored.started_at) == (
        "RUNNING",
        ["worker-a"],
        taken.started_at,
    )
    assert worker().take() is None  # running: nobody takes it again


def test_a_job_run_again_keeps_the_ids_of_every_worker_that_took_it():
    result = tasks.send_email.enqueue(1)
    DBTaskResult.objects.filter(pk=result.id).update(worker_ids=["worker-dead"])

    taken = worker(worker_id="worker-b").take()

    assert taken.worker_ids == ["worker-dead", "worker-b"]
    assert DBTaskResult.objects.get(pk=result.id).worker_ids == ["worker-dead", "worker-b"]


def test_jobs_are_taken_in_the_backends_order_and_only_when_due_and_of_the_workers_queues(settings):
    settings.TASKS = {
        "default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default", "other"]}
    }
    now = timezone.now()
    later = tasks.send_email.using(run_after=now + datetime.timedelta(hours=1)).enqueue(1)
    plain = tasks.send_email.enqueue(2)
    urgent = tasks.send_email.using(priority=10).enqueue(3)
    due_earlier = tasks.send_email.using(run_after=now - datetime.timedelta(minutes=1)).enqueue(4)
    elsewhere = tasks.send_email.using(queue_name="other").enqueue(5)
    library = DBTaskResult.objects.ready().filter(backend_name="default", queue_name__in=["default"])
    expected = [str(pk) for pk in library.values_list("pk", flat=True)]

    taken = []
    while (job := worker().take()) is not None:
        taken.append(str(job.id))

    assert taken == expected == [urgent.id, due_earlier.id, plain.id]
    assert later.id not in taken
    assert elsewhere.id not in taken
    assert str(worker(queue_names=["*"]).take().id) == elsewhere.id
    assert worker(queue_names=["*"], excluded_queue_names=["other"]).take() is None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_taking_at_once_never_take_the_same_job():
    ids = {tasks.send_email.enqueue(n).id for n in range(40)}
    taken: list[str] = []
    lock = threading.Lock()

    def take_all(name: str) -> None:
        try:
            while (job := worker(worker_id=name).take()) is not None:
                with lock:
                    taken.append(str(job.id))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=take_all, args=(f"worker-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert sorted(taken) == sorted(ids)  # each once
    assert {len(w) for w in DBTaskResult.objects.values_list("worker_ids", flat=True)} == {1}


# --- webhook deliveries --------------------------------------------------------------------------


@pytest.fixture
def receiver(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True  # the receiver is on 127.0.0.1
    settings.WEBHOOK_TIMEOUT_SECONDS = 2
    with Receiver() as running:
        yield running


@pytest.fixture
def endpoint(alice_org, receiver):
    endpoint, _ = endpoint_create(organization_id=alice_org.pk, url=receiver.url, events=["*"])
    return endpoint


def queued_delivery(organization) -> WebhookDelivery:
    with transaction.atomic():
        (event,) = events_record(
            organization_id=organization.pk,
            changes=[Change(type="invoice.paid", object={"id": 7, "number": "INV-0007"})],
        )
    return WebhookDelivery.objects.get(event=event)


def test_a_delivered_webhook_is_claimed_and_read_in_one_statement_and_recorded_in_one(
    alice_org, endpoint, receiver
):
    delivery = queued_delivery(alice_org)

    with CaptureQueriesContext(connection) as captured:
        assert delivery_send(delivery.pk) == "delivered"

    assert len(captured) == CLAIM_AND_READ + 1, statements(captured)
    assert len(receiver.requests) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)


def test_a_delivery_ending_its_endpoints_failing_streak_writes_the_endpoint_too(
    alice_org, endpoint, receiver
):
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=timezone.now())
    delivery = queued_delivery(alice_org)

    with CaptureQueriesContext(connection) as captured:
        assert delivery_send(delivery.pk) == "delivered"

    assert len(captured) == CLAIM_AND_READ + 2, statements(captured)
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None


def test_a_delivery_done_or_leased_is_one_statement_and_not_sent(alice_org, endpoint, receiver):
    delivery = queued_delivery(alice_org)
    assert WebhookDelivery.claim(delivery.pk)  # another worker holds it

    with CaptureQueriesContext(connection) as captured:
        assert delivery_send(delivery.pk) is None

    assert len(captured) == 1, statements(captured)
    assert receiver.requests == []


def test_the_claimed_delivery_reads_as_the_orm_reads_it_after_the_claim(alice_org, endpoint):
    delivery = queued_delivery(alice_org)
    claimed_at = timezone.now()

    claimed = WebhookDelivery.claim_and_get(delivery.pk, related=("event", "endpoint"), now=claimed_at)

    orm = WebhookDelivery.objects.select_related("event", "endpoint").get(pk=delivery.pk)
    assert (orm.status, orm.attempts, orm.updated_at) == ("sending", 1, claimed_at)
    for mine, theirs in ((claimed, orm), (claimed.event, orm.event), (claimed.endpoint, orm.endpoint)):
        assert type(mine) is type(theirs)
        for field in type(mine)._meta.concrete_fields:
            assert getattr(mine, field.attname) == getattr(theirs, field.attname), field.name
    assert claimed._loaded == orm._loaded  # an owned row remembers what was read, as from_db does
    assert claimed.endpoint._loaded == orm.endpoint._loaded


@pytest.mark.parametrize(
    ("state", "taken"),
    [
        ({"status": "pending"}, True),
        ({"status": "pending", "next_attempt_at": "future"}, False),
        ({"status": "sending", "lease_expires_at": "future"}, False),
        ({"status": "sending", "lease_expires_at": "past"}, True),
        ({"status": "delivered"}, False),
        ({"status": "failed"}, False),
    ],
    ids=["due", "not yet due", "leased", "lease expired", "delivered", "failed"],
)
def test_the_claim_takes_what_the_orms_update_took(alice_org, endpoint, state, taken, settings):
    delivery = queued_delivery(alice_org)
    now = timezone.now()
    when = {"future": now + datetime.timedelta(minutes=5), "past": now - datetime.timedelta(seconds=1)}
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        **{k: when.get(v, v) for k, v in state.items()}, attempts=2
    )
    before = WebhookDelivery.objects.get(pk=delivery.pk)

    assert WebhookDelivery.claim(delivery.pk, now=now) is taken

    after = WebhookDelivery.objects.get(pk=delivery.pk)
    if taken:
        lease = now + datetime.timedelta(seconds=settings.WEBHOOK_LEASE_SECONDS)
        assert (after.status, after.attempts, after.lease_expires_at, after.updated_at) == (
            "sending",
            3,
            lease,
            now,
        )
    else:
        assert (after.status, after.attempts, after.updated_at) == (before.status, 2, before.updated_at)
        assert WebhookDelivery.claim_and_get(delivery.pk, related=("event",), now=now) is None


# --- emails --------------------------------------------------------------------------------------


@pytest.fixture
def sent_invoice_email(smtp_server, alice, alice_org, make_customer):
    """An email queued by a send, its PDF version rendered and stored (the email's job not run)."""
    api = client_for(alice)
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    draft = create_invoice(api, customer)
    assert api.post(invoice_url(draft["id"], "send"), {}, format="json").status_code == 200
    services.invoice_pdf(services._invoice_for_rendering(draft["id"]))  # version 1, stored
    (document,) = Document.objects.filter(invoice_id=draft["id"])
    assert document.status == "stored"
    return OutboundEmail.objects.get(invoice_id=draft["id"])


def test_an_email_with_its_pdf_stored_is_claimed_and_read_in_one_statement(sent_invoice_email, smtp_server):
    with CaptureQueriesContext(connection) as captured:
        services.email_deliver(sent_invoice_email.pk)

    # The claim with the email's invoice, organization and customer; the latest PDF version; sent.
    assert len(captured) == CLAIM_AND_READ + 2, statements(captured)
    assert len(smtp_server.messages) == 1
    sent_invoice_email.refresh_from_db()
    assert (sent_invoice_email.status, sent_invoice_email.attempts) == ("sent", 1)


def test_an_email_whose_pdf_is_not_stored_reads_the_lines_to_render_it(
    smtp_server, alice, alice_org, make_customer
):
    api = client_for(alice)
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    draft = create_invoice(api, customer)
    assert api.post(invoice_url(draft["id"], "send"), {}, format="json").status_code == 200
    email = OutboundEmail.objects.get(invoice_id=draft["id"])

    with CaptureQueriesContext(connection) as captured:
        services.email_deliver(email.pk)

    # ... and version 1 written claimed (in a savepoint here, inside the test's transaction; its own
    # transaction in a worker), the lines, the version stored.
    assert len(captured) == CLAIM_AND_READ + 2 + 3 + 2, statements(captured)
    assert len(smtp_server.messages) == 1
    assert Document.objects.get(invoice_id=draft["id"]).status == "stored"


def test_the_whole_job_of_a_send_with_its_pdf_stored(sent_invoice_email, smtp_server):
    job = DBTaskResult.objects.get(
        task_path="delivery.tasks.deliver_invoice", args_kwargs__args=[sent_invoice_email.invoice_id]
    )
    the_worker = worker()

    with CaptureQueriesContext(connection) as captured:
        taken = the_worker.take()
        the_worker.run_task(taken)

    assert taken.pk == job.pk
    # Take the job; the invoice's emails waiting; claim and read the email (two on SQLite); the PDF
    # version; sent; the result.
    assert len(captured) == 1 + 1 + CLAIM_AND_READ + 2 + 1, statements(captured)
    assert DBTaskResult.objects.get(pk=job.pk).status == "SUCCESSFUL"
    assert len(smtp_server.messages) == 1


def test_the_claimed_email_reads_as_the_orm_reads_it(sent_invoice_email):
    related = ("invoice", "invoice__organization", "invoice__customer")

    claimed = OutboundEmail.claim_and_get(sent_invoice_email.pk, related=related)

    orm = OutboundEmail.objects.select_related(*related).get(pk=sent_invoice_email.pk)
    pairs = [
        (claimed, orm),
        (claimed.invoice, orm.invoice),
        (claimed.invoice.organization, orm.invoice.organization),
        (claimed.invoice.customer, orm.invoice.customer),
    ]
    for mine, theirs in pairs:
        for field in type(mine)._meta.concrete_fields:
            assert getattr(mine, field.attname) == getattr(theirs, field.attname), (type(mine), field.name)
    assert (claimed.to, claimed.status, claimed.attempts) == (["ap@acme.example"], "sending", 1)
