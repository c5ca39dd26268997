"""Writes to customers. Each public function is one transaction; an existing customer is locked
(`customers.locks`) before it is changed or deleted, so that the API and the admin decide on its
current row, and a customer deleted meanwhile is `DoesNotExist` (404), never written back."""

from __future__ import annotations

from django.db import transaction
from django.db.models import ProtectedError

from billing.exceptions import InUse
from billing.unset import UNSET, Unset
from customers.locks import lock_customer
from customers.models import Customer
from events.services import Change, events_record, previous_attributes
from users.models import Actor, Organization


def customer_representation(customer: Customer) -> dict:
    """The customer as the API shows it (its events carry it)."""
    from customers.serializers import CustomerSerializer

    return CustomerSerializer(customer).data


@transaction.atomic
def customer_create(
    *,
    organization: Organization,
    name: str,
    email: str = "",
    phone: str = "",
    address: str = "",
    tax_id: str = "",
    actor: Actor | None = None,
) -> Customer:
    """Create a customer of `organization` (and its `customer.created` event)."""
    customer = Customer(
        organization=organization, name=name, email=email, phone=phone, address=address, tax_id=tax_id
    )
    customer.check_fields()
    customer.save()
    events_record(
        organization_id=organization.pk,
        changes=[Change("customer.created", customer_representation(customer))],
        actor=actor,
    )
    return customer


@transaction.atomic
def customer_update(
    *,
    organization: Organization,
    customer_id: int,
    name: str | Unset = UNSET,
    email: str | Unset = UNSET,
    phone: str | Unset = UNSET,
    address: str | Unset = UNSET,
    tax_id: str | Unset = UNSET,
    actor: Actor | None = None,
) -> Customer:
    """Change a customer's details; only the fields given and different are written (with a
    `customer.updated` event when something was)."""
    customer = lock_customer(organization_id=organization.pk, customer_id=customer_id)
    before = customer_representation(customer)
    given = {"name": name, "email": email, "phone": phone, "address": address, "tax_id": tax_id}
    for field, value in given.items():
        if value is not UNSET:
            setattr(customer, field, value)
    customer.check_fields()
    if customer.changed_fields():
        customer.save()
        after = customer_representation(customer)
        events_record(
            organization_id=organization.pk,
            changes=[Change("customer.updated", after, previous_attributes(before, after))],
            actor=actor,
        )
    return customer


@transaction.atomic
def customer_delete(*, organization: Organization, customer_id: int, actor: Actor | None = None) -> None:
    """Delete a customer (and write `customer.deleted`, with the customer as it was); one who has
    invoices is kept (the foreign key PROTECTs them: 409 in_use)."""
    customer = lock_customer(organization_id=organization.pk, customer_id=customer_id)
    representation = customer_representation(customer)
    try:
        customer.delete()
    except ProtectedError:
        raise InUse("This customer has invoices and cannot be deleted.") from None
    events_record(
        organization_id=organization.pk,
        changes=[Change("customer.deleted", representation)],
        actor=actor,
    )
