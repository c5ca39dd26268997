"""The webhook endpoints and deliveries as the API takes and shows them (API.md: Events and webhooks).
Shape and field values only: the rules live in `events.webhooks`."""

from urllib.parse import urlsplit

from django.core.validators import URLValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.serializers import CachedFieldsMixin, StrictBooleanField, StrictCharField, StrictStringMixin
from events.models import EVENT_TYPES, DeliveryStatus, WebhookDelivery, WebhookEndpoint

# What a client sees: a delivery being sent is still pending, as far as it can tell.
SHOWN_STATUSES = [DeliveryStatus.PENDING, DeliveryStatus.DELIVERED, DeliveryStatus.FAILED]

ALL_EVENTS = "*"
URL_MAX_LENGTH = 2000


class WebhookUrlField(StrictStringMixin, serializers.URLField):
    """An absolute http or https URL, without a user name or password in it (a credential in the URL
    would be shown to everyone who reads the endpoint; the signature is what authenticates us)."""

    default_error_messages = {
        "invalid": "Enter a valid http or https URL.",
        "credentials": "A webhook URL carries no user name or password; the signature authenticates the sender.",
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", URL_MAX_LENGTH)
        super().__init__(**kwargs)
        # DRF's URLField allows ftp too: replace its validator with one of http and https only.
        self.validators = [v for v in self.validators if not isinstance(v, URLValidator)]
        self.validators.append(
            URLValidator(schemes=["http", "https"], message=self.error_messages["invalid"])
        )

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        parts = urlsplit(value)
        if parts.username is not None or parts.password is not None:
            self.fail("credentials")
        return value


class EventTypesField(serializers.ListField):
    """Event types to subscribe to (each once), or `["*"]` for all of them, present and future."""

    child = serializers.ChoiceField(choices=[*EVENT_TYPES, ALL_EVENTS])
    default_error_messages = {
        "all_alone": '"*" subscribes to every event type; it stands alone.',
        "repeated": "Each event type is listed once.",
    }

    def __init__(self, **kwargs):
        super().__init__(min_length=1, max_length=len(EVENT_TYPES), **kwargs)

    def to_internal_value(self, data):
        events = super().to_internal_value(data)
        if ALL_EVENTS in events and len(events) > 1:
            self.fail("all_alone")
        if len(set(events)) != len(events):
            self.fail("repeated")
        return events


class WebhookEndpointSerializer(CachedFieldsMixin, serializers.ModelSerializer):
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=[*EVENT_TYPES, ALL_EVENTS]),
        read_only=True,
        help_text='The event types delivered to it, or `["*"]`: all of them.',
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "events", "enabled", "description", "created_at"]
        read_only_fields = fields


class WebhookEndpointWithSecretSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text=(
            "The signing secret (`whsec_` + base64 of 32 bytes), shown only in this response: keep it. "
            "Verify each delivery's `webhook-signature` with it (Standard Webhooks)."
        ),
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


class WebhookEndpointInputSerializer(serializers.Serializer):
    url = WebhookUrlField(help_text="Where deliveries are POSTed: http or https.")
    events = EventTypesField(help_text='Event types (each once), or `["*"]` for all of them.')
    description = StrictCharField(max_length=500, required=False, allow_blank=True)
    enabled = StrictBooleanField(
        required=False, help_text="Default true; a disabled endpoint is sent nothing."
    )


class WebhookEndpointUpdateSerializer(WebhookEndpointInputSerializer):
    url = WebhookUrlField(required=False, help_text="Where deliveries are POSTed: http or https.")
    events = EventTypesField(required=False, help_text='Event types (each once), or `["*"]` for all of them.')


class WebhookDeliverySerializer(CachedFieldsMixin, serializers.ModelSerializer):
    event = serializers.CharField(
        source="event_id", read_only=True, help_text="The event's id (`webhook-id`)."
    )
    status = serializers.SerializerMethodField()
    next_attempt_at = serializers.SerializerMethodField()

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event",
            "status",
            "attempts",
            "next_attempt_at",
            "last_status_code",
            "last_error",
            "delivered_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=SHOWN_STATUSES))
    def get_status(self, delivery) -> str:
        return delivery.Status.PENDING if delivery.status == delivery.Status.SENDING else delivery.status

    @extend_schema_field(
        serializers.DateTimeField(
            allow_null=True, help_text="When the next attempt is due (null once delivered or failed)."
        )
    )
    def get_next_attempt_at(self, delivery):
        if delivery.status not in (delivery.Status.PENDING, delivery.Status.SENDING):
            return None
        return serializers.DateTimeField().to_representation(delivery.next_attempt_at)
