import datetime

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django_filters import fields
from drf_spectacular.utils import extend_schema_field

from billing.filters import RepeatableChoiceFilter
from events.models import EVENT_TYPES, PING, Event

MAX_ID = 2**63 - 1


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_ID})
class ObjectIdFilter(django_filters.Filter):
    """The id of the object an event is about (`data.object.id`, of any type)."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        super().__init__(*args, min_value=1, max_value=MAX_ID, **kwargs)


class _UtcDateTimeField(fields.IsoDateTimeField):
    """An ISO 8601 date-time, taken in UTC (PostgreSQL refuses offsets beyond ±15:59 that Python
    accepts, and a date-time moved out of the years 1 to 9999 by its offset is no date-time)."""

    default_error_messages = {"out_of_range": "This date-time is out of range."}

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(datetime.UTC)
        except OverflowError:
            raise ValidationError(self.error_messages["out_of_range"], code="out_of_range") from None


class _UtcDateTimeRangeField(fields.RangeField):
    widget = fields.DateRangeWidget  # `_after`, `_before`

    def __init__(self, *args, **kwargs):
        super().__init__((_UtcDateTimeField(), _UtcDateTimeField()), *args, **kwargs)


class UtcDateTimeRangeFilter(django_filters.IsoDateTimeFromToRangeFilter):
    """`<name>_after` and `<name>_before`: ISO 8601 date-times, inclusive."""

    field_class = _UtcDateTimeRangeField


class EventFilterSet(django_filters.FilterSet):
    type = RepeatableChoiceFilter(choices=[(t, t) for t in [*EVENT_TYPES, PING]])
    object_id = ObjectIdFilter(help_text="The id of the object the event is about (`data.object.id`).")
    created = UtcDateTimeRangeFilter(
        field_name="created_at",
        help_text="`created_after`, `created_before`: ISO 8601 date-times, inclusive.",
    )

    class Meta:
        model = Event
        fields = []
