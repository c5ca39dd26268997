"""The row locks of the customer writers (see invoices/locks.py)."""

from customers.models import Customer


def lock_customer(*, organization_id: int, customer_id: int) -> Customer:
    """The organization's customer, locked until the transaction ends; another organization's or a vanished one
    is `Customer.DoesNotExist` (404 in the API)."""
    return Customer.objects.select_for_update().get(organization_id=organization_id, pk=customer_id)
