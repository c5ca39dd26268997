import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from customers.models import Customer

DEMO_CUSTOMERS = [
    {"name": "Acme Corporation", "email": "billing@acme.example", "tax_id": "US-11-2233445"},
    {"name": "Globex Ltd", "email": "ap@globex.example", "address": "1 Globex Way\nCypress Creek"},
    {"name": "Initech", "email": "accounts@initech.example", "phone": "+1 555 0100"},
    {"name": "Umbrella GmbH", "email": "rechnung@umbrella.example", "tax_id": "DE123456789"},
]


class Command(BaseCommand):
    help = "Create (or reset) the demo user with a fresh password and a few customers."

    def handle(self, *args, **options):
        User = get_user_model()
        password = secrets.token_urlsafe(12)
        with transaction.atomic():
            user, created = User.objects.get_or_create(
                username="demo", defaults={"email": "demo@example.com"}
            )
            user.set_password(password)
            user.save()
            if not Customer.objects.filter(owner=user).exists():
                Customer.objects.bulk_create(Customer(owner=user, **fields) for fields in DEMO_CUSTOMERS)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo user {'created' if created else 'ready'}: username 'demo', password '{password}'"
            )
        )
