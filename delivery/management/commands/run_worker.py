"""`manage.py run_worker`: django-tasks-db's `db_worker` (takes every option of it), with the
delivery scheduler beside it — every DELIVERY_TICK_SECONDS, the outbox sweep (rows whose worker died,
jobs lost) and the reminders due. Run as many as you like, on any machines: the jobs are claimed with
SKIP LOCKED on PostgreSQL, the outbox rows by their lease, the reminders by a unique row.

The worker's loop is db_worker's, but it takes its next job in one statement (the backend's SELECT
... FOR UPDATE SKIP LOCKED of the first ready job and its UPDATE to running, inside a transaction,
are an UPDATE of the row a locking subquery picks, RETURNING it), and at the default verbosity it
logs a job only when it fails (`-v 2`: a line as each starts and ends, as db_worker does).
"""

import json
import logging
import os
import random
import threading
import time

from django.conf import settings
from django.core.management.base import CommandError
from django.db import OperationalError, close_old_connections, connections, router
from django.utils import timezone
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV, run_with_reloader
from django_tasks_db.compat import TASKS_LOGGER, TaskResultStatus
from django_tasks_db.management.commands import db_worker
from django_tasks_db.models import DBTaskResult, get_date_max
from django_tasks_db.utils import is_locked_database_exception

logger = logging.getLogger("delivery.scheduler")


def tick() -> None:
    from delivery.services import outbox_sweep, reminders_send
    from events.webhooks import webhooks_sweep

    swept = outbox_sweep() + webhooks_sweep()
    reminded = reminders_send()
    if swept or reminded:
        logger.info("scheduler: %s outbox row(s) queued again, %s reminder(s) queued", swept, reminded)


def _loop(stop: threading.Event) -> None:
    while not stop.wait(settings.DELIVERY_TICK_SECONDS):
        close_old_connections()
        try:
            tick()
        except Exception:  # the scheduler outlives a failed tick (the database restarting, say)
            logger.exception("scheduler: tick failed")
        finally:
            connections.close_all()


def take_sql(connection, *, queues: list[str] | None, excluded: list[str]) -> str:
    """The statement that takes the next job: the backend's choice (ready, due, of this backend and
    these queues, by priority, then run_after, then enqueued_at; a job another worker has locked
    skipped) and its claim (running, started now, this worker's id appended to `worker_ids`)."""
    q = connection.ops.quote_name
    table = q(DBTaskResult._meta.db_table)
    if connection.vendor == "postgresql":  # the worker's id as a one-item jsonb array
        append, skip_locked = f"({table}.{q('worker_ids')} || %s::jsonb)", " FOR UPDATE SKIP LOCKED"
    else:  # SQLite (the id as a string): one writer at a time, so no other worker takes the pick
        append, skip_locked = f"json_insert({table}.{q('worker_ids')}, '$[#]', %s)", ""
    where = [
        f"{q('status')} = %s",
        f"({q('run_after')} = %s OR {q('run_after')} <= %s)",
        f"{q('backend_name')} = %s",
    ]
    if queues is not None:
        where.append(f"{q('queue_name')} IN ({', '.join(['%s'] * len(queues))})")
    if excluded:
        where.append(f"NOT ({q('queue_name')} IN ({', '.join(['%s'] * len(excluded))}))")
    pick = (
        f"SELECT {q('id')} FROM {table} WHERE {' AND '.join(where)} "  # noqa: S608
        f"ORDER BY {q('priority')} DESC, {q('run_after')} ASC, {q('enqueued_at')} ASC LIMIT 1{skip_locked}"
    )
    return (
        f"UPDATE {table} SET {q('status')} = %s, {q('started_at')} = %s, {q('worker_ids')} = {append} "  # noqa: S608
        f"WHERE {table}.{q('id')} = ({pick}) RETURNING *"
    )


class Worker(db_worker.Worker):
    """db_worker's worker, taking each job in one statement (`take`)."""

    def take(self) -> DBTaskResult | None:
        """The next job, claimed by this worker; None when none is ready."""
        connection = connections[router.db_for_write(DBTaskResult)]
        queues = None if self.process_all_queues else self.queue_names
        if getattr(self, "_take", (None,))[0] != connection.vendor:
            self._take = (
                connection.vendor,
                take_sql(connection, queues=queues, excluded=self.excluded_queue_names),
            )
        sql = self._take[1]
        at = connection.ops.adapt_datetimefield_value
        now = timezone.now()
        params = [
            TaskResultStatus.RUNNING,
            at(now),
            json.dumps([self.worker_id]) if connection.vendor == "postgresql" else self.worker_id,
            TaskResultStatus.READY,
            at(get_date_max()),
            at(now),
            self.backend_name,
            *(queues or ()),
            *self.excluded_queue_names,
        ]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            columns = [column[0] for column in cursor.description]
            row = cursor.fetchone()
        if row is None:
            return None
        returned = dict(zip(columns, row, strict=True))
        fields = DBTaskResult._meta.concrete_fields
        values = []
        for field in fields:  # in the model's order, as from_db takes a whole row
            value, expression = returned[field.column], field.get_col(DBTaskResult._meta.db_table)
            for convert in connection.ops.get_db_converters(expression) + field.get_db_converters(connection):
                value = convert(value, expression, connection)
            values.append(value)
        return DBTaskResult.from_db(connection.alias, [f.attname for f in fields], values)

    def run(self) -> None:
        # db_worker.Worker.run, with `take` for its transaction of SELECT ... FOR UPDATE and UPDATE.
        db_worker.logger.info(
            "Starting worker worker_id=%s queues=%s", self.worker_id, ",".join(self.queue_names)
        )
        if self.startup_delay and self.interval:
            time.sleep(random.random())  # noqa: S311 (a spread start, not a secret)
        while self.running:
            close_old_connections()
            try:
                task_result, retrieved = self.take(), True
            except OperationalError as exc:
                if not is_locked_database_exception(exc):
                    raise
                task_result, retrieved = None, False  # SQLite busy: try again
            if task_result is not None:
                self.run_task(task_result)
            if self.batch and retrieved and task_result is None:
                db_worker.logger.info(
                    "No more tasks to run for worker_id=%s - exiting gracefully.", self.worker_id
                )
                return
            if self.max_tasks is not None and self._run_tasks >= self.max_tasks:
                db_worker.logger.info(
                    "Run maximum tasks (%d) on worker=%s - exiting gracefully.",
                    self._run_tasks,
                    self.worker_id,
                )
                return
            close_old_connections()
            if self.running and not task_result:
                time.sleep(self.interval)


class Command(db_worker.Command):
    help = "Run the background worker: the task queue, the outbox sweeper and the reminders."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--no-scheduler", action="store_true", help="Run jobs only (no sweeper, no reminders)."
        )

    def configure_logging(self, verbosity: int) -> None:
        super().configure_logging(verbosity)
        if verbosity == 1:
            # A line for every job at INFO costs the worker a share of each job; a failed one is
            # still logged (with its traceback, at ERROR).
            logging.getLogger(TASKS_LOGGER).setLevel(logging.WARNING)

    def handle(
        self,
        *,
        verbosity: int,
        queue_name: str,
        interval: float,
        batch: bool,
        backend_name: str,
        startup_delay: bool,
        reload: bool,
        max_tasks: int | None,
        worker_id: str,
        exclude_queues: str,
        no_scheduler: bool = False,
        **options,
    ) -> None:
        # db_worker.Command.handle, with this module's Worker and the scheduler's thread beside it.
        self.configure_logging(verbosity)
        if reload and batch:
            db_worker.logger.warning(
                "Warning: --reload and --batch cannot be specified together. Disabling autoreload."
            )
            reload = False
        queue_names = queue_name.split(",")
        excluded_queue_names = exclude_queues.split(",") if exclude_queues else []
        if excluded_queue_names and "*" not in queue_names:
            raise CommandError("--exclude-queues can only be used with --queue-name=*")
        worker = Worker(
            queue_names=queue_names,
            interval=interval,
            batch=batch,
            backend_name=backend_name,
            startup_delay=startup_delay,
            max_tasks=max_tasks,
            worker_id=worker_id,
            excluded_queue_names=excluded_queue_names,
        )
        stop = threading.Event()
        if not no_scheduler:
            threading.Thread(target=_loop, args=(stop,), name="delivery-scheduler", daemon=True).start()
        try:
            if reload:
                if os.environ.get(DJANGO_AUTORELOAD_ENV) == "true":
                    worker.configure_signals()  # only the reloader's child
                run_with_reloader(worker.run)
            else:
                worker.configure_signals()
                worker.run()
        finally:
            stop.set()
