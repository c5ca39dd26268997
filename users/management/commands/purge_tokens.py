from django.core.management.base import BaseCommand
from django.utils import timezone
from knox.models import get_token_model


class Command(BaseCommand):
    help = "Delete expired API tokens (they are already refused; this only reclaims the rows)."

    def handle(self, *args, **options):
        deleted, _ = get_token_model().objects.filter(expiry__lt=timezone.now()).delete()
        self.stdout.write(f"{deleted} expired token{'s' if deleted != 1 else ''} deleted")
