"""Invoices and their lines: the totals, the lifecycle and the rules that keep them exact.

The lifecycle (draft -> sent -> overdue -> paid, and void) lives here and only here: every status
change goes through `_set_status()`, which checks it against `TRANSITIONS` (the bulk move to
overdue too, `InvoiceQuerySet.move_to_overdue`); each transition method checks its guard
(`can_send()`, `can_void()`, ...), from which the API's `available_actions` is derived; `save()`
refuses a change the invoice's state has frozen (derived from `EDITABLE_FIELDS` and
`STATE_FIELDS`) and records every status change in `InvoiceStatusChange`, in the same transaction.
The database repeats the invariants as named constraints.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Iterable
from decimal import Decimal
from typing import ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models import F, Q
from django.db.models.functions import Round
from django.utils import timezone

from billing import money
from billing.currencies import (
    CURRENCY_CHOICES,
    CURRENCY_CODES,
    THREE_PLACE_CODES,
    ZERO_PLACE_CODES,
    is_currency,
)
from billing.exceptions import BillingError, BusinessRuleViolation, InvalidTransition, NotEditable
from billing.models import CompiledInsertModel, OwnedModel
from billing.money import MONEY_DIGITS, MONEY_PLACES, PRICE_DIGITS, PRICE_PLACES, ZERO
from customers.models import Customer
from users.models import CreatedBy, actor_columns

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
# Half the finest minor unit (a thousandth): see invoice_total_is_subtotal_plus_tax.
HALF_THOUSANDTH = Decimal("0.0005")
MONEY_COLUMNS = ("subtotal", "tax_total", "total", "amount_paid")


def _at_places(places: int) -> Q:
    """The invoice's money columns hold no more than `places` decimals."""
    return Q(**{name: Round(F(name), places) for name in MONEY_COLUMNS})


def money_field(**kwargs) -> models.DecimalField:
    """A money column: 12 whole digits and 3 places, the finest any accepted currency has."""
    return models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, **kwargs)


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


PAYABLE = (InvoiceStatus.SENT, InvoiceStatus.OVERDUE)


HISTORY_COLUMNS = (
    "invoice_id, organization_id, from_status, to_status, actor_user_id, actor_api_key_id, changed_at"
)


class InvoiceQuerySet(models.QuerySet):
    def overdue_ctes(self, *, now: datetime.datetime, returning: str = "*") -> tuple[str, list]:
        """PostgreSQL: the move of this queryset's sent invoices to overdue as two common table
        expressions of one statement, and their parameters: `moved`, the UPDATE, returning
        `returning` of each moved row as it is after it (every column by default), and `history`,
        the status change of each (returning its invoice's id). Data-modifying, so they run whatever
        the statement they head reads of them: `move_to_overdue` reads `history`, mark_overdue's
        events (invoices.overdue_sql) `moved`."""
        Invoice._check_transition(InvoiceStatus.SENT, InvoiceStatus.OVERDUE)
        due = self.filter(status=InvoiceStatus.SENT).order_by()
        select_sql, select_params = due.values("pk").query.sql_with_params()
        connection = transaction.get_connection(self.db)
        q = connection.ops.quote_name
        invoice, history = q(Invoice._meta.db_table), q(InvoiceStatusChange._meta.db_table)
        at = connection.ops.adapt_datetimefield_value(now)
        sql = (
            f"moved AS (UPDATE {invoice} SET status = %s, updated_at = %s, version = version + 1 "  # noqa: S608
            f"WHERE id IN ({select_sql}) AND status = %s RETURNING {returning}), "
            f"history AS (INSERT INTO {history} ({HISTORY_COLUMNS}) "
            "SELECT id, organization_id, %s, %s, NULL, NULL, %s FROM moved RETURNING invoice_id)"
        )
        params = [
            InvoiceStatus.OVERDUE,
            at,
            *select_params,
            InvoiceStatus.SENT,
            InvoiceStatus.SENT,
            InvoiceStatus.OVERDUE,
            at,
        ]
        return sql, params

    def move_to_overdue(self, *, now: datetime.datetime | None = None) -> list[int]:
        """Move the sent invoices of this queryset to overdue, recording each change; returns the
        ids of those that moved. The transition is the model's (`TRANSITIONS`), made in bulk: on
        PostgreSQL one statement (an UPDATE ... RETURNING feeding the history insert, which returns
        the ids), on SQLite, whose write transactions are serialized, the history insert (returning
        the ids) then the UPDATE of the same rows. Both are exact: a row paid or voided meanwhile no
        longer matches and is neither moved nor recorded.
        """
        Invoice._check_transition(InvoiceStatus.SENT, InvoiceStatus.OVERDUE)
        now = now or timezone.now()
        with transaction.atomic(using=self.db, savepoint=False):
            connection = transaction.get_connection(self.db)
            if connection.vendor == "postgresql":
                ctes, params = self.overdue_ctes(now=now, returning="id, organization_id")
                with connection.cursor() as cursor:
                    cursor.execute(f"WITH {ctes} SELECT invoice_id FROM history", params)  # noqa: S608
                    return sorted(row[0] for row in cursor.fetchall())
            due = self.filter(status=InvoiceStatus.SENT).order_by()
            select_sql, select_params = due.values("pk").query.sql_with_params()
            invoice, history = Invoice._meta.db_table, InvoiceStatusChange._meta.db_table
            q = connection.ops.quote_name
            # As the ORM would write the value (on SQLite: naive UTC text, the form every other
            # timestamp of the table has, so that they compare and sort alike).
            at = connection.ops.adapt_datetimefield_value(now)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {q(history)} ({HISTORY_COLUMNS}) "  # noqa: S608
                    f"SELECT id, organization_id, %s, %s, NULL, NULL, %s FROM {q(invoice)} WHERE id IN ({select_sql}) "
                    "RETURNING invoice_id",
                    [InvoiceStatus.SENT, InvoiceStatus.OVERDUE, at, *select_params],
                )
                moved = sorted(row[0] for row in cursor.fetchall())
            if moved:
                due.update(status=InvoiceStatus.OVERDUE, updated_at=now, version=F("version") + 1)
            return moved


class Invoice(OwnedModel, CreatedBy):
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
    # What changes with the state itself, never by a client: the fields a transition out of the
    # state sets (a send numbers and dates the draft; money received settles a payable invoice).
    STATE_FIELDS: ClassVar[dict[str, frozenset[str]]] = {
        Status.DRAFT: frozenset({"status", "number", "sent_at", "public_token"}),
        Status.SENT: frozenset({"status", "amount_paid", "paid_at"}),
        Status.OVERDUE: frozenset({"status", "amount_paid", "paid_at"}),
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
    PAYABLE = PAYABLE
    ACTIONS = ("edit", "delete", "send", "void", "pay")

    # NULL, not "": many drafts may be unnumbered while (organization, number) stays unique.
    number = models.CharField(max_length=32, null=True, blank=True, validators=[NUMBER_VALIDATOR])  # noqa: DJ001
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="invoices")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)
    currency = models.CharField(max_length=3, choices=CURRENCY_CHOICES, default=default_currency)
    # The services default it to the organization's today (its time zone), and the due date to
    # the issue date plus its payment terms.
    issue_date = models.DateField()
    due_date = models.DateField()
    notes = models.TextField(blank=True, max_length=5000)
    subtotal = money_field(default=ZERO)
    tax_total = money_field(default=ZERO)
    total = money_field(default=ZERO)
    amount_paid = money_field(default=ZERO)
    sent_at = models.DateTimeField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    # The hosted invoice page's key (/i/<token>/): 192 random bits, never derived from the id, set
    # when the invoice is issued.
    # Unique by a constraint, not `unique=True`: that also builds a LIKE index (varchar_pattern_ops)
    # nothing reads, which every update of an issued invoice would write (none is HOT: the status
    # and amount columns are indexed), about a tenth of a bulk move's time. NULL until issued (unique
    # among the issued; "" would collide).
    public_token = models.CharField(max_length=43, null=True, blank=True, editable=False)  # noqa: DJ001
    # Bumped by every write; a save matches the version it read (OwnedModel), so no write is ever
    # based on a stale read. mark_overdue's bulk UPDATE bumps it too.
    version = models.PositiveIntegerField(default=0, editable=False)

    objects = InvoiceQuerySet.as_manager()

    class Meta:
        # Triggers keep InvoiceTotals (migration 0002_invoice_totals). On SQLite a migration that
        # rebuilds this table (most changes here do) drops them: such a migration must create them
        # again.
        ordering = ["-created_at", "-id"]
        constraints = [
            *CreatedBy.Meta.constraints,
            models.UniqueConstraint(fields=["organization", "number"], name="invoice_org_number_unique"),
            # The target of the (invoice, organization) references of lines and payments (payments
            # migration 0002_organization_references), by which the database refuses a line or
            # payment of another organization's invoice.
            models.UniqueConstraint(fields=["id", "organization"], name="invoice_id_org_unique"),
            models.CheckConstraint(condition=Q(status__in=InvoiceStatus.values), name="invoice_status_valid"),
            models.CheckConstraint(
                condition=Q(currency__in=sorted(CURRENCY_CODES)), name="invoice_currency_valid"
            ),
            models.CheckConstraint(
                condition=Q(due_date__gte=F("issue_date")), name="invoice_due_date_gte_issue_date"
            ),
            # total = subtotal + tax_total. Written as "within half a thousandth" because SQLite
            # does this arithmetic in floating point; on PostgreSQL's numeric(15, 3) it is exact
            # equality (each amount has at most 3 places).
            models.CheckConstraint(
                condition=Q(
                    subtotal__gte=0,
                    tax_total__gte=0,
                    total__gt=F("subtotal") + F("tax_total") - HALF_THOUSANDTH,
                    total__lt=F("subtotal") + F("tax_total") + HALF_THOUSANDTH,
                ),
                name="invoice_total_is_subtotal_plus_tax",
            ),
            # Every amount has at most its currency's places (ISO 4217 minor units, as recorded in
            # billing.currencies): none for JPY, 2 for USD; the columns' 3 suffice for KWD. The
            # lines' and payments' amounts add up to these (the models check each one).
            models.CheckConstraint(
                condition=(Q(currency__in=THREE_PLACE_CODES) | _at_places(2))
                & (~Q(currency__in=ZERO_PLACE_CODES) | _at_places(0)),
                name="invoice_amounts_in_minor_units",
            ),
            models.CheckConstraint(
                condition=Q(amount_paid__gte=0, amount_paid__lte=F("total")),
                name="invoice_amount_paid_lte_total",
            ),
            # Money is received only while an invoice is payable; a paid invoice is settled in full.
            models.CheckConstraint(
                condition=Q(amount_paid=0) | Q(status__in=[*PAYABLE, InvoiceStatus.PAID]),
                name="invoice_payments_only_when_issued",
            ),
            models.CheckConstraint(
                condition=~Q(status=InvoiceStatus.PAID) | Q(amount_paid=F("total"), paid_at__isnull=False),
                name="invoice_paid_is_settled",
            ),
            models.CheckConstraint(
                condition=Q(status=InvoiceStatus.DRAFT) | Q(number__isnull=False, sent_at__isnull=False),
                name="invoice_issued_has_number",
            ),
            models.CheckConstraint(
                condition=Q(status=InvoiceStatus.DRAFT) | Q(public_token__isnull=False),
                name="invoice_issued_has_public_token",
            ),
            models.CheckConstraint(condition=~Q(number=""), name="invoice_number_not_blank"),
            models.UniqueConstraint(fields=["public_token"], name="invoice_public_token_unique"),
        ]
        indexes = [
            models.Index(fields=["organization", "-created_at", "-id"], name="invoice_org_created"),
            models.Index(fields=["organization", "status", "due_date"], name="invoice_org_status_due"),
            models.Index(fields=["organization", "customer"], name="invoice_org_customer"),
            models.Index(fields=["organization", "issue_date"], name="invoice_org_issue_date"),
            # The summary reads only these columns (PostgreSQL: an index-only scan; elsewhere a plain
            # index on the key columns).
            models.Index(
                fields=["organization", "currency", "status"],
                include=["total", "amount_paid"],
                name="invoice_org_summary",
            ),
            # mark_overdue scans sent invoices across every organization.
            models.Index(
                fields=["due_date"], condition=Q(status=InvoiceStatus.SENT), name="invoice_sent_due"
            ),
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
        """What is left to pay, with the currency's places (the columns hold 3: 12.500 USD is 12.50)."""
        return money.quantize(self.total - self.amount_paid, self.currency)

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
            # A customer never changes organization (OwnedModel), so one already loaded is as good as a read.
            if Invoice.customer.is_cached(self):
                customer_organization = self.customer.organization_id
            else:
                customer_organization = (
                    Customer.objects.filter(pk=self.customer_id)
                    .values_list("organization_id", flat=True)
                    .first()
                )
            if customer_organization != self.organization_id:
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
        """Refuse a client's change to fields the invoice's state has frozen."""
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

    @classmethod
    def _check_transition(cls, current: str, new: str) -> None:
        if new not in cls.TRANSITIONS[current]:
            raise InvalidTransition(f"An invoice cannot go from {current} to {new}.")

    def _set_status(self, new: str, *, actor=None) -> None:
        """The one way a status changes (Oscar's `set_status`): along an edge of `TRANSITIONS`.
        `save()` records the change, with `actor` (the user who made it; None for the system)."""
        self._check_transition(self.status, new)
        self.status = new
        self._status_actor = actor

    def send(self, *, number: str | None = None, actor=None) -> None:
        if not self.can_send():
            raise InvalidTransition(f"Only a draft can be sent; this invoice is {self.status}.")
        if not self.total > 0:
            raise InvoiceIncomplete("An invoice needs at least one line and a total above zero to be sent.")
        if self.number is None:
            self.number = number
        self._set_status(self.Status.SENT, actor=actor)
        self.sent_at = timezone.now()
        self.public_token = secrets.token_urlsafe(24)

    def void(self, *, actor=None) -> None:
        if not self.can_void():
            if self.status in self.PAYABLE:
                raise InvalidTransition("An invoice that has received payments cannot be voided.")
            raise InvalidTransition(
                f"Only a sent or overdue invoice can be voided; this invoice is {self.status}."
            )
        self._set_status(self.Status.VOID, actor=actor)

    def apply_payment(self, amount: Decimal, *, actor=None) -> None:
        """Take `amount` off the balance; settle the invoice when the balance reaches zero."""
        self.check_amount(amount)
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
        if self.amount_paid == self.total:
            self._set_status(self.Status.PAID, actor=actor)
            self.paid_at = timezone.now()

    def check_amount(self, amount: Decimal, *, as_written: bool = False) -> None:
        """Refuse an amount (a payment's) with more places than the invoice's currency: by value
        (JPY 12.5), or with `as_written` by the places as given (JPY "1000.00" has two), as the API
        counts them. A 400 on `amount`; its places are part of its form, so they are judged before
        the invoice's state (a well-formed amount on a paid invoice is 409)."""
        places = money.places(self.currency)
        given = money.places_written(amount) if as_written else money.places_written(amount.normalize())
        if given > places:
            raise BusinessRuleViolation(
                f"A {self.currency} amount has at most {places} decimal place{'' if places == 1 else 's'} "
                f"(ISO 4217 minor units); {amount} has {given}.",
                field="amount",
            )

    def set_totals(self, lines: Iterable[Line]) -> None:
        """Recompute the totals from `lines`, whose own amounts are computed here too."""
        subtotal = tax_total = ZERO
        for line in lines:
            line.compute_amounts(self.currency)
            subtotal += line.amount
            tax_total += line.tax_amount
        limit = money.max_amount(self.currency)
        if subtotal + tax_total > limit:
            raise AmountTooLarge(
                f"The invoice total would exceed {money.format_amount(limit, self.currency)} {self.currency}.",
                field="lines",
            )
        self.subtotal, self.tax_total, self.total = subtotal, tax_total, subtotal + tax_total

    # --- writes ---------------------------------------------------------------------------

    def save(self, *args, **kwargs) -> None:
        """Save, refusing what the loaded state forbids, and record a status change in the same
        transaction (whatever made it: a transition method, the admin, a shell)."""
        loaded = getattr(self, "_loaded", None)
        previous = None
        if loaded is not None and not self._state.adding:
            self._check_frozen(loaded)
            previous = loaded.get("status")
        if previous is None or previous == self.status:
            super().save(*args, **kwargs)
            return
        with transaction.atomic(using=kwargs.get("using"), savepoint=False):
            super().save(*args, **kwargs)
            actor_user, actor_api_key = actor_columns(getattr(self, "_status_actor", None))
            InvoiceStatusChange.objects.create(
                organization_id=self.organization_id,
                invoice=self,
                from_status=previous,
                to_status=self.status,
                actor_user=actor_user,
                actor_api_key=actor_api_key,
                changed_at=self.updated_at,
            )
        self._status_actor = None

    # Client fields by their column names (the lines are the totals' columns).
    _COLUMNS: ClassVar[dict[str, tuple[str, ...]]] = {
        "customer": ("customer_id",),
        "lines": ("subtotal", "tax_total", "total"),
    }

    @classmethod
    def _writable_columns(cls, status: str) -> frozenset[str]:
        """What a save may change on an invoice loaded in `status`: its editable fields (as
        columns) and what the transitions out of that state set; derived, never listed twice."""
        columns = set(cls.STATE_FIELDS[status])
        for name in cls.EDITABLE_FIELDS[status]:
            columns.update(cls._COLUMNS.get(name, (name,)))
        return frozenset(columns)

    def _check_frozen(self, loaded: dict) -> None:
        """The model-level guard: whatever the caller, a paid or void invoice never changes, and an
        issued one changes only its notes and what its transitions set."""
        status = loaded.get("status")
        if status is None:
            # Read without its status (`.only()`, `.defer()`): the guard needs it, so it is read
            # now, and recorded as read, so that the frozen fields and a status change are judged
            # (and a change recorded) as for a full read. Nothing changed: nothing to judge.
            if not (self.changed_fields() - {"updated_at", "version"}) and "status" not in self.__dict__:
                return
            status = type(self)._base_manager.filter(pk=self.pk).values_list("status", flat=True).first()
            if status is None:
                return  # vanished: the save's own UPDATE answers DoesNotExist
            loaded["status"] = status
            self.__dict__.setdefault("status", status)
        if self.status != status:
            self._check_transition(status, self.status)
        if "amount_paid" in loaded and self.amount_paid < loaded["amount_paid"]:
            raise NotEditable("Money received is never taken back from an invoice.")
        changed = self.changed_fields() - {"updated_at", "version"}
        if not changed:
            return
        if not self.EDITABLE_FIELDS[status] and not self.STATE_FIELDS[status]:
            raise NotEditable(f"A {status} invoice cannot be changed.")
        frozen = changed - self._writable_columns(status)
        if frozen:
            raise NotEditable(f"A {status} invoice cannot change {', '.join(sorted(frozen))}.")

    def delete(self, *args, **kwargs):
        """Delete a draft. The status is read again under the row's lock, whatever this instance was
        read as: a draft sent since it was read (say, while an admin's confirmation page was open)
        is refused. On PostgreSQL a trigger refuses deleting an issued invoice too."""
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


class InvoiceStatusChange(CompiledInsertModel):
    """One status change of an invoice: from, to, who and when. Written in the transaction of the
    change by `Invoice.save()` and, in bulk, by `InvoiceQuerySet.move_to_overdue`; never changed.
    A row with no actor was made by the system (`mark_overdue`)."""

    organization = models.ForeignKey(
        "users.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    # An invoice with status changes is issued, and an issued invoice is never deleted.
    invoice = models.ForeignKey(
        "Invoice", on_delete=models.CASCADE, related_name="status_changes", db_index=False
    )
    from_status = models.CharField(max_length=10, choices=InvoiceStatus.choices)
    to_status = models.CharField(max_length=10, choices=InvoiceStatus.choices)
    # Who made the change: a member or an API key; neither for the system (mark_overdue).
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_api_key = models.ForeignKey(
        "users.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    changed_at = models.DateTimeField()

    class Meta:
        ordering = ["invoice", "changed_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(from_status__in=InvoiceStatus.values, to_status__in=InvoiceStatus.values),
                name="status_change_statuses_valid",
            ),
            models.CheckConstraint(
                condition=~Q(from_status=F("to_status")), name="status_change_changes_status"
            ),
            models.CheckConstraint(
                condition=Q(actor_user__isnull=True) | Q(actor_api_key__isnull=True),
                name="status_change_one_actor",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "invoice", "changed_at"], name="status_change_org_invoice"),
        ]

    def __str__(self) -> str:
        return f"invoice {self.invoice_id}: {self.from_status} -> {self.to_status}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise NotEditable("A status change is history: it is never changed.")
        super().save(*args, **kwargs)

    @property
    def actor(self):
        """The member or API key that made the change; None for the system."""
        return self.actor_user if self.actor_user_id else self.actor_api_key


class Line(models.Model):
    # No index of its own: every table's indexes lead with organization_id (Meta.indexes), which serve
    # the lookups by organization, and a redundant index would only slow every write.
    organization = models.ForeignKey(
        "users.Organization", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    # No index of its own either: line_invoice_position_unique (invoice, position) serves every
    # lookup by invoice (the detail's lines, the cascade of a draft's delete).
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines", db_index=False)
    position = models.PositiveIntegerField()
    description = models.CharField(max_length=500)
    quantity = models.DecimalField(max_digits=12, decimal_places=3)
    # Up to 4 places in any currency: a per-unit price is often finer than the currency.
    unit_price = models.DecimalField(max_digits=PRICE_DIGITS, decimal_places=PRICE_PLACES)
    tax_rate = models.DecimalField(max_digits=5, decimal_places=2, default=ZERO)
    # In the invoice's currency, rounded half-up to its places.
    amount = money_field()
    tax_amount = money_field()

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
        indexes = [models.Index(fields=["organization", "invoice"], name="line_org_invoice")]

    def __str__(self) -> str:
        return self.description

    def compute_amounts(self, currency: str) -> None:
        """amount = quantity x unit_price, tax = amount x rate / 100, each rounded half-up to the
        places of `currency` (the invoice's), after checking the figures the line is made of."""
        self.check_fields()
        self.amount = money.quantize(self.quantity * self.unit_price, currency)
        self.tax_amount = money.quantize(self.amount * self.tax_rate / 100, currency)
        limit = money.max_amount(currency)
        if self.amount + self.tax_amount > limit:
            raise AmountTooLarge(
                f"A line amount would exceed {money.format_amount(limit, currency)} {currency}.",
                field="lines",
            )

    # (field, places, the smallest value, the largest value) of what a writer gives.
    _FIGURES = (
        ("quantity", 3, Decimal("0.001"), Decimal("999999999.999")),
        ("unit_price", PRICE_PLACES, ZERO, Decimal("999999999999.9999")),
        ("tax_rate", 2, ZERO, Decimal(100)),
    )

    def check_fields(self) -> None:
        """The figures as the columns hold them, whoever wrote them (a service, the admin, a shell),
        so that nothing is rounded away by the database: an error on `lines`."""
        for name, places, smallest, largest in self._FIGURES:
            value = getattr(self, name)
            if not isinstance(value, Decimal) or not value.is_finite():
                raise BusinessRuleViolation(f"A line's {name} must be a decimal number.", field="lines")
            if not smallest <= value <= largest or value != value.quantize(Decimal(1).scaleb(-places)):
                raise BusinessRuleViolation(
                    f"A line's {name} is between {smallest} and {largest}, with at most {places} decimal places.",
                    field="lines",
                )


class InvoiceSequence(models.Model):
    """The per-organization counter behind issued invoice numbers; locked for the moment of a send."""

    organization = models.OneToOneField(
        "users.Organization", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    next_value = models.PositiveBigIntegerField(default=1)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(next_value__gte=1), name="sequence_next_value_positive")
        ]

    def __str__(self) -> str:
        return f"next invoice number {self.next_value} of organization {self.organization_id}"


class InvoiceTotals(models.Model):
    """How many invoices one organization has in one currency and status, and their total and amount paid.

    The database keeps it: triggers on the invoice table (migration 0002_invoice_totals) add every
    insert, update and delete of an invoice to its row, in the same statement, so it is exact
    whatever wrote the invoice (a service, `mark_overdue`'s bulk UPDATE, the admin, a COPY).
    Nothing in Python writes it. The unfiltered summary and the unfiltered list's count read it
    instead of aggregating the organization's invoices, so they cost the same at 100 invoices and
    at a million.

    Money is in each currency's minor units (ISO 4217, as recorded in `billing.currencies`: yen for
    JPY, cents for USD, fils for KWD): integer sums are exact on every database, where SQLite would
    add decimals in floating point. The triggers know the places of each currency as recorded when
    they were written (invoices migration 0003); `billing.E020` names a currency whose ISO places
    have changed since.

    Each (organization, currency, status) is split over SHARDS rows by invoice id, so that writers of one
    organization (two payments of different invoices, say) seldom wait on the same row: a row a write
    changes stays locked until its transaction commits. Readers add the shards up.
    """

    SHARDS = 16  # the triggers' `id % 16` (migration 0002_invoice_totals)

    # The key is the primary key. No foreign key to the organization: Django's collector must not
    # delete these rows with one (the triggers take its invoices out as they are deleted).
    pk = models.CompositePrimaryKey("organization_id", "currency", "status", "shard")
    organization_id = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Invoice.Status.choices)
    shard = models.SmallIntegerField()
    count = models.BigIntegerField()
    # numeric, not bigint: a sum of amounts that each fit their column cannot overflow it (38 digits
    # hold 2^63 invoices of the largest total), where bigint minor units overflowed after ~92,000
    # invoices of the largest total in one row, making every later write of that row fail.
    total_minor = models.DecimalField(max_digits=38, decimal_places=0)
    paid_minor = models.DecimalField(max_digits=38, decimal_places=0)

    def __str__(self) -> str:
        return (
            f"organization {self.organization_id} {self.currency} {self.status} #{self.shard}: {self.count}"
        )
