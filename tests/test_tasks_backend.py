"""billing.tasks.DatabaseBackend: django-tasks-db's backend, its job rows inserted with the kept
statement. A job must be the row the library itself writes, column for column, and the library's
worker must take and run it as its own."""

import datetime

import pytest
from django.utils import timezone
from django_tasks import task_backends
from django_tasks.signals import task_enqueued
from django_tasks_db.backend import DatabaseBackend as LibraryBackend
from django_tasks_db.models import DBTaskResult

from billing.models import Job
from billing.tasks import DatabaseBackend
from delivery import tasks

pytestmark = pytest.mark.django_db

COMPARED = [f.attname for f in DBTaskResult._meta.concrete_fields if f.attname not in ("id", "enqueued_at")]


def row(result_id) -> dict:
    return DBTaskResult.objects.filter(pk=result_id).values(*COMPARED).get()


@pytest.mark.parametrize(
    "using",
    [
        {},
        {"priority": 10},
        {"queue_name": "other"},
        {"run_after": datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)},
    ],
    ids=["plain", "priority", "queue", "run_after"],
)
def test_a_job_is_the_row_the_librarys_enqueue_writes(settings, using):
    settings.TASKS = {
        "default": {"BACKEND": "billing.tasks.DatabaseBackend", "QUEUES": ["default", "other"]},
        "library": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default", "other"]},
    }
    ours = tasks.send_email.using(**using).enqueue(42)
    theirs = tasks.send_email.using(backend="library", **using).enqueue(42)
    assert isinstance(task_backends["default"], DatabaseBackend)
    assert type(task_backends["library"]) is LibraryBackend
    assert row(ours.id) | {"backend_name": "library"} == row(theirs.id)
    assert ours.args == theirs.args == [42]
    assert ours.status == theirs.status
    enqueued = DBTaskResult.objects.get(pk=ours.id).enqueued_at
    assert abs(enqueued - timezone.now()) < datetime.timedelta(minutes=1)


def test_the_default_backend_is_ours_and_its_rows_are_the_librarys():
    result = tasks.deliver_invoice.enqueue(7)
    assert isinstance(task_backends["default"], DatabaseBackend)
    stored = DBTaskResult.objects.get(pk=result.id)
    assert (stored.task_path, stored.args_kwargs, stored.status) == (
        "delivery.tasks.deliver_invoice",
        {"args": [7], "kwargs": {}},
        "READY",
    )
    assert Job.objects.get(pk=result.id).pk == stored.pk  # the same row, seen through the proxy
    assert task_backends["default"].get_result(result.id).id == result.id


def test_enqueue_sends_the_librarys_signal_once_with_the_result_it_returns(settings):
    settings.TASKS = {
        "default": {"BACKEND": "billing.tasks.DatabaseBackend"},
        "library": {"BACKEND": "django_tasks_db.DatabaseBackend"},
    }
    heard = []

    def receiver(sender, task_result, **kwargs):
        heard.append((sender, task_result))

    task_enqueued.connect(receiver)
    try:
        ours = tasks.send_email.enqueue(42)
        theirs = tasks.send_email.using(backend="library").enqueue(42)
    finally:
        task_enqueued.disconnect(receiver)
    assert [sender for sender, _ in heard] == [DatabaseBackend, LibraryBackend]
    assert heard[0][1] is ours
    for (_, result), returned in zip(heard, (ours, theirs), strict=True):
        assert (result.id, result.args, result.status, result.task.name) == (
            returned.id,
            [42],
            returned.status,
            "send_email",
        )


def test_each_job_prepares_its_own_id_time_arguments_and_run_after():
    # The values the same for every job of a task are prepared once (billing.tasks._prepared); what
    # is a job's own is prepared for it, and a JSON value (on PostgreSQL an adapter object that
    # keeps the connection that last quoted it) is never shared between jobs.
    from django.db import connection

    from billing import db
    from billing.tasks import _prepared

    later = datetime.datetime(2031, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    sent = []

    def capture(execute, sql, params, many, context):
        if "django_tasks_database_dbtaskresult" in db._EXECUTED.get(sql, sql):
            sent.append(params)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        first = tasks.send_email.enqueue(1)
        second = tasks.send_email.using(run_after=later).enqueue(2)
        third = tasks.deliver_invoice.enqueue(3)
    rows = {
        r["id"]: r
        for r in DBTaskResult.objects.filter(pk__in=[first.id, second.id, third.id]).values(
            "id", "args_kwargs", "run_after", "task_path", "enqueued_at"
        )
    }
    assert [rows[r.db_result.pk]["args_kwargs"]["args"] for r in (first, second, third)] == [[1], [2], [3]]
    assert rows[second.db_result.pk]["run_after"] == later
    assert rows[first.db_result.pk]["run_after"] == rows[third.db_result.pk]["run_after"] > later
    assert rows[third.db_result.pk]["task_path"] == "delivery.tasks.deliver_invoice"
    assert first.enqueued_at == rows[first.db_result.pk]["enqueued_at"]
    assert len(sent) == 3
    for at, value in enumerate(sent[0]):
        if not isinstance(value, db.PLAIN):
            assert value is not sent[1][at]
    model = type(first.db_result)._meta.concrete_model
    fields = [f.attname for f in model._meta.local_concrete_fields]
    key = ("default", connection.vendor, first.task.module_path, first.task.priority, "default", "default")
    per_row = [name for name, value in zip(fields, _prepared(model, key), strict=True) if value is db.PER_ROW]
    assert set(per_row) >= {"id", "enqueued_at", "args_kwargs", "run_after", "worker_ids"}
    assert not {"task_path", "status", "priority", "queue_name"} & set(per_row)


def test_a_job_insert_that_fails_marks_its_atomic_block_for_rollback_as_save_does(monkeypatch):
    from django.db import DatabaseError, connection, transaction

    from billing import db

    def fail(*args, **kwargs):
        raise DatabaseError("refused")

    monkeypatch.setattr(db, "insert_compiled", fail)
    with transaction.atomic():
        with pytest.raises(DatabaseError):
            tasks.send_email.enqueue(1)
        assert connection.needs_rollback
        transaction.set_rollback(False)  # what a caller that caught it on purpose would do
