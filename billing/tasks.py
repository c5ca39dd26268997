"""The task backend: django-tasks-db's database backend, its job rows inserted with the statement
the ORM compiles for them kept (billing.db), as for every table a request writes, and their
values prepared once per task. A job is the row the library writes and reads, column for column
(tests/test_tasks_backend.py pins it against the library's own enqueue); `TASKS_BACKEND` still
names any other django.tasks backend."""

from __future__ import annotations

import functools

from django.db import connections, router, transaction
from django_tasks.signals import task_enqueued
from django_tasks.utils import normalize_json
from django_tasks_db.backend import DatabaseBackend as LibraryBackend
from django_tasks_db.backend import TaskResult
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import get_date_max
from django_tasks_db.utils import normalize_uuid

from billing import db


class DatabaseBackend(LibraryBackend):
    def job(self, task, args, kwargs):
        """The row `enqueue` writes for `task` called with `args` and `kwargs`, not saved: the
        library's values, so that a statement may write it where the task cannot be enqueued (the
        events' own statement, events.services)."""
        from billing.models import Job

        return Job(
            id=self._get_id(),
            args_kwargs=normalize_json({"args": args, "kwargs": kwargs}),
            priority=task.priority,
            task_path=task.module_path,
            queue_name=task.queue_name,
            # As the library's pre_save receiver for its own model sets it (a proxy's save sends
            # its signals with the proxy as sender).
            run_after=task.run_after if task.run_after is not None else get_date_max(),
            backend_name=self.alias,
        )

    def enqueue(self, task, args, kwargs):
        """The library's `enqueue`, its row written by `_insert` and its TaskResult built once, from
        the task enqueued: the library builds the same one twice (for the `task_enqueued` signal
        and to return it), and each build imports the task by its path and copies it."""
        self.validate_task(task)
        job = self.job(task, args, kwargs)
        _insert(job)
        result = TaskResult(
            db_result=job,
            task=task,
            id=normalize_uuid(job.id),
            status=TaskResultStatus[job.status],
            enqueued_at=job.enqueued_at,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=job.args_kwargs["args"],
            kwargs=job.args_kwargs["kwargs"],
            backend=job.backend_name,
            errors=[],
            worker_ids=job.worker_ids,
        )
        object.__setattr__(result, "_return_value", job.return_value)
        task_enqueued.send(type(self), task_result=result)
        return result

    def _task_to_db_task(self, task, args, kwargs):
        job = self.job(task, args, kwargs)
        _insert(job)
        return job


def _insert(job) -> None:
    """INSERT `job` as `job.save(force_insert=True)` does — its kept statement (`db.insert_compiled`),
    the values its fields prepare, `enqueued_at` set on it — without the rest of `save()`: no model
    signals (nothing listens to a job's; the library's own pre_save receiver is for its model, and
    `job()` sets what it would), none of its checks of a new row's relations (a job has none). The
    values that are the same for every job of one task, queue, priority and backend are prepared
    once (`_prepared`); a job prepares only its id, the time it is written, its arguments, its
    `run_after` and each other value that is an object the driver adapts (JSON) or is made anew
    for it. So `job` is one `job()` built: every column that it does not set is its default, and
    the defaults are what `_prepared` keeps."""
    using = router.db_for_write(type(job), instance=job)
    connection = connections[using]
    model = job._meta.concrete_model
    fields = model._meta.local_concrete_fields
    key = (using, connection.vendor, job.task_path, job.priority, job.queue_name, job.backend_name)
    # As save_base does: a failed INSERT marks the atomic block it ran in for rollback.
    with transaction.mark_for_rollback_on_error(using):
        returned = db.insert_compiled(job, using, fields, [], False, prepared=_prepared(model, key))
    if returned is None:  # not kept (or tests capturing the ORM's own): the ORM's save
        job.save(force_insert=True)
        return
    job._state.adding = False
    job._state.db = using


@functools.lru_cache(maxsize=64)
def _prepared(model, key: tuple) -> tuple:
    """Each column's value for a job of `model` (`key`: the database, its vendor and the job's
    task, priority, queue and backend) prepared once, or `db.PER_ROW` for those a job prepares
    itself."""
    using, _, task_path, priority, queue_name, backend_name = key
    connection = connections[using]
    sample = model(task_path=task_path, priority=priority, queue_name=queue_name, backend_name=backend_name)
    fixed = []
    for field in model._meta.local_concrete_fields:
        if (
            field.primary_key
            or field.attname in ("args_kwargs", "run_after")
            or getattr(field, "auto_now", False)
            or getattr(field, "auto_now_add", False)
            or (field.has_default() and callable(field.default))
        ):
            # Its own id, arguments, time to run and time written, or a value made anew for it.
            fixed.append(db.PER_ROW)
            continue
        prepared = field.get_db_prep_save(field.pre_save(sample, True), connection)
        fixed.append(prepared if isinstance(prepared, db.PLAIN) else db.PER_ROW)
    return tuple(fixed)
