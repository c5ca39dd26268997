from rest_framework import mixins, pagination, viewsets

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

    def paginate_queryset(self, queryset, request, view=None):
        refuse_repeated(request.query_params, (self.cursor_query_param, self.page_size_query_param))
        return super().paginate_queryset(queryset, request, view)


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
