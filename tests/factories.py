"""factory_boy factories for the tests' data.

Users and customers are made as the app makes them (`create_user`, `customer_create`). Lines are
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
        # create_user hashes the password and normalizes the username, as registration does.
        return cls._get_manager(model_class).create_user(*args, **kwargs)


class CustomerFactory(factory.django.DjangoModelFactory):
    """A customer made by `customer_create`: "Acme Corp" <billing@acme.test> unless told otherwise."""

    class Meta:
        model = Customer

    owner = factory.SubFactory(UserFactory)
    name = "Acme Corp"
    email = "billing@acme.test"

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return customer_create(**kwargs)


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

    owner = factory.SubFactory(UserFactory)
    customer = factory.SubFactory(CustomerFactory, owner=factory.SelfAttribute("..owner"))
    due_date = DUE
    lines = factory.LazyFunction(lambda: [LineFactory()])
    sent = False
    paid = None

    @classmethod
    def _create(cls, model_class, *args, owner, customer, sent, paid, **fields):
        invoice = invoice_create(owner=owner, customer_id=customer.pk, **fields)
        if sent or paid:
            invoice = invoice_send(owner=owner, invoice_id=invoice.pk)
        if paid:
            payment_record(owner=owner, invoice_id=invoice.pk, amount=Decimal(paid), method="bank_transfer")
            invoice = Invoice.objects.select_related("customer").get(pk=invoice.pk)
        return invoice
