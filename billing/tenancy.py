"""Tenancy: every owned row has an `owner`, and everything a request touches is scoped to it.

- `OwnedModel` gives a table its `owner`, `created_at` and `updated_at`.
- `OwnerScopedViewSetMixin` filters a view's queryset by `request.user`, so another user's object
  is a 404 without any view having to remember it.
- `owned_by_caller` does the same for django-filter's model filters.
- `OwnedPrimaryKeyRelatedField` limits a serializer's reference to the caller's objects, so a
  body naming another user's object is a 400 on that field.
"""

from django.conf import settings
from django.db import models
from rest_framework import serializers

from billing.serializers import json_integer


class OwnedModel(models.Model):
    # No index of its own: every table's indexes lead with owner_id (Meta.indexes), which serve
    # the lookups by owner, and a redundant index would only slow every write.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class OwnerScopedViewSetMixin:
    """Scope `queryset` to the authenticated caller; subclasses call `super().get_queryset()`."""

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
