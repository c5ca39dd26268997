import datetime
import secrets
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from customers.models import Customer
from invoices.models import Invoice
from invoices.services import invoice_create, invoice_mark_overdue, invoice_send, invoice_void
from payments.services import payment_record

DEMO_CUSTOMERS = [
    {"name": "Acme Corporation", "email": "billing@acme.example", "tax_id": "US-11-2233445"},
    {"name": "Globex Ltd", "email": "ap@globex.example", "address": "1 Globex Way\nCypress Creek"},
    {"name": "Initech", "email": "accounts@initech.example", "phone": "+1 555 0100"},
    {"name": "Umbrella GmbH", "email": "rechnung@umbrella.example", "tax_id": "DE123456789"},
]


# The demo operator, for /admin/: a fixed, printed password, so it is made only for a local demo
# (DEBUG on) unless --force says otherwise.
OPERATOR_USERNAME = "admin"
OPERATOR_PASSWORD = "admin-demo"


def _line(description: str, quantity: str, unit_price: str, tax_rate: str = "0") -> dict:
    return {
        "description": description,
        "quantity": Decimal(quantity),
        "unit_price": Decimal(unit_price),
        "tax_rate": Decimal(tax_rate),
    }


class Command(BaseCommand):
    help = (
        "Create (or reset) the demo user with a fresh password, customers and invoices in every state, "
        f"and the demo operator for /admin/ ('{OPERATOR_USERNAME}', a fixed password: only with "
        "DJANGO_DEBUG=1 unless --force)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--force",
            action="store_true",
            help="Create the demo operator even with DEBUG off (its password is printed and fixed).",
        )

    def handle(self, *args, **options):
        User = get_user_model()
        password = secrets.token_urlsafe(12)
        make_operator = settings.DEBUG or options["force"]
        operator_state = None
        with transaction.atomic():
            user, created = User.objects.get_or_create(
                username="demo", defaults={"email": "demo@example.com"}
            )
            user.set_password(password)
            user.save()
            if not Customer.objects.filter(organization=user).exists():
                self._seed(user)
            if make_operator:
                operator_state = self._operator(User)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo user {'created' if created else 'ready'}: username 'demo', password '{password}'"
            )
        )
        if operator_state is not None:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Demo operator {operator_state}: username '{OPERATOR_USERNAME}', "
                    f"password '{OPERATOR_PASSWORD}' (/admin/)"
                )
            )
        elif not make_operator:
            self.stderr.write(
                self.style.WARNING(
                    "No demo operator: DEBUG is off, and its password is fixed and printed. "
                    "Pass --force to make it anyway, or create a real one with createsuperuser."
                )
            )

    def _operator(self, User) -> str | None:
        """The staff superuser of the demo, its password set again on every run (as the demo user's
        is), so the printed login always works. A non-staff user already named so (a sign-up) is
        never promoted."""
        operator, created = User.objects.get_or_create(
            username=OPERATOR_USERNAME,
            defaults={"email": "admin@example.com", "is_staff": True, "is_superuser": True},
        )
        if not created and not operator.is_staff:
            self.stderr.write(
                self.style.WARNING(
                    f"A user '{OPERATOR_USERNAME}' exists and is not staff: no demo operator was made."
                )
            )
            return None
        operator.is_superuser = operator.is_active = True
        operator.set_password(OPERATOR_PASSWORD)
        operator.save()
        return "created" if created else "ready"

    def _seed(self, user) -> None:
        acme, globex, initech, umbrella = Customer.objects.bulk_create(
            Customer(organization=user, **fields) for fields in DEMO_CUSTOMERS
        )
        today = timezone.localdate()

        def ago(days: int) -> datetime.date:
            return today - datetime.timedelta(days=days)

        hosting = [
            _line("Hosting, monthly", "1", "49.00", "8.25"),
            _line("Support hours", "2.5", "80.00", "8.25"),
        ]

        invoice_create(
            organization=user,
            customer_id=acme.pk,
            due_date=today + datetime.timedelta(days=30),
            lines=hosting,
        )
        sent = invoice_create(
            organization=user, customer_id=acme.pk, issue_date=ago(10), due_date=ago(-20), lines=hosting
        )
        invoice_send(organization=user, invoice_id=sent.pk)
        partly = invoice_create(
            organization=user,
            customer_id=globex.pk,
            issue_date=ago(20),
            due_date=ago(-10),
            lines=[_line("Audit", "1", "1200.00")],
        )
        invoice_send(organization=user, invoice_id=partly.pk)
        payment_record(
            organization=user, invoice_id=partly.pk, amount=Decimal("500.00"), method="bank_transfer"
        )
        late = invoice_create(
            organization=user,
            customer_id=initech.pk,
            issue_date=ago(45),
            due_date=ago(15),
            lines=[_line("Licences", "12", "19.99")],
        )
        invoice_send(organization=user, invoice_id=late.pk)
        paid = invoice_create(
            organization=user,
            customer_id=umbrella.pk,
            currency="EUR",
            issue_date=ago(30),
            due_date=ago(0),
            lines=[_line("Beratung", "8", "120.00", "19")],
        )
        invoice_send(organization=user, invoice_id=paid.pk)
        payment_record(
            organization=user, invoice_id=paid.pk, amount=Invoice.objects.get(pk=paid.pk).total, method="card"
        )
        cancelled = invoice_create(
            organization=user,
            customer_id=globex.pk,
            issue_date=ago(5),
            due_date=ago(-25),
            lines=[_line("Duplicate", "1", "10")],
        )
        invoice_send(organization=user, invoice_id=cancelled.pk)
        invoice_void(organization=user, invoice_id=cancelled.pk)
        invoice_mark_overdue()
