"""The row locks of the customer writers (see invoices/locks.py)."""

from customers.models import Customer


def lock_customer(*, owner_id: int, customer_id: int) -> Customer:
    """The owner's customer, locked until the transaction ends; another owner's or a vanished one
    is `Customer.DoesNotExist` (404 in the API)."""
    return Customer.objects.select_for_update().get(owner_id=owner_id, pk=customer_id)
