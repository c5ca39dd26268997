"""factory_boy factories for the tests' data.

Users are made as registration makes them (`create_user`, and an organization of their own, of which
they are the owner: `org(user)`); customers as the app makes them (`customer_create`). Lines are
dicts: `LineFactory` as the services take them (`invoices.services.LineInput`, exact Decimals),
`LinePayloadFactory` as the API takes them (every amount a string). Invoices go through the
services, in order — `invoice_create`, then `invoice_send`, then `payment_record` — and never by
saving rows around them, so every invoice a test starts from is one the application could have made.
"""

import datetime
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from customers.models import Customer
from customers.services import customer_create
from invoices.models import Invoice
from invoices.services import invoice_create, invoice_send
from payments.services import payment_record
from users.models import Membership, Organization
from users.services import organization_create

PASSWORD = "correct-horse-battery-staple"
DUE = datetime.date(2030, 1, 31)


class UserFactory(factory.django.DjangoModelFactory):
    """A user who logs in with PASSWORD; `username@example.com` unless an email is given."""

    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = PASSWORD

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        # create_user hashes the password and normalizes the username, as registration does, and
        # the user owns an organization of the same name, as registration makes.
        user = cls._get_manager(model_class).create_user(*args, **kwargs)
        organization_create(name=user.username, owner=user)
        return user


def org(user_or_organization) -> Organization:
    """The organization a test means by a user: the oldest one the user is a member of (the one
    registration made, and the one login binds a token to by default); an organization as given."""
    if isinstance(user_or_organization, Organization):
        return user_or_organization
    return (
        Membership.objects.select_related("organization")
        .filter(user=user_or_organization)
        .order_by("created_at", "id")
        .first()
        .organization
    )


class CustomerFactory(factory.django.DjangoModelFactory):
    """A customer made by `customer_create` (`organization`: an organization, or a user meaning theirs): "Acme Corp" <billing@acme.test> unless told otherwise."""

    class Meta:
        model = Customer

    organization = factory.SubFactory(UserFactory)
    name = "Acme Corp"
    email = "billing@acme.test"

    @classmethod
    def _create(cls, model_class, *args, organization, **kwargs):
        return customer_create(organization=org(organization), **kwargs)


class LineFactory(factory.DictFactory):
    """One line as the services take it (`LineInput`): 1 x 100.00, no tax."""

    description = "Consulting"
    quantity = Decimal("1.000")
    unit_price = Decimal("100.00")
    tax_rate = Decimal("0.00")


class LinePayloadFactory(LineFactory):
    """The same line as the API takes it: each Decimal as a string, since the API refuses a JSON
    number for an amount. Values given that are not Decimals (strings, None, NaN) are sent as given."""

    @classmethod
    def _build(cls, model_class, *args, **kwargs):
        return model_class(
            {name: str(value) if isinstance(value, Decimal) else value for name, value in kwargs.items()}
        )

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return cls._build(model_class, *args, **kwargs)


class InvoiceFactory(factory.django.DjangoModelFactory):
    """A draft made by `invoice_create` (one line of 100.00, due DUE); `sent=True` issues it with
    `invoice_send`; `paid="40.00"` then records that much with `payment_record` (the whole total
    makes it paid). The invoice is returned as the last service wrote it."""

    class Meta:
        model = Invoice

    organization = factory.SubFactory(UserFactory)
    customer = factory.SubFactory(CustomerFactory, organization=factory.SelfAttribute("..organization"))
    due_date = DUE
    lines = factory.LazyFunction(lambda: [LineFactory()])
    sent = False
    paid = None

    @classmethod
    def _create(cls, model_class, *args, organization, customer, sent, paid, **fields):
        organization = org(organization)
        invoice = invoice_create(organization=organization, customer_id=customer.pk, **fields)
        if sent or paid:
            invoice = invoice_send(organization=organization, invoice_id=invoice.pk)
        if paid:
            payment_record(
                organization=organization, invoice_id=invoice.pk, amount=Decimal(paid), method="bank_transfer"
            )
            invoice = Invoice.objects.select_related("customer").get(pk=invoice.pk)
        return invoice
