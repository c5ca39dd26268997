from django.core.management.base import BaseCommand

from delivery.services import reminders_send


class Command(BaseCommand):
    help = (
        "Queue the payment reminders due now (each organization's reminder_days, in its time zone): each "
        "(invoice, step) at most once, missed runs caught up with the latest step only. Safe from cron at any "
        "rate; the worker's scheduler runs it too."
    )

    def handle(self, *args, **options):
        queued = reminders_send()
        self.stdout.write(f"{queued} reminder(s) queued.")
