"""Writes to customers. Each public function is one transaction; an existing customer is locked
(`select_for_update`) before it is changed or deleted, so that the API and the admin decide on its
current row, and a customer deleted meanwhile is `DoesNotExist` (404), never written back."""

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import ProtectedError

from billing.errors import InUse
from billing.transactions import service_transaction
from customers.models import Customer


def _locked(*, owner: AbstractBaseUser, customer_id: int) -> Customer:
    return Customer.objects.select_for_update().get(owner=owner, pk=customer_id)


@service_transaction
def customer_create(*, owner: AbstractBaseUser, **fields: Any) -> Customer:
    """Create a customer of `owner`."""
    customer = Customer(owner=owner, **fields)
    customer.save()
    return customer


@service_transaction
def customer_update(*, owner: AbstractBaseUser, customer_id: int, **fields: Any) -> Customer:
    """Change a customer's details; only the fields that change are written."""
    customer = _locked(owner=owner, customer_id=customer_id)
    for name, value in fields.items():
        setattr(customer, name, value)
    customer.save()
    return customer


@service_transaction
def customer_delete(*, owner: AbstractBaseUser, customer_id: int) -> None:
    """Delete a customer; one who has invoices is kept (the foreign key PROTECTs them: 409 in_use)."""
    customer = _locked(owner=owner, customer_id=customer_id)
    try:
        customer.delete()
    except ProtectedError:
        raise InUse("This customer has invoices and cannot be deleted.") from None
