"""Invoices and their lines: the totals, the lifecycle and the rules that keep them exact.

The lifecycle (draft -> sent -> overdue -> paid, and void) lives here and only here: every
transition is a method that checks its guard (`can_send()`, `can_void()`, ...), the API's
`available_actions` is derived from the same guards, and `save()` refuses to change an invoice
its state has frozen. The database repeats the invariants as named constraints.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models import F, Q
from django.utils import timezone

from billing.currencies import CURRENCY_CHOICES, CURRENCY_CODES, is_currency
from billing.errors import BillingError, BusinessRuleViolation, InvalidTransition, NotEditable
from billing.money import MAX_AMOUNT, ZERO, quantize
from billing.tenancy import OwnedModel
from customers.models import Customer

MAX_LINES = 500

# What an invoice number may not hold, spelled out so that the schema says exactly the same
# (`\p{...}` classes differ between regex engines and Unicode versions): control characters, the
# invisible ones that reorder or hide text (bidi controls, zero-width and soft hyphens, the byte
# order mark) and every space but the ASCII one. The number is printed on a legal document as
# given, so what does not print as itself is refused, as is a space at either end (" INV-1" would
# print like "INV-1" and still be another number); it is never trimmed.
_NOT_PRINTED = (
    r"\u0000-\u001f\u007f-\u00a0\u00ad\u061c\u1680\u180e\u2000-\u200f\u2028-\u202f"
    r"\u205f-\u2064\u2066-\u206f\u3000\ufeff\ufff9-\ufffb"
)
NUMBER_VALIDATOR = RegexValidator(
    rf"^(?:[^ {_NOT_PRINTED}](?:[^{_NOT_PRINTED}]*[^ {_NOT_PRINTED}])?)?\Z",
    message=(
        "An invoice number is kept as given: printable characters, with spaces only between them "
        "(no space at either end, no control or invisible character)."
    ),
)
HALF_CENT = Decimal("0.005")


def default_currency() -> str:
    return settings.DEFAULT_CURRENCY


class InvoiceIncomplete(BusinessRuleViolation):
    code = "invoice_incomplete"


class AmountTooLarge(BusinessRuleViolation):
    code = "amount_too_large"


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft"
    SENT = "sent"
    OVERDUE = "overdue"
    PAID = "paid"
    VOID = "void"


class Invoice(OwnedModel):
    Status = InvoiceStatus

    # The fields a client may change, per state. Everything else changes only through a
    # transition method (status, sent_at, paid_at, amount_paid) or a recomputation of the
    # lines (the totals).
    CLIENT_FIELDS = ("number", "customer", "currency", "issue_date", "due_date", "notes")
    EDITABLE_FIELDS: ClassVar[dict[str, frozenset[str]]] = {
        Status.DRAFT: frozenset(CLIENT_FIELDS) | {"lines"},
        Status.SENT: frozenset({"notes"}),
        Status.OVERDUE: frozenset({"notes"}),
        Status.PAID: frozenset(),
        Status.VOID: frozenset(),
    }
    # The lifecycle graph; every status change, through whatever path, must be one of these edges.
    TRANSITIONS: ClassVar[dict[str, frozenset[str]]] = {
        Status.DRAFT: frozenset({Status.SENT}),
        Status.SENT: frozenset({Status.OVERDUE, Status.PAID, Status.VOID}),
        Status.OVERDUE: frozenset({Status.PAID, Status.VOID}),
        Status.PAID: frozenset(),
        Status.VOID: frozenset(),
    }
    PAYABLE = (Status.SENT, Status.OVERDUE)
    ACTIONS = ("edit", "delete", "send", "void", "pay")

    # NULL, not "": many drafts may be unnumbered while (owner, number) stays unique.
    number = models.CharField(max_length=32, null=True, blank=True, validators=[NUMBER_VALIDATOR])  # noqa: DJ001
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="invoices")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES, default=default_currency)
    issue_date = models.DateField(default=timezone.localdate)
    due_date = models.DateField()
    notes = models.TextField(blank=True, max_length=5000)
    subtotal = models.DecimalField(max_digits=14, decimal_places=2, default=ZERO)
    tax_total = models.DecimalField(max_digits=14, decimal_places=2, default=ZERO)
    total = models.DecimalField(max_digits=14, decimal_places=2, default=ZERO)
    amount_paid = models.DecimalField(max_digits=14, decimal_places=2, default=ZERO)
    sent_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    # Bumped by every write; a save matches the version it read (OwnedModel), so no write is ever
    # based on a stale read. mark_overdue's bulk UPDATE bumps it too.
    version = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        # Triggers keep InvoiceTotals (migration 0003). On SQLite a migration that rebuilds this
        # table (most changes here do) drops them: such a migration must create them again.
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "number"], name="invoice_owner_number_unique"),
            # The target of the (invoice, owner) references of lines and payments (migration 0004),
            # by which the database refuses a line or payment of another owner's invoice.
            models.UniqueConstraint(fields=["id", "owner"], name="invoice_id_owner_unique"),
            models.CheckConstraint(condition=Q(status__in=InvoiceStatus.values), name="invoice_status_valid"),
            models.CheckConstraint(
                condition=Q(currency__in=sorted(CURRENCY_CODES)), name="invoice_currency_valid"
            ),
            models.CheckConstraint(
                condition=Q(due_date__gte=F("issue_date")), name="invoice_due_date_gte_issue_date"
            ),
            # total = subtotal + tax_total. Written as "within half a cent" because SQLite does
            # this arithmetic in floating point; on PostgreSQL's numeric(14, 2) it is exact equality.
            models.CheckConstraint(
                condition=Q(
                    subtotal__gte=0,
                    tax_total__gte=0,
                    total__gt=F("subtotal") + F("tax_total") - HALF_CENT,
                    total__lt=F("subtotal") + F("tax_total") + HALF_CENT,
                ),
                name="invoice_total_is_subtotal_plus_tax",
            ),
            models.CheckConstraint(
                condition=Q(amount_paid__gte=0, amount_paid__lte=F("total")),
                name="invoice_amount_paid_lte_total",
            ),
            # Money is received only while an invoice is payable; a paid invoice is settled in full.
            models.CheckConstraint(
                condition=Q(amount_paid=0) | Q(status__in=["sent", "overdue", "paid"]),
                name="invoice_payments_only_when_issued",
            ),
            models.CheckConstraint(
                condition=~Q(status="paid") | Q(amount_paid=F("total"), paid_at__isnull=False),
                name="invoice_paid_is_settled",
            ),
            models.CheckConstraint(
                condition=Q(status="draft") | Q(number__isnull=False, sent_at__isnull=False),
                name="invoice_issued_has_number",
            ),
            models.CheckConstraint(condition=~Q(number=""), name="invoice_number_not_blank"),
        ]
        indexes = [
            models.Index(fields=["owner", "-created_at", "-id"], name="invoice_owner_created"),
            models.Index(fields=["owner", "status", "due_date"], name="invoice_owner_status_due"),
            models.Index(fields=["owner", "customer"], name="invoice_owner_customer"),
            models.Index(fields=["owner", "issue_date"], name="invoice_owner_issue_date"),
            # The summary reads only these columns (PostgreSQL: an index-only scan; elsewhere a plain
            # index on the key columns).
            models.Index(
                fields=["owner", "currency", "status"],
                include=["total", "amount_paid"],
                name="invoice_owner_summary",
            ),
            # mark_overdue scans sent invoices across every owner.
            models.Index(fields=["due_date"], condition=Q(status="sent"), name="invoice_sent_due"),
        ]

    def __str__(self) -> str:
        return self.number or f"draft #{self.pk}"

    # --- state -----------------------------------------------------------------------------

    @property
    def loaded_status(self) -> str | None:
        loaded = getattr(self, "_loaded", None)
        return loaded.get("status") if loaded else None

    @property
    def balance_due(self) -> Decimal:
        return self.total - self.amount_paid

    def editable_fields(self) -> frozenset[str]:
        return self.EDITABLE_FIELDS[self.status]

    def can_edit(self) -> bool:
        return bool(self.editable_fields())

    def can_delete(self) -> bool:
        return self.status == self.Status.DRAFT

    def can_send(self) -> bool:
        return self.status == self.Status.DRAFT

    def can_void(self) -> bool:
        return self.status in self.PAYABLE and self.amount_paid == 0

    def can_pay(self) -> bool:
        return self.status in self.PAYABLE

    @property
    def available_actions(self) -> list[str]:
        return [action for action in self.ACTIONS if getattr(self, f"can_{action}")()]

    # --- rules of the fields ----------------------------------------------------------------

    def check_fields(self) -> None:
        """The rules on the invoice's own fields, with a clear error on the field they concern; the
        services call it before every write, and `clean()` (the admin's forms) too, so no path
        reaches the database's CHECK with a value it would refuse."""
        # The number as given; checked when it is written (a number stored before this rule stays
        # readable and its invoice editable).
        if self.number is not None and (self._state.adding or "number" in self.changed_fields()):
            try:
                NUMBER_VALIDATOR(self.number)
            except ValidationError as exc:
                raise BusinessRuleViolation(exc.messages[0], field="number") from None
        if not is_currency(self.currency):
            raise BusinessRuleViolation(
                f'"{self.currency}" is not an active ISO 4217 currency code.', field="currency"
            )
        if self.issue_date and self.due_date and self.due_date < self.issue_date:
            raise BusinessRuleViolation(
                f"The due date ({self.due_date}) cannot be before the issue date ({self.issue_date}).",
                field="due_date",
            )
        if self.customer_id is not None and (self._state.adding or "customer_id" in self.changed_fields()):
            # A customer never changes owner (OwnedModel), so one already loaded is as good as a read.
            if Invoice.customer.is_cached(self):
                customer_owner = self.customer.owner_id
            else:
                customer_owner = (
                    Customer.objects.filter(pk=self.customer_id).values_list("owner_id", flat=True).first()
                )
            if customer_owner != self.owner_id:
                raise BusinessRuleViolation(
                    f'Invalid pk "{self.customer_id}" - object does not exist.', field="customer"
                )

    def clean(self) -> None:
        try:
            self.check_fields()
        except BillingError as exc:
            raise ValidationError({exc.field: exc.message} if exc.field else exc.message) from None

    # --- transitions ----------------------------------------------------------------------

    def check_changes(self, changed: Iterable[str]) -> None:
        """Refuse a change to fields the invoice's state has frozen."""
        changed = set(changed)
        if not changed:
            return
        allowed = self.editable_fields()
        if not allowed:
            raise NotEditable(f"A {self.status} invoice cannot be changed.")
        forbidden = sorted(changed - allowed)
        if forbidden:
            raise NotEditable(
                f"A {self.status} invoice accepts changes to {', '.join(sorted(allowed))} only; "
                f"it refuses changes to {', '.join(forbidden)}."
            )

    def check_delete(self) -> None:
        if not self.can_delete():
            raise NotEditable(f"Only a draft can be deleted; this invoice is {self.status}.")

    def send(self, *, number: str | None = None) -> None:
        if not self.can_send():
            raise InvalidTransition(f"Only a draft can be sent; this invoice is {self.status}.")
        if not self.total > 0:
            raise InvoiceIncomplete("An invoice needs at least one line and a total above zero to be sent.")
        if self.number is None:
            self.number = number
        self.status, self.sent_at = self.Status.SENT, timezone.now()

    def void(self) -> None:
        if not self.can_void():
            if self.status in self.PAYABLE:
                raise InvalidTransition("An invoice that has received payments cannot be voided.")
            raise InvalidTransition(
                f"Only a sent or overdue invoice can be voided; this invoice is {self.status}."
            )
        self.status = self.Status.VOID

    def apply_payment(self, amount: Decimal) -> None:
        """Take `amount` off the balance; settle the invoice when the balance reaches zero."""
        if not self.can_pay():
            raise InvalidTransition(
                f"Only a sent or overdue invoice accepts payments; this invoice is {self.status}."
            )
        if amount <= 0:
            raise BusinessRuleViolation("A payment amount must be above zero.", field="amount")
        if amount > self.balance_due:
            raise BusinessRuleViolation(
                f"The amount {amount} exceeds the balance due of {self.balance_due} {self.currency}.",
                field="amount",
            )
        self.amount_paid += amount
        self.mark_paid_if_settled()

    def mark_paid_if_settled(self) -> None:
        if self.status in self.PAYABLE and self.amount_paid == self.total:
            self.status, self.paid_at = self.Status.PAID, timezone.now()

    def set_totals(self, lines: Iterable[Line]) -> None:
        """Recompute the totals from `lines`, whose own amounts are computed here too."""
        subtotal = tax_total = ZERO
        for line in lines:
            line.compute_amounts()
            subtotal += line.amount
            tax_total += line.tax_amount
        if subtotal + tax_total > MAX_AMOUNT:
            raise AmountTooLarge(f"The invoice total would exceed {MAX_AMOUNT}.", field="lines")
        self.subtotal, self.tax_total, self.total = subtotal, tax_total, subtotal + tax_total

    def save(self, *args, **kwargs) -> None:
        loaded = getattr(self, "_loaded", None)
        if loaded is not None and not self._state.adding:
            self._check_frozen(loaded)
        super().save(*args, **kwargs)

    def _check_frozen(self, loaded: dict) -> None:
        """The model-level guard: whatever the caller, a paid or void invoice never changes, and an
        issued one changes only its notes and what its transitions set."""
        status = loaded.get("status")
        if status is not None and self.status != status and self.status not in self.TRANSITIONS[status]:
            raise InvalidTransition(f"An invoice cannot go from {status} to {self.status}.")
        if "amount_paid" in loaded and self.amount_paid < loaded["amount_paid"]:
            raise NotEditable("Money received is never taken back from an invoice.")
        changed = {
            name
            for name, value in loaded.items()
            if name not in ("updated_at", "version") and getattr(self, name) != value
        }
        if not changed or status == self.Status.DRAFT:
            return
        if status in (self.Status.PAID, self.Status.VOID):
            raise NotEditable(f"A {status} invoice cannot be changed.")
        transition_fields = {"status", "amount_paid", "paid_at", "notes"}
        if changed - transition_fields:
            raise NotEditable(
                f"A {status} invoice cannot change {', '.join(sorted(changed - transition_fields))}."
            )

    def delete(self, *args, **kwargs):
        """Delete a draft. The status is read again under the row's lock, whatever this instance was
        read as: a draft sent since it was read (say, while an admin's confirmation page was open)
        is refused. On PostgreSQL a trigger refuses deleting an issued invoice too (migration 0004)."""
        with transaction.atomic(using=kwargs.get("using")):
            current = (
                type(self)
                ._base_manager.select_for_update()
                .filter(pk=self.pk)
                .values_list("status", flat=True)
                .first()
            )
            if current is None:
                raise self.DoesNotExist("This invoice no longer exists.")
            if current != self.Status.DRAFT:
                raise NotEditable(f"Only a draft can be deleted; this invoice is {current}.")
            return super().delete(*args, **kwargs)


class Line(models.Model):
    # No index of its own: every table's indexes lead with owner_id (Meta.indexes), which serve
    # the lookups by owner, and a redundant index would only slow every write.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    # No index of its own either: line_invoice_position_unique (invoice, position) serves every
    # lookup by invoice (the detail's lines, the cascade of a draft's delete).
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines", db_index=False)
    position = models.PositiveIntegerField()
    description = models.CharField(max_length=500)
    quantity = models.DecimalField(max_digits=12, decimal_places=3)
    unit_price = models.DecimalField(max_digits=14, decimal_places=2)
    tax_rate = models.DecimalField(max_digits=5, decimal_places=2, default=ZERO)
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    tax_amount = models.DecimalField(max_digits=14, decimal_places=2)

    class Meta:
        ordering = ["invoice", "position"]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gt=0), name="line_quantity_positive"),
            models.CheckConstraint(condition=Q(unit_price__gte=0), name="line_unit_price_not_negative"),
            models.CheckConstraint(
                condition=Q(tax_rate__gte=0, tax_rate__lte=100), name="line_tax_rate_percent"
            ),
            models.CheckConstraint(
                condition=Q(amount__gte=0, tax_amount__gte=0), name="line_amounts_not_negative"
            ),
            models.UniqueConstraint(fields=["invoice", "position"], name="line_invoice_position_unique"),
        ]
        indexes = [models.Index(fields=["owner", "invoice"], name="line_owner_invoice")]

    def __str__(self) -> str:
        return self.description

    # Lines are written only with their invoice, by invoice_create and invoice_update, which lock
    # the invoice, replace its lines whole and recompute its totals in the same transaction. One
    # line saved or deleted on its own would leave the totals wrong, so the model refuses it.
    WRITTEN_WITH_INVOICE = (
        "Lines are written only with their invoice (invoice_create, invoice_update), which recomputes "
        "its totals in the same transaction."
    )

    def save(self, *args, **kwargs) -> None:
        raise NotEditable(self.WRITTEN_WITH_INVOICE)

    def delete(self, *args, **kwargs):
        raise NotEditable(self.WRITTEN_WITH_INVOICE)

    def compute_amounts(self) -> None:
        """amount = quantity x unit_price, tax = amount x rate / 100, each rounded half-up to cents."""
        self.amount = quantize(self.quantity * self.unit_price)
        self.tax_amount = quantize(self.amount * self.tax_rate / 100)
        if self.amount + self.tax_amount > MAX_AMOUNT:
            raise AmountTooLarge(f"A line amount would exceed {MAX_AMOUNT}.", field="lines")


class InvoiceSequence(models.Model):
    """The per-owner counter behind issued invoice numbers; locked for the moment of a send."""

    owner = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    next_value = models.PositiveBigIntegerField(default=1)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(next_value__gte=1), name="sequence_next_value_positive")
        ]

    def __str__(self) -> str:
        return f"next invoice number {self.next_value} of owner {self.owner_id}"


class InvoiceTotals(models.Model):
    """How many invoices one owner has in one currency and status, and their total and amount paid.

    The database keeps it: triggers on the invoice table (migration 0003) add every insert, update
    and delete of an invoice to its row, in the same statement, so it is exact whatever wrote the
    invoice (a service, `mark_overdue`'s bulk UPDATE, the admin, a COPY). Nothing in Python writes
    it. The unfiltered summary and the unfiltered list's count read it instead of aggregating the
    owner's invoices, so they cost the same at 100 invoices and at a million.

    Money is in hundredths (amounts are stored with two decimals): integer sums are exact on every
    database, where SQLite would add decimals in floating point.

    Each (owner, currency, status) is split over SHARDS rows by invoice id, so that writers of one
    owner (two payments of different invoices, say) seldom wait on the same row: a row a write
    changes stays locked until its transaction commits. Readers add the shards up.
    """

    SHARDS = 16  # the triggers' `id % 16` (migration 0003)

    # The key is the primary key. No foreign key to the user: Django's collector must not delete
    # these rows with a user (the triggers take the user's invoices out as the cascade deletes them).
    pk = models.CompositePrimaryKey("owner_id", "currency", "status", "shard")
    owner_id = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Invoice.Status.choices)
    shard = models.SmallIntegerField()
    count = models.BigIntegerField()
    # numeric, not bigint: a sum of amounts that each fit their column cannot overflow it (38 digits
    # hold 2^63 invoices of the largest total), where bigint hundredths overflowed after ~92,000
    # invoices of the largest total in one row, making every later write of that row fail.
    total_cents = models.DecimalField(max_digits=38, decimal_places=0)
    paid_cents = models.DecimalField(max_digits=38, decimal_places=0)

    def __str__(self) -> str:
        return f"owner {self.owner_id} {self.currency} {self.status} #{self.shard}: {self.count}"
