"""Writes of payments: one function, one transaction, under the invoice's row lock."""

from __future__ import annotations

import datetime
from decimal import Decimal

from django.db import transaction

from billing.exceptions import BusinessRuleViolation
from events.services import Change, events_record, previous_attributes
from invoices.locks import lock_invoice
from invoices.models import Invoice
from invoices.services import invoice_attributes, invoice_representation
from payments.models import Payment
from users.models import Actor, Organization


@transaction.atomic
def payment_record(
    *,
    organization: Organization,
    invoice_id: int,
    amount: Decimal,
    method: str,
    reference: str = "",
    paid_at: datetime.date | None = None,
    actor: Actor | None = None,
) -> Payment:
    """Record a payment against one of the organization's invoices.

    The invoice row is locked first, then its state and balance are read and decided on, and the
    payment insert and the invoice update happen under that same lock: concurrent payments queue
    on the row, so together they can never take an invoice past its total. Only a sent or overdue
    invoice accepts payments (409 otherwise); more than the balance due is 400 on `amount`; the
    payment that brings the balance to zero moves the invoice to paid.
    """
    try:
        invoice = lock_invoice(organization_id=organization.pk, invoice_id=invoice_id)
    except Invoice.DoesNotExist:
        raise BusinessRuleViolation(
            f'Invalid pk "{invoice_id}" - object does not exist.', field="invoice"
        ) from None
    payment = Payment(
        organization=organization,
        invoice=invoice,
        amount=amount,
        method=method,
        reference=reference,
        paid_at=paid_at if paid_at is not None else organization.today(),
    )
    # Places as written: JPY "1000.00" is refused as the API counts it, whoever calls.
    invoice.check_amount(amount, as_written=True)
    payment.set_created_by(actor)
    payment.check_fields()
    before = invoice_attributes(invoice)
    first = invoice.amount_paid == 0  # nothing paid before: this payment is the invoice's only one
    invoice.apply_payment(amount, actor=actor)
    payment.save()
    invoice.save(update_fields=["amount_paid", "status", "paid_at", "updated_at"])
    if first:
        # Known without a read (Σ payments = amount_paid, each above zero): for the representation.
        invoice._prefetched_objects_cache = {
            **getattr(invoice, "_prefetched_objects_cache", {}),
            "payments": [payment],
        }
    # Events: the payment, the invoice it changed and, when it settled it, the invoice paid.
    from payments.serializers import PaymentResultSerializer

    after = invoice_representation(invoice)
    previous = previous_attributes(before, after)
    changes = [
        Change("payment.created", PaymentResultSerializer(payment).data),
        Change("invoice.updated", after, previous),
    ]
    if invoice.status == Invoice.Status.PAID:
        changes.append(Change("invoice.paid", after, previous))
    events_record(organization_id=organization.pk, changes=changes, actor=actor)
    return payment
