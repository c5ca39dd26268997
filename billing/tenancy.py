"""Tenancy, API side: everything a request touches is scoped to the organization its credential is
bound to.

- `billing.models.OwnedModel` gives a table its `organization` (model side, no DRF).
- A request's credential (`request.auth`: a member's token or an organization's API key, see
  `users.auth`) says for which organization it acts (`organization`, `organization_id`), with which
  role (`role`), and who it is (`actor`: the user or the key). `organization_of` and `actor_of` read
  them, so no view reaches into the credential itself.
- `OrganizationScopedViewSetMixin` filters a view's queryset by that organization, so another
  organization's object is a 404 without any view having to remember it.
- `OrganizationListMixin` lists all of an organization's objects, when a request names no filter,
  by the app's own count and page reads instead of the queryset's.
- `owned_by_caller` does the same for django-filter's model filters.
"""

from collections.abc import Callable
from functools import partial

from rest_framework.exceptions import NotFound

from billing.filters import filters_nothing
from billing.pagination import PagedRead
from billing.serializers import MAX_ID


def organization_of(request):
    """The organization the request acts for, or None (not authenticated)."""
    auth = getattr(request, "auth", None)
    return getattr(auth, "organization", None)


def organization_id_of(request) -> int | None:
    auth = getattr(request, "auth", None)
    return getattr(auth, "organization_id", None)


def actor_of(request):
    """Who makes the request's changes: the member's user, or the API key."""
    auth = getattr(request, "auth", None)
    return getattr(auth, "actor", None)


class OrganizationScopedViewSetMixin:
    """Scope `queryset` to the request's organization; subclasses call `super().get_queryset()`.

    A write passes `object_id()` to its service, whose locked, organization-scoped read is the only
    read that decides (another organization's or a vanished row is `DoesNotExist`, answered with 404
    by the exception handler).
    """

    def object_id(self) -> int:
        """The id in the URL; one that cannot be an id (not an integer, beyond bigint) is 404."""
        raw = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_ID:
            raise NotFound()
        return int(raw)

    @property
    def organization(self):
        return organization_of(self.request)

    @property
    def actor(self):
        return actor_of(self.request)

    def get_queryset(self):
        queryset = super().get_queryset()
        organization_id = organization_id_of(self.request)
        if getattr(self, "swagger_fake_view", False) or organization_id is None:
            return queryset.none()
        return queryset.filter(organization_id=organization_id)


class OrganizationListMixin:
    """A list that, when the request names no filter of `filterset_class`, is all of the caller's
    organization's objects: counted by `unfiltered_count(organization_id=)` and each page read by
    `unfiltered_page(organization_id=, offset=, limit=)` (compiled reads of the same rows, in the
    queryset's order). A request that names a filter lists the filtered queryset, counted by it."""

    unfiltered_count: Callable[..., int]
    unfiltered_page: Callable[..., list]

    def list(self, request):
        queryset = self.filter_queryset(self.get_queryset())
        count, rows = None, queryset
        organization_id = organization_id_of(request)
        if organization_id is not None and filters_nothing(request, self.filterset_class):
            count = self.unfiltered_count(organization_id=organization_id)
            rows = PagedRead(partial(self.unfiltered_page, organization_id=organization_id))
        page = self.paginator.paginate_queryset(rows, request, view=self, count=count)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


def owned_by_caller(model):
    """A queryset callable for django-filter: the request organization's rows of `model`, so a
    filter naming another organization's object is a 400 ("Select a valid choice")."""

    def queryset(request):
        organization_id = organization_id_of(request) if request is not None else None
        if organization_id is None:
            return model.objects.none()
        return model.objects.filter(organization_id=organization_id)

    return queryset
