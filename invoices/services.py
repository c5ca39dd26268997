"""Writes to invoices. Each public function is one transaction; each locks the invoice row
(`invoices.locks`) before it reads the state it decides on, and returns the invoice as written,
with its customer and, where the write knows them without a read, its lines and payments.

`actor` is who makes the change (the request's user, the admin's operator; None for the system);
it is recorded with every status change.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import NotRequired, TypedDict

from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from billing.exceptions import BillingError, BusinessRuleViolation
from billing.unset import UNSET, Unset
from customers.models import Customer
from invoices.locks import lock_invoice, lock_sequence
from invoices.models import Invoice, Line

logger = logging.getLogger(__name__)

NUMBER_TAKEN = "An invoice with this number already exists."
NUMBER_FORMAT = "INV-{:06d}"


class LineInput(TypedDict):
    """One line as a writer gives it; the amounts are computed from it."""

    description: str
    quantity: Decimal
    unit_price: Decimal
    tax_rate: NotRequired[Decimal]


def _build_lines(*, invoice: Invoice, lines: Sequence[LineInput]) -> list[Line]:
    return [
        Line(
            owner_id=invoice.owner_id,
            invoice=invoice,
            position=i,
            description=line["description"],
            quantity=line["quantity"],
            unit_price=line["unit_price"],
            tax_rate=line.get("tax_rate", Decimal("0")),
        )
        for i, line in enumerate(lines)
    ]


def _owned_customer(*, owner_id: int, customer_id: int) -> Customer:
    """The tenant check of the reference: another owner's customer reads as one that does not exist."""
    customer = Customer.objects.filter(owner_id=owner_id, pk=customer_id).first()
    if customer is None:
        raise BusinessRuleViolation(f'Invalid pk "{customer_id}" - object does not exist.', field="customer")
    return customer


def _save_number_guarded(invoice: Invoice, **save_kwargs) -> None:
    """Save, turning a clash on (owner, number) into a 400 on `number`.

    The unique constraint decides, so two racing requests cannot both pass a check; the savepoint
    keeps the surrounding transaction usable after the database refuses the row.
    """
    if invoice.number is None or ("number" not in invoice.changed_fields() and not invoice._state.adding):
        invoice.save(**save_kwargs)  # nothing to clash on: no savepoint needed
        return
    # A number typed by hand is written under the owner's sequence lock, as a send numbers under it:
    # the two queue, so a send always sees a typed number committed before it takes the next one
    # (and skips it), and a typed number taken by a send meanwhile is refused below.
    lock_sequence(owner_id=invoice.owner_id)
    try:
        with transaction.atomic():
            invoice.save(**save_kwargs)
    except IntegrityError:
        if (
            Invoice.objects.filter(owner_id=invoice.owner_id, number=invoice.number)
            .exclude(pk=invoice.pk)
            .exists()
        ):
            raise BusinessRuleViolation(NUMBER_TAKEN, field="number") from None
        raise


def _known_relations(invoice: Invoice, *, lines: list[Line] | None = None) -> Invoice:
    """Fill the invoice's lines and payments where this write knows them without a read: the lines
    it has just written; no payments while nothing has been paid (Σ payments = amount_paid, and a
    payment is above zero)."""
    cache = getattr(invoice, "_prefetched_objects_cache", None)
    if cache is None:
        cache = invoice._prefetched_objects_cache = {}
    if lines is not None:
        cache["lines"] = lines
    if invoice.amount_paid == 0:
        cache["payments"] = []
    return invoice


@transaction.atomic
def invoice_create(
    *,
    owner: AbstractBaseUser,
    customer_id: int,
    due_date: datetime.date,
    lines: Sequence[LineInput] = (),
    number: str | None = None,
    currency: str | None = None,
    issue_date: datetime.date | None = None,
    notes: str = "",
) -> Invoice:
    """Create a draft with its lines and totals, all or nothing. `currency` defaults to
    DEFAULT_CURRENCY, `issue_date` to today."""
    invoice = Invoice(
        owner=owner,
        customer=_owned_customer(owner_id=owner.pk, customer_id=customer_id),
        due_date=due_date,
        number=number or None,
        notes=notes,
    )
    if currency is not None:
        invoice.currency = currency
    if issue_date is not None:
        invoice.issue_date = issue_date
    invoice.check_fields()
    built = _build_lines(invoice=invoice, lines=lines)
    invoice.set_totals(built)
    _save_number_guarded(invoice, force_insert=True)
    Line.objects.bulk_create(built)
    return _known_relations(invoice, lines=built)


@transaction.atomic
def invoice_update(
    *,
    owner: AbstractBaseUser,
    invoice_id: int,
    number: str | None | Unset = UNSET,
    customer_id: int | Unset = UNSET,
    currency: str | Unset = UNSET,
    issue_date: datetime.date | Unset = UNSET,
    due_date: datetime.date | Unset = UNSET,
    notes: str | Unset = UNSET,
    lines: Sequence[LineInput] | Unset = UNSET,
    status: str | Unset = UNSET,
) -> Invoice:
    """Change an invoice as its state allows: a draft anything (lines given are replaced whole),
    a sent or overdue invoice its notes only, a paid or void invoice nothing. Fields given with
    their current value are no change. `status` is read-only: given (a PUT of the invoice as it was
    read), it must be the current one."""
    invoice = lock_invoice(owner_id=owner.pk, invoice_id=invoice_id)
    if status is not UNSET and status != invoice.status:
        raise BusinessRuleViolation(
            f'This invoice is "{invoice.status}": a status changes only through actions '
            "(send, void, payments).",
            field="status",
        )
    given = {
        "number": (number or None) if number is not UNSET else UNSET,
        "customer_id": customer_id,
        "currency": currency,
        "issue_date": issue_date,
        "due_date": due_date,
        "notes": notes,
    }
    changes = {name: value for name, value in given.items() if value is not UNSET}
    changed = {name.removesuffix("_id") for name, value in changes.items() if getattr(invoice, name) != value}
    current_lines = None
    if lines is not UNSET:
        current_lines = list(invoice.lines.all())
        if _line_values(current_lines) != _line_values(lines):
            changed.add("lines")
    invoice.check_changes(changed)
    if not changed:
        return _known_relations(invoice, lines=current_lines)
    for name, value in changes.items():
        setattr(invoice, name, value)
    if "customer" in changed:
        invoice.customer = _owned_customer(owner_id=owner.pk, customer_id=customer_id)
    invoice.check_fields()
    built = current_lines
    if "lines" in changed:
        built = _build_lines(invoice=invoice, lines=lines)
        invoice.set_totals(built)
        Line.objects.filter(invoice=invoice).delete()
        Line.objects.bulk_create(built)
    _save_number_guarded(invoice)
    return _known_relations(invoice, lines=built)


def _line_values(lines) -> list[tuple]:
    def values(line):
        get = line.get if isinstance(line, dict) else lambda name, default=None: getattr(line, name)
        return (get("description"), get("quantity"), get("unit_price"), get("tax_rate", 0))

    return [values(line) for line in lines]


@transaction.atomic
def invoice_delete(*, owner: AbstractBaseUser, invoice_id: int) -> None:
    """Delete a draft and its lines; an issued invoice is kept forever (`Invoice.delete` refuses
    it under the row's lock)."""
    lock_invoice(owner_id=owner.pk, invoice_id=invoice_id, with_customer=False).delete()


@transaction.atomic
def invoice_send(
    *, owner: AbstractBaseUser, invoice_id: int, actor: AbstractBaseUser | None = None
) -> Invoice:
    """Issue a draft: it becomes `sent` and, unless the client numbered it, takes the next number of
    its owner's sequence in this same transaction (so numbers have no gaps and no duplicates)."""
    invoice = lock_invoice(owner_id=owner.pk, invoice_id=invoice_id)
    invoice.send(actor=actor)  # checks state and content before any number is taken
    if invoice.number is None:
        _assign_next_number(invoice)
    else:
        invoice.save()
    return _known_relations(invoice)


def _assign_next_number(invoice: Invoice) -> None:
    """Take the next free number from the owner's counter, locked until this transaction ends.

    A number someone typed by hand is skipped: the counter's lock makes the sends of one owner
    queue, and typed numbers are written under the same lock (`_save_number_guarded`), so a typed
    number equal to the next one is committed before this check reads it, and passed over. The send
    is never refused for it, and needs no savepoint.
    """
    sequence = lock_sequence(owner_id=invoice.owner_id)
    value = sequence.next_value
    taken = Invoice.objects.filter(owner_id=invoice.owner_id)
    while taken.filter(number=NUMBER_FORMAT.format(value)).exists():
        value += 1
    invoice.number = NUMBER_FORMAT.format(value)
    invoice.save()
    sequence.next_value = value + 1
    sequence.save(update_fields=["next_value"])


@transaction.atomic
def invoice_void(
    *, owner: AbstractBaseUser, invoice_id: int, actor: AbstractBaseUser | None = None
) -> Invoice:
    """Void a sent or overdue invoice that has received no payment."""
    invoice = lock_invoice(owner_id=owner.pk, invoice_id=invoice_id)
    invoice.void(actor=actor)
    invoice.save()
    return _known_relations(invoice)


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
    """Move every sent invoice whose due date is before today (in TIME_ZONE) to overdue, in bulk
    (`InvoiceQuerySet.move_to_overdue`, each change recorded); returns how many moved. Safe to run
    concurrently and often: a row is moved once, and a row paid or voided meanwhile no longer matches.

    If that fails, one owner's rows are what made it fail, and no owner may block the others: it is
    run again once per owner, each in its own transaction, and the owners whose rows still fail are
    logged and named in `MarkOverdueIncomplete` after all the others have moved.
    """
    today = today or timezone.localdate()
    due = Invoice.objects.filter(status=Invoice.Status.SENT, due_date__lt=today)
    try:
        with transaction.atomic():
            return due.move_to_overdue()
    except DatabaseError:
        logger.exception("mark_overdue: the bulk move failed; moving the invoices owner by owner")
    moved, failed = 0, []
    for owner_id in due.order_by("owner_id").values_list("owner_id", flat=True).distinct():
        try:
            with transaction.atomic():
                moved += due.filter(owner_id=owner_id).move_to_overdue()
        except DatabaseError:
            logger.exception("mark_overdue: the invoices of owner %s could not be moved", owner_id)
            failed.append(owner_id)
    if failed:
        raise MarkOverdueIncomplete(moved=moved, failed_owner_ids=failed)
    return moved
