"""`manage.py run_worker`: django-tasks-db's `db_worker` (takes every option of it), with the
delivery scheduler beside it — every DELIVERY_TICK_SECONDS, the outbox sweep (rows whose worker died,
jobs lost) and the reminders due. Run as many as you like, on any machines: the jobs are claimed with
SKIP LOCKED on PostgreSQL, the outbox rows by their lease, the reminders by a unique row."""

import logging
import threading

from django.conf import settings
from django.db import close_old_connections, connections
from django_tasks_db.management.commands.db_worker import Command as DbWorkerCommand

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


class Command(DbWorkerCommand):
    help = "Run the background worker: the task queue, the outbox sweeper and the reminders."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--no-scheduler", action="store_true", help="Run jobs only (no sweeper, no reminders)."
        )

    def handle(self, *args, no_scheduler=False, **options):
        stop = threading.Event()
        if not no_scheduler:
            threading.Thread(target=_loop, args=(stop,), name="delivery-scheduler", daemon=True).start()
        try:
            super().handle(*args, **options)
        finally:
            stop.set()
