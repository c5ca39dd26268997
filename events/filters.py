import django_filters

from billing.filters import RepeatableChoiceFilter
from events.models import EVENT_TYPES, PING, Event


class EventFilterSet(django_filters.FilterSet):
    type = RepeatableChoiceFilter(choices=[(t, t) for t in [*EVENT_TYPES, PING]])
    object_id = django_filters.NumberFilter(
        min_value=1,
        max_value=2**63 - 1,
        help_text="The id of the object the event is about (`data.object.id`).",
    )
    created = django_filters.IsoDateTimeFromToRangeFilter(
        field_name="created_at",
        help_text="`created_after`, `created_before`: ISO 8601 date-times, inclusive.",
    )

    class Meta:
        model = Event
        fields = []
