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
