"""The deliveries and the job a write's events queue in the events' own statement (PostgreSQL with the
database task backend: events.services._insert_queueing_deliveries) are the rows the ORM path writes
(`deliveries_queue`, `enqueue`), column for column, the job's arguments included (the deliveries'
ids, given by the database in that statement). On SQLite the ORM path is the only one, and the same
checks hold for it."""

import datetime

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from billing import db
from events.models import Event, WebhookDelivery, WebhookEndpoint
from events.services import Change, events_record

pytestmark = pytest.mark.django_db

FROZEN = datetime.datetime(2026, 12, 3, 9, 30, 0, 123456, tzinfo=datetime.UTC)
IN_SQL = connection.vendor == "postgresql"
JOB_COLUMNS = [
    f.attname for f in DBTaskResult._meta.concrete_fields if f.attname not in ("id", "args_kwargs")
]
DELIVERY_COLUMNS = [
    f.attname
    for f in WebhookDelivery._meta.concrete_fields
    if f.attname not in ("id", "event_id", "next_attempt_at")
]


@pytest.fixture
def endpoints(alice_org, bob_org):
    def make(organization, events, enabled=True):
        return WebhookEndpoint.objects.create(
            organization=organization,
            url="https://hooks.example.com/in",
            events=events,
            secret="x",
            enabled=enabled,
        )

    return {
        "all": make(alice_org, ["*"]),
        "paid": make(alice_org, ["invoice.paid"]),
        "customers": make(alice_org, ["customer.created", "customer.updated"]),
        "disabled": make(alice_org, ["*"], enabled=False),
        "bobs": make(bob_org, ["*"]),
    }


def record(organization) -> list[Event]:
    with transaction.atomic():
        return events_record(
            organization_id=organization.pk,
            changes=[
                Change("invoice.paid", {"id": 7, "number": "INV-0007"}),
                Change("customer.created", {"id": 3, "name": "Zoë 'O' %s"}),
                Change("payment.created", {"id": 9}),
            ],
        )


def queued(events: list[Event]) -> tuple[list, list]:
    """The deliveries of `events` ((event type, endpoint, columns)) and the jobs queued since."""
    types = {event.id: event.type for event in events}
    deliveries = sorted(
        (
            types[row["event_id"]],
            row["endpoint_id"],
            tuple(row[c] for c in DELIVERY_COLUMNS),
            row["next_attempt_at"],
        )
        for row in WebhookDelivery.objects.filter(event_id__in=types).values(
            "event_id", "next_attempt_at", *DELIVERY_COLUMNS
        )
    )
    jobs = list(DBTaskResult.objects.order_by("enqueued_at").values("task_path", "args_kwargs", *JOB_COLUMNS))
    DBTaskResult.objects.all().delete()
    return deliveries, jobs


def test_the_events_statement_queues_the_rows_the_orm_path_queues(alice_org, endpoints, monkeypatch):
    monkeypatch.setattr(timezone, "now", lambda: FROZEN)  # auto_now(_add) the same in both
    DBTaskResult.objects.all().delete()

    in_sql = record(alice_org)
    sql_deliveries, sql_jobs = queued(in_sql)
    monkeypatch.setattr(db, "ENABLED", False)  # the ORM's own path
    by_orm = record(alice_org)
    orm_deliveries, orm_jobs = queued(by_orm)

    # Each event to each enabled endpoint of Alice's that subscribes to its type; none of Bob's.
    expected = sorted(
        [
            ("customer.created", endpoints["all"].pk),
            ("customer.created", endpoints["customers"].pk),
            ("invoice.paid", endpoints["all"].pk),
            ("invoice.paid", endpoints["paid"].pk),
            ("payment.created", endpoints["all"].pk),
        ]
    )
    assert [(t, e) for t, e, _, _ in sql_deliveries] == expected
    assert [d[:3] for d in sql_deliveries] == [d[:3] for d in orm_deliveries]

    # Due at once: in the events' statement at the write's time (frozen here), on the ORM path at
    # the field's default (timezone.now as the model bound it, which the freeze does not reach).
    def just_now(moment):
        return abs(moment - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(minutes=1)

    for *_, next_attempt_at in sql_deliveries:
        assert (next_attempt_at == FROZEN) if IN_SQL else just_now(next_attempt_at)
    for *_, next_attempt_at in orm_deliveries:
        assert just_now(next_attempt_at)
    (sql_job,) = sql_jobs
    (orm_job,) = orm_jobs
    assert {c: sql_job[c] for c in JOB_COLUMNS} == {c: orm_job[c] for c in JOB_COLUMNS}
    assert sql_job["enqueued_at"] == FROZEN
    delivery_ids = list(
        WebhookDelivery.objects.filter(event__in=by_orm).order_by("pk").values_list("pk", flat=True)
    )
    assert (orm_job["task_path"], orm_job["args_kwargs"]) == (
        "events.tasks.send_webhooks",
        {"args": [delivery_ids], "kwargs": {}},
    )
    sql_delivery_ids = list(
        WebhookDelivery.objects.filter(event__in=in_sql).order_by("pk").values_list("pk", flat=True)
    )
    assert (sql_job["task_path"], sql_job["args_kwargs"]) == (
        "events.tasks.send_webhooks",
        {"args": [sql_delivery_ids], "kwargs": {}},
    )


def test_without_a_subscribed_endpoint_no_delivery_and_no_job(alice_org, bob_org, endpoints):
    DBTaskResult.objects.all().delete()
    WebhookEndpoint.objects.filter(organization=alice_org).exclude(pk=endpoints["paid"].pk).delete()
    with transaction.atomic():
        (event,) = events_record(
            organization_id=alice_org.pk, changes=[Change("customer.created", {"id": 1})]
        )
    assert not WebhookDelivery.objects.filter(event=event).exists()
    assert not DBTaskResult.objects.exists()


def test_the_events_job_sends_its_deliveries_once(alice_org, endpoints, monkeypatch):
    from events import webhooks

    sent = []
    monkeypatch.setattr(webhooks, "deliveries_send", lambda ids: sent.append(sorted(ids)))
    DBTaskResult.objects.all().delete()
    events = record(alice_org)
    (job,) = DBTaskResult.objects.all()
    job.task.call(*job.args_kwargs["args"])
    assert sent == [sorted(WebhookDelivery.objects.filter(event__in=events).values_list("pk", flat=True))]


def test_a_rolled_back_write_leaves_no_event_delivery_or_job(alice_org, endpoints):
    DBTaskResult.objects.all().delete()

    def refused():
        with transaction.atomic(), db.held_writes():
            events_record(organization_id=alice_org.pk, changes=[Change("invoice.paid", {"id": 1})])
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        refused()
    assert not Event.objects.exists()
    assert not WebhookDelivery.objects.exists()
    assert not DBTaskResult.objects.exists()


def test_each_write_queues_its_own_job_at_its_own_time(alice_org, endpoints, monkeypatch):
    # The job's columns that do not change from write to write are prepared once; its id and the
    # times (created, updated, due, enqueued) are each write's own.
    DBTaskResult.objects.all().delete()
    moments = [FROZEN, FROZEN + datetime.timedelta(seconds=5)]
    batches = []
    for moment in moments:
        monkeypatch.setattr(timezone, "now", lambda moment=moment: moment)
        batches.append(record(alice_org))
    jobs = list(DBTaskResult.objects.order_by("enqueued_at").values("id", "enqueued_at", "status"))
    assert len({job["id"] for job in jobs}) == 2
    assert [job["enqueued_at"] for job in jobs] == moments
    assert {job["status"] for job in jobs} == {"READY"}
    for events, moment in zip(batches, moments, strict=True):
        deliveries = WebhookDelivery.objects.filter(event__in=events)
        assert {(d.created_at, d.updated_at) for d in deliveries} == {(moment, moment)}
        if IN_SQL:
            assert {d.next_attempt_at for d in deliveries} == {moment}


def test_a_default_made_anew_for_each_row_is_not_frozen_into_the_prepared_parameters(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from events import services, tasks

    field = WebhookDelivery._meta.get_field("last_error")
    backend = tasks.send_webhooks.get_backend()
    services._queue_params.cache_clear()
    monkeypatch.setattr(field, "default", lambda: "a token of its own")
    try:
        with pytest.raises(ImproperlyConfigured, match=r"WebhookDelivery\.last_error"):
            services._queue_params(backend, connection.vendor)
    finally:
        services._queue_params.cache_clear()


def test_what_the_driver_adapts_with_an_object_of_its_own_is_prepared_for_each_write():
    # A JSON value is adapted by an object that keeps the connection that last quoted it: shared
    # between writes (threads, connections) it would carry one connection into another's statement.
    from events import services, tasks

    backend = tasks.send_webhooks.get_backend()
    template = services._queue_params(backend, connection.vendor)
    shared = (
        {at for at in range(len(template.values)) if at not in {a for a, _, _ in template.adapted}}
        - set(template.now_at)
        - {template.id_at}
    )
    assert all(isinstance(template.values[at], db.PLAIN) for at in shared)
    # PostgreSQL's JSON values are adapter objects; SQLite's are their text, the same every write.
    assert [field.name for _, field, _ in template.adapted] == (["worker_ids"] if IN_SQL else [])
    now = timezone.now()
    (_, first), (_, second) = services._queue_ctes(backend, now), services._queue_ctes(backend, now)
    for at, _, _ in template.adapted:
        assert first[at] is not second[at]
    assert first[template.id_at] != second[template.id_at]
