"""The task backend: django-tasks-db's database backend, its job rows inserted with the statement
the ORM compiles for them kept (billing.db), as for every table a request writes. A job is the row
the library writes and reads, column for column (tests/test_tasks_backend.py pins it against the
library's own enqueue); `TASKS_BACKEND` still names any other django.tasks backend."""

from django_tasks.signals import task_enqueued
from django_tasks.utils import normalize_json
from django_tasks_db.backend import DatabaseBackend as LibraryBackend
from django_tasks_db.models import get_date_max


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
        """The library's `enqueue` with its TaskResult built once: the library builds the same one
        twice, for the `task_enqueued` signal and to return it, and each build imports and copies
        the task (about 60 us a job; every send queues one)."""
        self.validate_task(task)
        result = self._task_to_db_task(task, args, kwargs).task_result
        task_enqueued.send(type(self), task_result=result)
        return result

    def _task_to_db_task(self, task, args, kwargs):
        job = self.job(task, args, kwargs)
        job.save(force_insert=True)
        return job
