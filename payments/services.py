import datetime
from decimal import Decimal

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from billing.errors import BusinessRuleViolation
from billing.transactions import service_transaction
from invoices.models import Invoice
from payments.models import Payment


@service_transaction
def payment_record(
    *,
    owner: AbstractBaseUser,
    invoice_id: int,
    amount: Decimal,
    method: str,
    reference: str = "",
    paid_at: datetime.date | None = None,
) -> Payment:
    """Record a payment against one of the owner's invoices.

    The invoice row is locked first, then its state and balance are read and decided on, and the
    payment insert and the invoice update happen under that same lock: concurrent payments queue
    on the row, so together they can never take an invoice past its total. Only a sent or overdue
    invoice accepts payments (409 otherwise); more than the balance due is 400 on `amount`; the
    payment that brings the balance to zero moves the invoice to paid.
    """
    try:
        invoice = Invoice.objects.select_for_update().get(owner=owner, pk=invoice_id)
    except Invoice.DoesNotExist:
        raise BusinessRuleViolation(
            f'Invalid pk "{invoice_id}" - object does not exist.', field="invoice"
        ) from None
    invoice.apply_payment(amount)
    payment = Payment.objects.create(
        owner=owner,
        invoice=invoice,
        amount=amount,
        method=method,
        reference=reference,
        paid_at=paid_at or timezone.localdate(),
    )
    invoice.save(update_fields=["amount_paid", "status", "paid_at", "updated_at"])
    return payment
