"""Tenancy, API side: everything a request touches is scoped to its owner.

- `billing.models.OwnedModel` gives a table its `owner` (model side, no DRF).
- `OwnerScopedViewSetMixin` filters a view's queryset by `request.user`, so another user's object
  is a 404 without any view having to remember it.
- `owned_by_caller` does the same for django-filter's model filters.
- `OwnedPrimaryKeyRelatedField` limits a serializer's reference to the caller's objects, so a
  body naming another user's object is a 400 on that field.
"""

from rest_framework import serializers
from rest_framework.exceptions import NotFound

from billing.serializers import MAX_ID, json_integer


class OwnerScopedViewSetMixin:
    """Scope `queryset` to the authenticated caller; subclasses call `super().get_queryset()`.

    A write passes `object_id()` to its service, whose locked, owner-scoped read is the only read
    that decides (another owner's or a vanished row is `DoesNotExist`, answered with 404 by the
    exception handler).
    """

    def object_id(self) -> int:
        """The id in the URL; one that cannot be an id (not an integer, beyond bigint) is 404."""
        raw = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        if not (raw.isascii() and raw.isdigit()) or int(raw) > MAX_ID:
            raise NotFound()
        return int(raw)

    def get_queryset(self):
        queryset = super().get_queryset()
        user = self.request.user
        if getattr(self, "swagger_fake_view", False) or not user.is_authenticated:
            return queryset.none()
        return queryset.filter(owner=user)


def owned_by_caller(model):
    """A queryset callable for django-filter: the caller's own rows of `model`, so a filter naming
    another user's object is a 400 ("Select a valid choice")."""

    def queryset(request):
        if request is None or not request.user.is_authenticated:
            return model.objects.none()
        return model.objects.filter(owner=request.user)

    return queryset


class OwnedPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """A primary key that must name one of the caller's own objects."""

    default_error_messages = {
        "does_not_exist": 'Invalid pk "{pk_value}" - object does not exist.',
    }

    def get_queryset(self):
        queryset = super().get_queryset()
        request = self.context.get("request")
        if request is None or not request.user.is_authenticated:
            return queryset.none()
        return queryset.filter(owner=request.user)

    def to_internal_value(self, data):
        # A JSON integer, as the schema says (1 or 1.0): not "1", not 1.5 (which would become 1),
        # and not `true` (bool is an int subclass: it must not become the object with pk 1).
        pk = json_integer(data)
        if pk is None:
            self.fail("incorrect_type", data_type=type(data).__name__)
        return super().to_internal_value(pk)
