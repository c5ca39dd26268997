from decimal import Decimal

from rest_framework import serializers

from billing.money import MONEY_DIGITS, MONEY_PLACES
from billing.serializers import (
    CurrencyField,
    MoneyField,
    PlainRepresentationMixin,
    StrictCharField,
    StrictDateField,
    StrictDecimalField,
    StrictIntegerField,
)
from invoices.models import InvoiceStatus
from invoices.serializers import CreatedByField
from payments.models import Payment


class PaymentInputSerializer(serializers.Serializer):
    invoice = StrictIntegerField(min_value=1, max_value=2**63 - 1, help_text="One of your invoices.")
    amount = StrictDecimalField(
        max_digits=MONEY_DIGITS,
        decimal_places=MONEY_PLACES,
        min_value=Decimal("0.001"),
        help_text=(
            'In the invoice\'s currency, with at most its ISO 4217 minor units as written (JPY "1250", '
            'USD "12.50", KWD "1.250"); at most the invoice\'s balance due.'
        ),
    )
    method = serializers.ChoiceField(choices=Payment.Method.choices)
    reference = StrictCharField(max_length=200, required=False, allow_blank=True, default="")
    paid_at = StrictDateField(
        required=False,
        help_text=(
            "The day the money was received, not after today in the organization's time zone; "
            "defaults to that today."
        ),
    )


class PaymentSerializer(PlainRepresentationMixin, serializers.ModelSerializer):
    amount = MoneyField(currency="invoice.currency")
    currency = CurrencyField(source="invoice.currency", read_only=True, help_text="The invoice's currency.")
    created_by = CreatedByField()

    class Meta:
        model = Payment
        fields = [
            "id",
            "invoice",
            "amount",
            "currency",
            "method",
            "reference",
            "paid_at",
            "created_by",
            "created_at",
        ]
        read_only_fields = fields


class PaymentResultSerializer(PaymentSerializer):
    """A payment with the state of its invoice after it."""

    invoice_status = serializers.ChoiceField(
        source="invoice.status", choices=InvoiceStatus.choices, read_only=True
    )  # the invoice's own `status` enum in the schema
    invoice_balance_due = MoneyField(source="invoice.balance_due", currency="invoice.currency")

    class Meta(PaymentSerializer.Meta):
        fields = [*PaymentSerializer.Meta.fields, "invoice_status", "invoice_balance_due"]
        read_only_fields = fields
