from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand
from django.utils import timezone

from billing.models import IdempotencyKey


class Command(BaseCommand):
    help = "Delete idempotency keys older than IDEMPOTENCY_KEY_TTL_HOURS (default 24); run it daily."

    def add_arguments(self, parser):
        parser.add_argument("--hours", type=int, default=None, help="Override the retention, at least 24.")

    def handle(self, *args, hours=None, **options):
        hours = max(24, hours if hours is not None else settings.IDEMPOTENCY_KEY_TTL_HOURS)
        cutoff = timezone.now() - timedelta(hours=hours)
        deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
        self.stdout.write(
            f"{deleted} idempotency key{'s' if deleted != 1 else ''} older than {hours} h deleted"
        )
