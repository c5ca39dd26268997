from django.conf import settings
from django.core.management.base import BaseCommand

from events.services import events_purge


class Command(BaseCommand):
    help = (
        "Delete the events older than EVENT_RETENTION_DAYS, with their webhook deliveries, in batches. "
        "Safe from cron at any rate."
    )

    def handle(self, *args, **options):
        deleted = events_purge()
        self.stdout.write(f"{deleted} event(s) older than {settings.EVENT_RETENTION_DAYS} days deleted.")
