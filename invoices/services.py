"""Writes to invoices. Each public function is one transaction; each locks the invoice row
(`invoices.locks`) before it reads the state it decides on, and returns the invoice as written,
with its customer and its creator (`created_by`: joined by the lock, or set by the create) and,
where the write knows them without a read, its lines and payments: the response reads nothing
more than those.

`organization` is the tenant the write acts for; `actor` is who makes the change (a member's user
or an API key; the admin's operator; None for the system): it is recorded as the invoice's and
payment's `created_by` and with every status change.
"""

from __future__ import annotations

import datetime
import logging
import zoneinfo
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import NotRequired, TypedDict

from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from billing.exceptions import BillingError, BusinessRuleViolation
from billing.unset import UNSET, Unset
from customers.models import Customer
from events.services import Change, events_record, events_record_many, previous_attributes
from invoices.locks import lock_invoice, lock_sequence
from invoices.models import Invoice, Line
from invoices.overdue_sql import overdue_with_events_sql
from invoices.selectors import CREATOR, detail_prefetch, with_lines_and_payments
from users.models import Actor, Organization

logger = logging.getLogger(__name__)

NUMBER_TAKEN = "An invoice with this number already exists."
NUMBER_DIGITS = "{:06d}"


def format_number(prefix: str, value: int) -> str:
    """An issued number: the organization's `invoice_prefix` and six digits (more past 999999)."""
    return f"{prefix}{NUMBER_DIGITS.format(value)}"


class LineInput(TypedDict):
    """One line as a writer gives it; the amounts are computed from it."""

    description: str
    quantity: Decimal
    unit_price: Decimal
    tax_rate: NotRequired[Decimal]


def _build_lines(*, invoice: Invoice, lines: Sequence[LineInput]) -> list[Line]:
    return [
        Line(
            organization_id=invoice.organization_id,
            invoice=invoice,
            position=i,
            description=line["description"],
            quantity=line["quantity"],
            unit_price=line["unit_price"],
            tax_rate=line.get("tax_rate", Decimal("0")),
        )
        for i, line in enumerate(lines)
    ]


def _owned_customer(*, organization_id: int, customer_id: int) -> Customer:
    """The tenant check of the reference: another organization's customer reads as one that does not exist."""
    customer = Customer.objects.filter(organization_id=organization_id, pk=customer_id).first()
    if customer is None:
        raise BusinessRuleViolation(f'Invalid pk "{customer_id}" - object does not exist.', field="customer")
    return customer


def _save_number_guarded(invoice: Invoice, **save_kwargs) -> None:
    """Save, turning a clash on (organization, number) into a 400 on `number`.

    The unique constraint decides, so two racing requests cannot both pass a check; the savepoint
    keeps the surrounding transaction usable after the database refuses the row.
    """
    if invoice.number is None or ("number" not in invoice.changed_fields() and not invoice._state.adding):
        invoice.save(**save_kwargs)  # nothing to clash on: no savepoint needed
        return
    # A number typed by hand is written under the organization's sequence lock, as a send numbers under it:
    # the two queue, so a send always sees a typed number committed before it takes the next one
    # (and skips it), and a typed number taken by a send meanwhile is refused below.
    lock_sequence(organization_id=invoice.organization_id)
    try:
        with transaction.atomic():
            invoice.save(**save_kwargs)
    except IntegrityError:
        if (
            Invoice.objects.filter(organization_id=invoice.organization_id, number=invoice.number)
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


def invoice_representation(invoice: Invoice) -> dict:
    """The invoice as its detail shows it (its events carry it): lines and payments read only if the
    write did not already load them, and left loaded for the response."""
    from invoices.serializers import InvoiceDetailSerializer, event_context

    return InvoiceDetailSerializer(with_lines_and_payments(invoice), context=event_context()).data


def invoice_attributes(invoice: Invoice) -> dict:
    """The invoice's own attributes as the API shows them (no lines, no payments: nothing to read),
    taken before a change to give its event's `previous_attributes`."""
    from invoices.serializers import InvoiceSerializer, event_context

    return InvoiceSerializer(invoice, context=event_context()).data


def record_invoice_events(
    invoice: Invoice, types: Sequence[str], *, before: dict | None = None, actor: Actor | None = None
) -> None:
    """The events of a change to `invoice`, in the caller's transaction: each of `types` with the
    invoice as it is now and, given what it was (`before`), the attributes that changed."""
    after = invoice_representation(invoice)
    previous = previous_attributes(before, after) if before is not None else None
    events_record(
        organization_id=invoice.organization_id,
        changes=[Change(event_type, after, previous) for event_type in types],
        actor=actor,
    )


@transaction.atomic
def invoice_create(
    *,
    organization: Organization,
    customer_id: int,
    due_date: datetime.date | None = None,
    lines: Sequence[LineInput] = (),
    number: str | None = None,
    currency: str | None = None,
    issue_date: datetime.date | None = None,
    notes: str = "",
    actor: Actor | None = None,
) -> Invoice:
    """Create a draft with its lines and totals, all or nothing. By the organization's settings:
    `currency` defaults to its `default_currency`, `issue_date` to its today (in its time zone), and
    `due_date` to the issue date plus its `payment_terms_days`."""
    issue_date = issue_date if issue_date is not None else organization.today()
    invoice = Invoice(
        organization=organization,
        customer=_owned_customer(organization_id=organization.pk, customer_id=customer_id),
        currency=currency if currency is not None else organization.default_currency,
        issue_date=issue_date,
        due_date=(
            due_date
            if due_date is not None
            else issue_date + datetime.timedelta(days=organization.payment_terms_days)
        ),
        number=number or None,
        notes=notes,
    )
    invoice.set_created_by(actor)
    invoice.check_fields()
    built = _build_lines(invoice=invoice, lines=lines)
    invoice.set_totals(built)
    _save_number_guarded(invoice, force_insert=True)
    Line.objects.bulk_create(built)
    _known_relations(invoice, lines=built)
    record_invoice_events(invoice, ["invoice.created"], actor=actor)
    return invoice


@transaction.atomic
def invoice_update(**changes) -> Invoice:
    """`invoice_update_within`, in a transaction of its own."""
    return invoice_update_within(**changes)


def invoice_update_within(
    *,
    organization: Organization,
    invoice_id: int,
    number: str | None | Unset = UNSET,
    customer_id: int | Unset = UNSET,
    currency: str | Unset = UNSET,
    issue_date: datetime.date | Unset = UNSET,
    due_date: datetime.date | Unset = UNSET,
    notes: str | Unset = UNSET,
    lines: Sequence[LineInput] | Unset = UNSET,
    status: str | Unset = UNSET,
    actor: Actor | None = None,
) -> Invoice:
    """Change an invoice as its state allows: a draft anything (lines given are replaced whole),
    a sent or overdue invoice its notes only, a paid or void invoice nothing. Fields given with
    their current value are no change. `status` is read-only: given (a PUT of the invoice as it was
    read), it must be the current one. In the caller's transaction, which must be atomic."""
    invoice = lock_invoice(organization_id=organization.pk, invoice_id=invoice_id)
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
    before = invoice_attributes(invoice)
    if current_lines is not None:
        before["lines"] = _lines_representation(current_lines)
    for name, value in changes.items():
        setattr(invoice, name, value)
    if "customer" in changed:
        invoice.customer = _owned_customer(organization_id=organization.pk, customer_id=customer_id)
    invoice.check_fields()
    built = current_lines
    if "currency" in changed and "lines" not in changed:
        # The amounts are rounded to the currency's places: another currency computes them again.
        lines = [_line_input(line) for line in invoice.lines.order_by("position")]
        changed.add("lines")
    if "lines" in changed:
        built = _build_lines(invoice=invoice, lines=lines)
        invoice.set_totals(built)
        Line.objects.filter(invoice=invoice).delete()
        Line.objects.bulk_create(built)
    _save_number_guarded(invoice)
    invoice.changed_by_update = frozenset(changed)  # what the write changed, for a composing service
    _known_relations(invoice, lines=built)
    record_invoice_events(invoice, ["invoice.updated"], before=before, actor=actor)
    return invoice


def _lines_representation(lines: Sequence[Line]) -> list[dict]:
    from invoices.serializers import LineSerializer

    return LineSerializer(lines, many=True).data


def _line_input(line: Line) -> LineInput:
    return {
        "description": line.description,
        "quantity": line.quantity,
        "unit_price": line.unit_price,
        "tax_rate": line.tax_rate,
    }


def _line_values(lines) -> list[tuple]:
    def values(line):
        get = line.get if isinstance(line, dict) else lambda name, default=None: getattr(line, name)
        return (get("description"), get("quantity"), get("unit_price"), get("tax_rate", 0))

    return [values(line) for line in lines]


@transaction.atomic
def invoice_delete(*, organization: Organization, invoice_id: int, actor: Actor | None = None) -> None:
    """Delete a draft and its lines (and write `invoice.deleted`, with the draft as it was); an
    issued invoice is kept forever (`Invoice.delete` refuses it under the row's lock)."""
    invoice = lock_invoice(organization_id=organization.pk, invoice_id=invoice_id)
    representation = invoice_representation(invoice)
    invoice.delete()
    events_record(
        organization_id=organization.pk, changes=[Change("invoice.deleted", representation)], actor=actor
    )


@transaction.atomic
def invoice_send(*, organization: Organization, invoice_id: int, actor: Actor | None = None) -> Invoice:
    """`invoice_send_within`, in a transaction of its own."""
    return invoice_send_within(organization=organization, invoice_id=invoice_id, actor=actor)


def invoice_send_within(
    *,
    organization: Organization,
    invoice_id: int,
    actor: Actor | None = None,
    before_number: Callable[[Invoice], None] | None = None,
    before_events: Callable[[Invoice], None] | None = None,
) -> Invoice:
    """Issue a draft: it becomes `sent` and, unless the client numbered it, takes the next number of
    its organization's sequence in this same transaction (so numbers have no gaps and no duplicates).
    In the caller's transaction, which must be atomic (a composing service's: no savepoint).

    `before_number(invoice)`: the caller's own writes that do not need the number, made once the
    send is known to be allowed and before the counter is locked — the counter's lock is held to
    the commit and the sends of one organization queue on it, so what is written before it does
    not lengthen that queue. `before_events(invoice)`: the caller's writes that need the number, made
    once it is written and before the invoice's events."""
    invoice = lock_invoice(organization_id=organization.pk, invoice_id=invoice_id)
    before = invoice_attributes(invoice)
    invoice.send(actor=actor)  # checks state and content before any number is taken
    if before_number is not None:
        before_number(invoice)
    if invoice.number is None:
        _assign_next_number(invoice, prefix=organization.invoice_prefix)
    else:
        invoice.save()
    if before_events is not None:
        before_events(invoice)
    _known_relations(invoice)
    record_invoice_events(invoice, ["invoice.sent"], before=before, actor=actor)
    return invoice


def _assign_next_number(invoice: Invoice, *, prefix: str) -> None:
    """Take the next free number from the organization's counter, locked until this transaction ends.

    A number someone typed by hand is skipped: the counter's lock makes the sends of one organization
    queue, and typed numbers are written under the same lock (`_save_number_guarded`), so a typed
    number equal to the next one is committed before this check reads it, and passed over. The send
    is never refused for it, and needs no savepoint.
    """
    sequence = lock_sequence(organization_id=invoice.organization_id)
    value = sequence.next_value
    taken = Invoice.objects.filter(organization_id=invoice.organization_id)
    while taken.filter(number=format_number(prefix, value)).exists():
        value += 1
    invoice.number = format_number(prefix, value)
    invoice.save()
    sequence.next_value = value + 1
    sequence.save(update_fields=["next_value"])


@transaction.atomic
def invoice_void(*, organization: Organization, invoice_id: int, actor: Actor | None = None) -> Invoice:
    """Void a sent or overdue invoice that has received no payment."""
    invoice = lock_invoice(organization_id=organization.pk, invoice_id=invoice_id)
    before = invoice_attributes(invoice)
    invoice.void(actor=actor)
    invoice.save()
    _known_relations(invoice)
    record_invoice_events(invoice, ["invoice.voided"], before=before, actor=actor)
    return invoice


class MarkOverdueIncomplete(BillingError):
    """Some organizations' invoices could not be moved; every other organization's were."""

    code = "mark_overdue_incomplete"

    def __init__(self, *, moved: int, failed_organization_ids: list[int]):
        self.moved, self.failed_organization_ids = moved, failed_organization_ids
        super().__init__(
            f"{moved} invoices marked overdue; the invoices of {len(failed_organization_ids)} organization(s) could "
            f"not be moved (organization ids {', '.join(map(str, failed_organization_ids))}; see the log)."
        )


def _due_in_zone(zone: str, now: datetime.datetime):
    """The sent invoices of the organizations in time zone `zone` whose due date is before their
    today there."""
    today = timezone.localdate(now, timezone=zoneinfo.ZoneInfo(zone))
    return Invoice.objects.filter(
        status=Invoice.Status.SENT, organization__time_zone=zone, due_date__lt=today
    )


EVENT_BATCH = 1000  # invoices read and recorded at a time after a bulk move (bounded memory)


def _overdue_with_events(due, now: datetime.datetime) -> int:
    """Move `due` to overdue and write an `invoice.overdue` event for each invoice moved, in the
    caller's transaction; returns how many moved. On PostgreSQL one statement does both
    (invoices.overdue_sql), but for the invoices paid in part while it waited for their locks,
    whose events are written here after it. Elsewhere one UPDATE (`move_to_overdue`), then, per
    EVENT_BATCH of the moved invoices, one read of them with their lines and payments and one INSERT
    of their events."""
    statement = overdue_with_events_sql(due, now)
    if statement is not None:
        with connection.cursor() as cursor:
            cursor.execute(*statement)
            moved, behind = cursor.fetchone()
        _record_overdue_in_batches(sorted(behind or ()))
        return moved
    moved = due.move_to_overdue(now=now)
    _record_overdue_in_batches(moved)
    return len(moved)


def _record_overdue_in_batches(invoice_ids: list[int]) -> None:
    for start in range(0, len(invoice_ids), EVENT_BATCH):
        _record_overdue(invoice_ids[start : start + EVENT_BATCH])


def _record_overdue(invoice_ids: list[int]) -> None:
    from invoices.serializers import InvoiceDetailSerializer, event_context

    invoices = (
        Invoice.objects.filter(pk__in=invoice_ids)
        .select_related("customer", *CREATOR)
        .prefetch_related(detail_prefetch("lines"), detail_prefetch("payments"))
        .order_by("organization_id", "pk")
    )
    context = event_context()
    changes = []
    for invoice in invoices:
        after = InvoiceDetailSerializer(invoice, context=context).data
        # As it was: what moved is the status and the actions it allows, nothing else.
        invoice.status = Invoice.Status.SENT
        before = {"status": invoice.status, "available_actions": invoice.available_actions}
        changes.append(
            (invoice.organization_id, Change("invoice.overdue", after, previous_attributes(before, after)))
        )
    events_record_many(changes)  # no actor: the system


def invoice_mark_overdue(*, now: datetime.datetime | None = None) -> int:
    """Move every sent invoice whose due date is before its organization's today (in the
    organization's time zone) to overdue, in bulk: one statement per distinct time zone of the
    organizations (`InvoiceQuerySet.move_to_overdue`, each change recorded), after one read of
    those zones; returns how many moved. Safe to run concurrently and often: a row is moved once,
    and a row paid or voided meanwhile no longer matches.

    If a zone's statement fails, one organization's rows are what made it fail, and no organization
    may block the others: that zone is run again once per organization, each in its own
    transaction, and the organizations whose rows still fail are logged and named in
    `MarkOverdueIncomplete` after all the others have moved.
    """
    now = now or timezone.now()
    zones = Organization.objects.order_by("time_zone").values_list("time_zone", flat=True).distinct()
    moved, failed_zones = 0, []
    for zone in zones:
        try:
            with transaction.atomic():
                moved += _overdue_with_events(_due_in_zone(zone, now), now)
        except (DatabaseError, zoneinfo.ZoneInfoNotFoundError, ValueError):
            logger.exception(
                "mark_overdue: the move in time zone %r failed; moving organization by organization", zone
            )
            failed_zones.append(zone)
    failed = []
    for zone in failed_zones:
        organizations = (
            Organization.objects.filter(time_zone=zone).order_by("pk").values_list("pk", flat=True)
        )
        for organization_id in organizations:
            try:
                with transaction.atomic():
                    moved += _overdue_with_events(
                        _due_in_zone(zone, now).filter(organization_id=organization_id), now
                    )
            except (DatabaseError, zoneinfo.ZoneInfoNotFoundError, ValueError):
                logger.exception(
                    "mark_overdue: the invoices of organization %s could not be moved", organization_id
                )
                failed.append(organization_id)
    if failed:
        raise MarkOverdueIncomplete(moved=moved, failed_organization_ids=failed)
    return moved
