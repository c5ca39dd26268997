from rest_framework import serializers

from billing.serializers import PlainRepresentationMixin, StrictBooleanField, StrictEmailField
from delivery.models import OutboundEmail

MAX_RECIPIENTS = 20


class SendInputSerializer(serializers.Serializer):
    """`POST /api/invoices/{id}/send/`'s optional body."""

    email = StrictBooleanField(
        required=False,
        help_text="Email the invoice (default: when the customer has an address, or `to` is given); false only issues it.",
    )
    to = serializers.ListField(
        child=StrictEmailField(max_length=254),
        required=False,
        min_length=1,
        max_length=MAX_RECIPIENTS,
        help_text="Send to these addresses instead of the customer's.",
    )

    def to_internal_value(self, data):
        if not isinstance(data, dict):  # a JSON body that is not an object
            raise serializers.ValidationError({"non_field_errors": ["Expected an object."]})
        return super().to_internal_value(data)


class RemindInputSerializer(serializers.Serializer):
    to = serializers.ListField(
        child=StrictEmailField(max_length=254),
        required=False,
        min_length=1,
        max_length=MAX_RECIPIENTS,
        help_text="Send to these addresses instead of the customer's.",
    )


class EmailSerializer(PlainRepresentationMixin, serializers.ModelSerializer):
    to = serializers.ListField(child=serializers.EmailField(), read_only=True)

    class Meta:
        model = OutboundEmail
        fields = ["id", "kind", "to", "subject", "status", "attempts", "sent_at", "last_error", "created_at"]
        read_only_fields = fields
