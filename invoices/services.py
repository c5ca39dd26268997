"""Writes to invoices. Each public function is one transaction; each locks the invoice row
(`select_for_update`) before it reads the state it decides on."""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Sequence
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from billing.errors import BillingError, BusinessRuleViolation
from billing.transactions import service_transaction
from invoices.models import Invoice, InvoiceSequence, Line

logger = logging.getLogger(__name__)

NUMBER_TAKEN = "An invoice with this number already exists."


def _locked(*, owner: AbstractBaseUser, invoice_id: int) -> Invoice:
    return Invoice.objects.select_for_update().get(owner=owner, pk=invoice_id)


def _build_lines(*, invoice: Invoice, lines: Sequence[dict[str, Any]]) -> list[Line]:
    return [
        Line(owner_id=invoice.owner_id, invoice=invoice, position=i, **line) for i, line in enumerate(lines)
    ]


def _save_number_guarded(invoice: Invoice, **save_kwargs) -> None:
    """Save, turning a clash on (owner, number) into a 400 on `number`.

    The unique constraint decides, so two racing requests cannot both pass a check; the savepoint
    keeps the surrounding transaction usable after the database refuses the row.
    """
    if invoice.number is None:  # nothing to clash on: no savepoint needed
        invoice.save(**save_kwargs)
        return
    try:
        with transaction.atomic():
            invoice.save(**save_kwargs)
    except IntegrityError:
        if (
            invoice.number is not None
            and Invoice.objects.filter(owner_id=invoice.owner_id, number=invoice.number)
            .exclude(pk=invoice.pk)
            .exists()
        ):
            raise BusinessRuleViolation(NUMBER_TAKEN, field="number") from None
        raise


@service_transaction
def invoice_create(
    *, owner: AbstractBaseUser, lines: Sequence[dict[str, Any]] = (), **fields: Any
) -> Invoice:
    """Create a draft with its lines and totals, all or nothing."""
    invoice = Invoice(owner=owner, **fields)
    invoice.check_fields()
    built = _build_lines(invoice=invoice, lines=lines)
    invoice.set_totals(built)
    _save_number_guarded(invoice, force_insert=True)
    Line.objects.bulk_create(built)
    # Returned with its lines (and, being new, no payments) already loaded: no query to read them back.
    invoice._prefetched_objects_cache = {"lines": built, "payments": []}
    return invoice


@service_transaction
def invoice_update(
    *, owner: AbstractBaseUser, invoice_id: int, lines: Sequence[dict[str, Any]] | None = None, **fields: Any
) -> Invoice:
    """Change an invoice as its state allows: a draft anything (lines given are replaced whole),
    a sent or overdue invoice its notes only, a paid or void invoice nothing."""
    invoice = _locked(owner=owner, invoice_id=invoice_id)
    changed = {name for name, value in fields.items() if not _unchanged(invoice, name, value)}
    if lines is not None and _line_values(invoice.lines.all()) != _line_values(lines):
        changed.add("lines")
    invoice.check_changes(changed)
    if not changed:
        return invoice
    for name, value in fields.items():
        setattr(invoice, name, value)
    invoice.check_fields()
    if "lines" in changed:
        built = _build_lines(invoice=invoice, lines=lines)
        invoice.set_totals(built)
        invoice.lines.all().delete()
        Line.objects.bulk_create(built)
    _save_number_guarded(invoice)
    return invoice


def _unchanged(invoice: Invoice, name: str, value: Any) -> bool:
    if name == "customer":  # compare ids: no query for the related row
        return invoice.customer_id == value.pk
    return getattr(invoice, name) == value


def _line_values(lines) -> list[tuple]:
    def values(line):
        get = line.get if isinstance(line, dict) else lambda name, default=None: getattr(line, name)
        return (get("description"), get("quantity"), get("unit_price"), get("tax_rate", 0))

    return [values(line) for line in lines]


@service_transaction
def invoice_delete(*, owner: AbstractBaseUser, invoice_id: int) -> None:
    """Delete a draft and its lines; an issued invoice is kept forever."""
    invoice = _locked(owner=owner, invoice_id=invoice_id)
    invoice.check_delete()
    invoice.delete()


@service_transaction
def invoice_send(*, owner: AbstractBaseUser, invoice_id: int) -> Invoice:
    """Issue a draft: it becomes `sent` and, unless the client numbered it, takes the next number of
    its owner's sequence in this same transaction (so numbers have no gaps and no duplicates)."""
    invoice = _locked(owner=owner, invoice_id=invoice_id)
    invoice.send()  # checks state and content before any number is taken
    if invoice.number is None:
        _assign_next_number(invoice)
    else:
        invoice.save()
    return invoice


def _assign_next_number(invoice: Invoice) -> None:
    """Take the next free number from the owner's counter, locked until this transaction ends.

    Numbers someone typed by hand are skipped: the unique constraint refuses them and the next
    one is tried, inside a savepoint, so the check cannot race with a concurrent manual number.
    """
    sequence = _locked_sequence(invoice.owner_id)
    value = sequence.next_value
    while True:
        invoice.number = f"INV-{value:06d}"
        try:
            with transaction.atomic():
                invoice.save()
        except IntegrityError:
            if not Invoice.objects.filter(owner_id=invoice.owner_id, number=invoice.number).exists():
                raise
            value += 1
            continue
        break
    sequence.next_value = value + 1
    sequence.save(update_fields=["next_value"])


def _locked_sequence(owner_id: int) -> InvoiceSequence:
    """The owner's counter row, locked; created on the owner's first send.

    Two first sends may both try to create it: the unique primary key lets one insert win, the
    other's savepoint is rolled back, and both then queue on the one row's lock.
    """
    sequence = InvoiceSequence.objects.select_for_update().filter(owner_id=owner_id).first()
    if sequence is not None:
        return sequence
    with contextlib.suppress(IntegrityError), transaction.atomic():
        InvoiceSequence.objects.create(owner_id=owner_id)
    return InvoiceSequence.objects.select_for_update().get(owner_id=owner_id)


@service_transaction
def invoice_void(*, owner: AbstractBaseUser, invoice_id: int) -> Invoice:
    """Void a sent or overdue invoice that has received no payment."""
    invoice = _locked(owner=owner, invoice_id=invoice_id)
    invoice.void()
    invoice.save()
    return invoice


class MarkOverdueIncomplete(BillingError):
    """Some owners' invoices could not be moved; every other owner's were."""

    code = "mark_overdue_incomplete"

    def __init__(self, *, moved: int, failed_owner_ids: list[int]):
        self.moved, self.failed_owner_ids = moved, failed_owner_ids
        super().__init__(
            f"{moved} invoices marked overdue; the invoices of {len(failed_owner_ids)} owner(s) could "
            f"not be moved (owner ids {', '.join(map(str, failed_owner_ids))}; see the log)."
        )


def invoice_mark_overdue(*, today: datetime.date | None = None) -> int:
    """Move every sent invoice whose due date is before today (in TIME_ZONE) to overdue, in one
    UPDATE statement; returns how many moved. Safe to run concurrently and often: a row is moved
    once, and a row paid or voided meanwhile no longer matches.

    If that statement fails, one owner's rows are what made it fail, and no owner may block the
    others: it is run again once per owner, each in its own transaction, and the owners whose rows
    still fail are logged and named in `MarkOverdueIncomplete` after all the others have moved.
    """
    today = today or timezone.localdate()
    due = Invoice.objects.filter(status=Invoice.Status.SENT, due_date__lt=today)
    try:
        with transaction.atomic():
            return _move_to_overdue(due)
    except DatabaseError:
        logger.exception("mark_overdue: the single UPDATE failed; moving the invoices owner by owner")
    moved, failed = 0, []
    for owner_id in due.order_by("owner_id").values_list("owner_id", flat=True).distinct():
        try:
            with transaction.atomic():
                moved += _move_to_overdue(due.filter(owner_id=owner_id))
        except DatabaseError:
            logger.exception("mark_overdue: the invoices of owner %s could not be moved", owner_id)
            failed.append(owner_id)
    if failed:
        raise MarkOverdueIncomplete(moved=moved, failed_owner_ids=failed)
    return moved


def _move_to_overdue(invoices: QuerySet[Invoice]) -> int:
    # The version is bumped like any save's, so a write based on a read from before is refused.
    return invoices.update(status=Invoice.Status.OVERDUE, updated_at=timezone.now(), version=F("version") + 1)
