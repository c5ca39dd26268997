from django.db import transaction
from django.db.models import ProtectedError

from billing.errors import InUse
from customers.models import Customer


def customer_delete(*, customer: Customer) -> None:
    """Delete a customer; one who has invoices is kept (the foreign key PROTECTs them)."""
    try:
        with transaction.atomic():
            customer.delete()
    except ProtectedError:
        raise InUse("This customer has invoices and cannot be deleted.") from None
