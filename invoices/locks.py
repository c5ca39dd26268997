"""The row locks of the invoice writers, in one place (Saleor's `lock_objects.py`).

Every write to an invoice starts by locking its row here, scoped to its organization: whoever reads the
state it decides on reads it under this lock, so two writers of one invoice queue instead of both
deciding on the same read. Another organization's invoice, or one that does not exist, is
`Invoice.DoesNotExist` (404 in the API).
"""

from __future__ import annotations

from django.db.models.query import MAX_GET_RESULTS

from billing.db import CompiledQuery
from invoices.models import Invoice, InvoiceSequence


def lock_invoice(*, organization_id: int, invoice_id: int, with_customer: bool = True) -> Invoice:
    """The invoice, locked until the transaction ends. With its customer and creator joined (read, not locked:
    a customer never changes organization, and its name is what the invoice's representation shows), so
    the response needs no second read of it."""
    locked = _LOCKED_WITH_CUSTOMER if with_customer else _LOCKED
    return locked.get(organization_id=organization_id, invoice_id=invoice_id)


def _locked(*, with_customer: bool):
    """The locked read's queryset, as `get()` sends it (no ordering, at most MAX_GET_RESULTS rows)."""

    def build(organization_id: int, invoice_id: int):
        queryset = Invoice.objects.filter(organization_id=organization_id, pk=invoice_id)
        if with_customer:
            queryset = queryset.select_related(
                "customer", "created_by_user", "created_by_api_key"
            ).select_for_update(of=("self",))
        else:
            queryset = queryset.select_for_update()
        return queryset.order_by()[:MAX_GET_RESULTS]

    return build


# Every write of an invoice starts with this read: compiled once (billing.db.CompiledQuery).
_LOCKED_WITH_CUSTOMER = CompiledQuery(_locked(with_customer=True), organization_id=int, invoice_id=int)
_LOCKED = CompiledQuery(_locked(with_customer=False), organization_id=int, invoice_id=int)


def lock_sequence(*, organization_id: int) -> InvoiceSequence:
    """The organization's invoice-number counter, locked until the transaction ends; created on the
    organization's first send. Two first sends may both try to create it: the insert skips a row that
    exists (ON CONFLICT DO NOTHING, no savepoint needed), and both then queue on the one row's lock."""
    sequence = InvoiceSequence.objects.select_for_update().filter(organization_id=organization_id).first()
    if sequence is not None:
        return sequence
    InvoiceSequence.objects.bulk_create(
        [InvoiceSequence(organization_id=organization_id)], ignore_conflicts=True
    )
    return InvoiceSequence.objects.select_for_update().get(organization_id=organization_id)
