"""The demo: one organization with an owner, a member and a viewer, an API key, customers and
invoices in every state, all written through the services as the API would write them."""

import datetime
import secrets
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from customers.models import Customer
from customers.services import customer_create
from invoices.models import Invoice
from invoices.services import invoice_create, invoice_mark_overdue, invoice_send, invoice_void
from payments.services import payment_record
from users.models import ApiKey, Membership, Organization, Role
from users.services import (
    api_key_create,
    api_key_revoke,
    membership_add,
    membership_change_role,
    organization_create,
    organization_update,
)

DEMO_ORGANIZATION = "Demo Company"
DEMO_SETTINGS = {
    "legal_name": "Demo Company LLC",
    "address": "100 Congress Avenue\nAustin, TX 78701\nUnited States",
    "tax_id": "US-98-7654321",
    "time_zone": "America/Chicago",
    "invoice_prefix": "DEMO-",
    "invoice_footer": "Please pay by bank transfer to IBAN US00 DEMO 0000 0000 0000, quoting the invoice number.",
}
# username -> role in the demo organization; the first is its owner, who makes the data.
DEMO_MEMBERS = {"demo": Role.OWNER, "demo-member": Role.MEMBER, "demo-viewer": Role.VIEWER}
DEMO_KEY_NAME = "Demo integration"

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
        f'Create (or reset) the demo organization "{DEMO_ORGANIZATION}": its owner, member and viewer '
        "with fresh passwords, a new API key (the previous demo key is revoked), customers and invoices "
        f"in every state; and the demo operator for /admin/ ('{OPERATOR_USERNAME}', a fixed password: "
        "only with DJANGO_DEBUG=1 unless --force)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--force",
            action="store_true",
            help="Create the demo operator even with DEBUG off (its password is printed and fixed).",
        )

    def handle(self, *args, **options):
        User = get_user_model()
        make_operator = settings.DEBUG or options["force"]
        operator_state = None
        with transaction.atomic():
            logins = {username: self._user(User, username) for username in DEMO_MEMBERS}
            owner = logins["demo"][0]
            organization, organization_created = self._organization(owner)
            for username, role in DEMO_MEMBERS.items():
                self._membership(organization, logins[username][0], role)
            if not Customer.objects.filter(organization=organization).exists():
                self._seed(organization, owner=owner, member=logins["demo-member"][0])
            key = self._api_key(organization, owner)
            if make_operator:
                operator_state = self._operator(User)

        success = self.style.SUCCESS
        self.stdout.write(
            success(
                f'Demo organization "{organization.name}" '
                f"{'created' if organization_created else 'ready'} (id {organization.pk})"
            )
        )
        for username, (_, password, created) in logins.items():
            self.stdout.write(
                success(
                    f"Demo user {'created' if created else 'ready'}: username '{username}', "
                    f"password '{password}' ({DEMO_MEMBERS[username]})"
                )
            )
        self.stdout.write(
            success(
                f"Demo API key '{DEMO_KEY_NAME}' (role admin; shown this once, a re-run revokes it): {key}"
            )
        )
        if operator_state is not None:
            self.stdout.write(
                success(
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

    def _user(self, User, username: str):
        """(user, password, created): a demo login, its password set afresh on every run."""
        user, created = User.objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.com"}
        )
        password = secrets.token_urlsafe(12)
        user.set_password(password)
        user.save()
        return user, password, created

    def _organization(self, owner) -> tuple[Organization, bool]:
        """The demo organization (the one of that name the demo owner is in), its profile and
        settings put back as the demo has them."""
        organization = (
            Organization.objects.filter(name=DEMO_ORGANIZATION, memberships__user=owner)
            .order_by("pk")
            .first()
        )
        if organization is None:
            return organization_create(name=DEMO_ORGANIZATION, owner=owner, **DEMO_SETTINGS), True
        return organization_update(organization_id=organization.pk, **DEMO_SETTINGS), False

    def _membership(self, organization: Organization, user, role: str) -> None:
        """`user` in the organization with `role`, through the services (the owner first, so the
        organization keeps an owner whatever was changed since the last run)."""
        membership = Membership.objects.filter(organization=organization, user=user).first()
        if membership is None:
            membership_add(
                organization_id=organization.pk, username=user.username, role=role, caller_role=Role.OWNER
            )
        elif membership.role != role:
            membership_change_role(
                organization_id=organization.pk,
                membership_id=membership.pk,
                role=role,
                caller_role=Role.OWNER,
            )

    def _api_key(self, organization: Organization, owner) -> str:
        """A new demo key. A key's secret is never stored, so the previous one cannot be printed
        again: it is revoked, and a new one made."""
        previous = ApiKey.objects.filter(
            organization=organization, name=DEMO_KEY_NAME, revoked_at__isnull=True
        )
        for api_key in previous.order_by("pk"):
            api_key_revoke(organization_id=organization.pk, api_key_id=api_key.pk)
        _, key = api_key_create(
            organization_id=organization.pk, name=DEMO_KEY_NAME, role=Role.ADMIN, created_by=owner
        )
        return key

    def _operator(self, User) -> str | None:
        """The staff superuser of the demo, its password set again on every run (as the demo users'
        are), so the printed login always works. A non-staff user already named so (a sign-up) is
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

    def _seed(self, organization: Organization, *, owner, member) -> None:
        """Customers and invoices in every state: the owner makes the invoices, the member records
        the payments (so the admin shows who made what)."""
        acme, globex, initech, umbrella = (
            customer_create(organization=organization, **fields) for fields in DEMO_CUSTOMERS
        )
        today = organization.today()

        def ago(days: int) -> datetime.date:
            return today - datetime.timedelta(days=days)

        def create(customer, **fields) -> Invoice:
            return invoice_create(organization=organization, customer_id=customer.pk, actor=owner, **fields)

        def send(invoice) -> Invoice:
            return invoice_send(organization=organization, invoice_id=invoice.pk, actor=owner)

        def pay(invoice, amount: Decimal, method: str) -> None:
            payment_record(
                organization=organization, invoice_id=invoice.pk, amount=amount, method=method, actor=member
            )

        hosting = [
            _line("Hosting, monthly", "1", "49.00", "8.25"),
            _line("Support hours", "2.5", "80.00", "8.25"),
        ]

        create(acme, lines=hosting)  # a draft, due after the organization's payment terms
        send(create(acme, issue_date=ago(10), due_date=ago(-20), lines=hosting))
        partly = send(
            create(globex, issue_date=ago(20), due_date=ago(-10), lines=[_line("Audit", "1", "1200.00")])
        )
        pay(partly, Decimal("500.00"), "bank_transfer")
        send(create(initech, issue_date=ago(45), due_date=ago(15), lines=[_line("Licences", "12", "19.99")]))
        paid = send(
            create(
                umbrella,
                currency="EUR",
                issue_date=ago(30),
                due_date=ago(0),
                lines=[_line("Beratung", "8", "120.00", "19")],
            )
        )
        pay(paid, paid.balance_due, "card")
        # Currencies with other minor units: yen have none, Kuwaiti dinars three (fils).
        send(
            create(
                initech,
                currency="JPY",
                issue_date=ago(3),
                due_date=ago(-27),
                lines=[_line("Localisation, per screen", "3", "333", "8")],
            )
        )
        dinars = send(
            create(
                acme,
                currency="KWD",
                issue_date=ago(8),
                due_date=ago(-22),
                lines=[_line("Translation, per word", "1500", "0.0333", "5")],
            )
        )
        pay(dinars, Decimal("20.000"), "bank_transfer")
        cancelled = send(
            create(globex, issue_date=ago(5), due_date=ago(-25), lines=[_line("Duplicate", "1", "10")])
        )
        invoice_void(organization=organization, invoice_id=cancelled.pk, actor=owner)
        invoice_mark_overdue()
