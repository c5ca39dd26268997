from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.serializers import CachedFieldsMixin
from events.models import EVENT_TYPES, PING, Event


@extend_schema_field(
    {
        "type": "object",
        "properties": {
            "type": {"type": "string", "enum": ["user", "api_key", "system"]},
            "id": {"type": "integer", "nullable": True},
            "name": {"type": "string"},
        },
        "required": ["type", "id", "name"],
    }
)
class _ActorField(serializers.JSONField):
    pass


@extend_schema_field(
    {
        "type": "object",
        "properties": {
            "object": {
                "type": "object",
                "additionalProperties": True,
                "description": "The customer, invoice or payment as its detail endpoint returned it right after the change.",
            }
        },
        "required": ["object"],
    }
)
class _DataField(serializers.JSONField):
    pass


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": True,
        "nullable": True,
        "description": "The changed attributes' values before the change (null for a creation or a deletion).",
    }
)
class _PreviousField(serializers.JSONField):
    pass


class EventSerializer(CachedFieldsMixin, serializers.ModelSerializer):
    type = serializers.ChoiceField(choices=[*EVENT_TYPES, PING], read_only=True)
    data = _DataField(read_only=True)
    previous_attributes = _PreviousField(read_only=True)
    actor = _ActorField(read_only=True)

    class Meta:
        model = Event
        fields = ["id", "type", "created_at", "data", "previous_attributes", "actor", "request_id"]
        read_only_fields = fields


def event_json(event: Event) -> dict:
    """An event as the API and its webhook deliveries show it."""
    return EventSerializer(event).data
