"""The row locks of the invoice writers, in one place (Saleor's `lock_objects.py`).

Every write to an invoice starts by locking its row here, scoped to its owner: whoever reads the
state it decides on reads it under this lock, so two writers of one invoice queue instead of both
deciding on the same read. Another owner's invoice, or one that does not exist, is
`Invoice.DoesNotExist` (404 in the API).
"""

from __future__ import annotations

from invoices.models import Invoice, InvoiceSequence


def lock_invoice(*, owner_id: int, invoice_id: int, with_customer: bool = True) -> Invoice:
    """The invoice, locked until the transaction ends. With its customer joined (read, not locked:
    a customer never changes owner, and its name is what the invoice's representation shows), so
    the response needs no second read of it."""
    queryset = Invoice.objects.filter(owner_id=owner_id, pk=invoice_id)
    if with_customer:
        queryset = queryset.select_related("customer").select_for_update(of=("self",))
    else:
        queryset = queryset.select_for_update()
    return queryset.get()


def lock_sequence(*, owner_id: int) -> InvoiceSequence:
    """The owner's invoice-number counter, locked until the transaction ends; created on the
    owner's first send. Two first sends may both try to create it: the insert skips a row that
    exists (ON CONFLICT DO NOTHING, no savepoint needed), and both then queue on the one row's lock."""
    sequence = InvoiceSequence.objects.select_for_update().filter(owner_id=owner_id).first()
    if sequence is not None:
        return sequence
    InvoiceSequence.objects.bulk_create([InvoiceSequence(owner_id=owner_id)], ignore_conflicts=True)
    return InvoiceSequence.objects.select_for_update().get(owner_id=owner_id)
