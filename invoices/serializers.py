from decimal import Decimal

from django.conf import settings
from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.currencies import is_currency
from billing.money import PRICE_DIGITS, PRICE_PLACES
from billing.serializers import (
    CurrencyField,
    MoneyField,
    PlainRepresentationMixin,
    ReferenceField,
    StrictCharField,
    StrictDateField,
    StrictDecimalField,
)
from invoices.models import MAX_LINES, NUMBER_VALIDATOR, Invoice, Line
from users.models import Actor, ApiKey

NEW_INVOICE_STATUS = (
    'A new invoice is a "draft": a status changes only through actions (send, void, payments).'
)


class LineInputSerializer(serializers.Serializer):
    description = StrictCharField(max_length=500)
    quantity = StrictDecimalField(max_digits=12, decimal_places=3, min_value=Decimal("0.001"))
    unit_price = StrictDecimalField(
        max_digits=PRICE_DIGITS,
        decimal_places=PRICE_PLACES,
        min_value=Decimal("0"),
        help_text="Up to 4 decimal places in any currency.",
    )
    tax_rate = StrictDecimalField(
        max_digits=5, decimal_places=2, min_value=Decimal("0"), max_value=Decimal("100"), default=Decimal("0")
    )

    def validate(self, attrs):
        # Lines are replaced whole, so each is complete even in a PATCH (where DRF would otherwise
        # treat every nested field as optional and apply no defaults).
        missing = [name for name in ("description", "quantity", "unit_price") if name not in attrs]
        if missing:
            raise serializers.ValidationError({name: ["This field is required."] for name in missing})
        return {"tax_rate": Decimal("0"), **attrs}


class InvoiceInputSerializer(serializers.Serializer):
    """The fields a client writes. Shape and values only; the lifecycle rules are the model's."""

    number = StrictCharField(
        max_length=32,
        required=False,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=False,
        validators=[NUMBER_VALIDATOR],
        help_text=(
            "Kept as given: printable characters, spaces only between them. Null or empty leaves a "
            "draft unnumbered (it is numbered when sent)."
        ),
    )
    customer = ReferenceField(help_text="One of your customers.")
    currency = CurrencyField(
        required=False,
        help_text="An active ISO 4217 code, e.g. USD, EUR, JPY. Defaults to the organization's default currency.",
        min_length=3,
        max_length=3,
    )
    issue_date = StrictDateField(
        required=False, help_text="Defaults to today in the organization's time zone."
    )
    due_date = StrictDateField(
        required=False,
        help_text="On or after the issue date. Defaults to the issue date plus the organization's payment terms.",
    )
    notes = StrictCharField(required=False, allow_blank=True, max_length=5000)
    lines = LineInputSerializer(many=True, required=False, max_length=MAX_LINES)

    def validate_number(self, value):
        return value or None  # "" clears a draft's number, as null does

    def validate_currency(self, value):
        if not is_currency(value):
            raise serializers.ValidationError(f'"{value}" is not an active ISO 4217 currency code.')
        return value

    def validate(self, attrs):
        # Read-only: on an existing invoice the service compares it with the current status (a PUT
        # of the invoice as read is no change); a new invoice is a draft.
        if "status" in self.initial_data:
            status = self.initial_data["status"]
            if not self.for_update:
                if status != Invoice.Status.DRAFT:
                    raise serializers.ValidationError({"status": [NEW_INVOICE_STATUS]})
            else:
                attrs["status"] = status
        return attrs

    @property
    def for_update(self) -> bool:
        return self.context.get("for_update", False)


CREATED_BY_TYPES = [("user", "user"), ("api_key", "api_key")]


class CreatedBySerializer(serializers.Serializer):
    """Who made an invoice or a payment: a member (`user`, named by their username) or an API key
    (`api_key`, named by the key's name). Null when the system made it."""

    type = serializers.ChoiceField(choices=CREATED_BY_TYPES)
    id = serializers.IntegerField()
    name = serializers.CharField()


@extend_schema_field(CreatedBySerializer)
class CreatedByField(serializers.Field):
    """`created_by` as the API shows it (the schema's `CreatedBy`), read from the model's
    `created_by` (the user or the API key, whichever made the row). A plain field, not a nested
    serializer, so that both render paths (DRF's and `PlainRepresentationMixin`'s) format it with
    this one `to_representation`; the rows are read with the creator joined, so it costs no query."""

    def __init__(self, **kwargs):
        super().__init__(read_only=True, allow_null=True, **kwargs)

    def to_representation(self, actor: Actor) -> dict:
        if isinstance(actor, ApiKey):
            return {"type": "api_key", "id": actor.pk, "name": actor.name}
        return {"type": "user", "id": actor.pk, "name": actor.username}


class LineSerializer(PlainRepresentationMixin, serializers.ModelSerializer):
    # In the invoice's currency (a line is read with its invoice: its prefetch sets it).
    unit_price = MoneyField(currency="invoice.currency", price=True)
    amount = MoneyField(currency="invoice.currency")
    tax_amount = MoneyField(currency="invoice.currency")

    class Meta:
        model = Line
        fields = ["id", "description", "quantity", "unit_price", "tax_rate", "amount", "tax_amount"]
        read_only_fields = fields


class InvoiceSerializer(PlainRepresentationMixin, serializers.ModelSerializer):
    """An invoice as the list shows it: everything but its lines and payments."""

    customer_name = serializers.CharField(source="customer.name", read_only=True)
    currency = CurrencyField(read_only=True)  # the input's enum in the schema
    subtotal = MoneyField()
    tax_total = MoneyField()
    total = MoneyField()
    amount_paid = MoneyField()
    balance_due = MoneyField()
    available_actions = serializers.SerializerMethodField()
    hosted_url = serializers.SerializerMethodField(
        help_text="The hosted invoice page your customer opens (no login); null for a draft."
    )
    pdf_url = serializers.SerializerMethodField(help_text="The invoice as a PDF (a draft's is marked DRAFT).")
    created_by = CreatedByField()

    class Meta:
        model = Invoice
        fields = [
            "id",
            "number",
            "customer",
            "customer_name",
            "status",
            "currency",
            "issue_date",
            "due_date",
            "notes",
            "subtotal",
            "tax_total",
            "total",
            "amount_paid",
            "balance_due",
            "available_actions",
            "hosted_url",
            "pdf_url",
            "created_by",
            "sent_at",
            "paid_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.ChoiceField(choices=list(Invoice.ACTIONS))))
    def get_available_actions(self, invoice: Invoice) -> list[str]:
        return invoice.available_actions

    @extend_schema_field({"type": "string", "format": "uri", "nullable": True, "readOnly": True})
    def get_hosted_url(self, invoice: Invoice) -> str | None:
        if invoice.public_token is None:
            return None
        return self._absolute(_url_of("hosted-invoice", invoice.public_token))

    @extend_schema_field({"type": "string", "format": "uri", "readOnly": True})
    def get_pdf_url(self, invoice: Invoice) -> str:
        return self._absolute(_url_of("invoice-pdf", invoice.pk))

    def _absolute(self, path: str) -> str:
        """On the scheme and host of the request being answered (API.md); outside a request, on
        the context's `base_url` (an event's: PUBLIC_URL), else a path."""
        request = self.context.get("request")
        if request is None:
            return self.context.get("base_url", "") + path
        # What `request.build_absolute_uri(path)` writes for a path of plain characters (an id, a
        # token), with the request's scheme and host found once per serializer, not per link.
        base = self.__dict__.get("_request_base")
        if base is None:
            base = self._request_base = request.build_absolute_uri("/")[:-1]
        return base + path


def event_context() -> dict:
    """The serializer context of a representation an event carries: links on PUBLIC_URL, the
    address the customer's links use, whichever request (or none) made the change."""
    return {"base_url": settings.PUBLIC_URL}


_URL_TEMPLATES: dict[str, str] = {}
_ARGUMENT = "0000000000000000"


def _url_of(name: str, argument) -> str:
    """The path of URL `name` with its one argument: reversed once, then filled in (a reverse per row
    of a 100-invoice page would cost a few milliseconds). The routes are the delivery app's
    (a name, not an import: this app sits below it)."""
    template = _URL_TEMPLATES.get(name)
    if template is None:
        template = _URL_TEMPLATES[name] = reverse(name, args=[_ARGUMENT])
    return template.replace(_ARGUMENT, str(argument), 1)


@extend_schema_field({"$ref": "#/components/schemas/MethodEnum"})
class _PaymentMethodField(serializers.CharField):
    """The payment's method, documented as the payments' own enum (this app does not import it)."""


class InvoicePaymentSerializer(PlainRepresentationMixin, serializers.Serializer):
    """A payment as listed inside its invoice (the payments app's rows, read through the relation)."""

    id = serializers.IntegerField(read_only=True)
    amount = MoneyField(currency="invoice.currency")
    method = _PaymentMethodField(read_only=True)
    reference = serializers.CharField(read_only=True)
    paid_at = serializers.DateField(read_only=True)
    created_by = CreatedByField()
    created_at = serializers.DateTimeField(read_only=True)


class InvoiceDetailSerializer(InvoiceSerializer):
    """An invoice with its lines and payments."""

    lines = LineSerializer(many=True, read_only=True)
    payments = InvoicePaymentSerializer(many=True, read_only=True)

    class Meta(InvoiceSerializer.Meta):
        fields = [*InvoiceSerializer.Meta.fields, "lines", "payments"]
        read_only_fields = fields


def _money(**kwargs) -> MoneyField:
    # A sum over any number of invoices: wider than one amount (the kept totals are numeric(38)).
    return MoneyField(whole_digits=35, **kwargs)


class CurrencyTotalsSerializer(PlainRepresentationMixin, serializers.Serializer):
    currency = CurrencyField()
    invoiced = _money(help_text="Σ total of sent, overdue and paid invoices.")
    collected = _money(help_text="Σ amount paid.")
    outstanding = _money(help_text="Σ balance due of sent and overdue invoices.")
    overdue = _money(help_text="Σ balance due of overdue invoices.")


class StatusCountsSerializer(PlainRepresentationMixin, serializers.Serializer):
    draft = serializers.IntegerField()
    sent = serializers.IntegerField()
    overdue = serializers.IntegerField()
    paid = serializers.IntegerField()
    void = serializers.IntegerField()


class InvoiceSummarySerializer(PlainRepresentationMixin, serializers.Serializer):
    count = serializers.IntegerField()
    by_status = StatusCountsSerializer()
    totals = CurrencyTotalsSerializer(many=True, help_text="One row per currency, sorted by code.")
