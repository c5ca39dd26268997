from rest_framework import mixins, pagination, viewsets
from rest_framework.exceptions import ValidationError

from billing.filters import refuse_repeated
from billing.tenancy import OrganizationScopedViewSetMixin
from events.filters import EventFilterSet
from events.models import Event
from events.serializers import EventSerializer


class EventCursorPagination(pagination.CursorPagination):
    """Newest first, by id (time-ordered and unique, so a page never skips or repeats an event that
    was written while a client paged): `?cursor=` from `next`/`previous`, `?page_size=` (20, at most
    100)."""

    ordering = "-id"
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    max_digits = 9

    def paginate_queryset(self, queryset, request, view=None):
        refuse_repeated(request.query_params, (self.cursor_query_param, self.page_size_query_param))
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None and not (
            raw.isascii() and raw.isdigit() and len(raw) <= self.max_digits and int(raw) > 0
        ):
            raise ValidationError({self.page_size_query_param: ["A positive integer is required."]})
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=10**self.max_digits - 1)
                parameter["description"] = (
                    f"Results per page (default {self.page_size}; a larger value than "
                    f"{self.max_page_size} is capped at {self.max_page_size})."
                )
        return parameters


class EventViewSet(
    OrganizationScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """The organization's events, newest first (API.md: Events and webhooks). Kept at least
    EVENT_RETENTION_DAYS days. Read-only: every role may read them."""

    queryset = Event.objects.all()
    serializer_class = EventSerializer
    filterset_class = EventFilterSet
    pagination_class = EventCursorPagination

    def object_id(self) -> str:
        # An event's id is a string (`evt_…`): any other string is simply no event (404).
        return self.kwargs[self.lookup_url_kwarg or self.lookup_field]
