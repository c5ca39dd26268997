"""Tenancy: every owned row has an `owner`, and everything a request touches is scoped to it.

- `OwnedModel` gives a table its `owner`, `created_at` and `updated_at`, and a `save()` that never
  writes from a stale read (see its docstring).
- `OwnerScopedViewSetMixin` filters a view's queryset by `request.user`, so another user's object
  is a 404 without any view having to remember it.
- `owned_by_caller` does the same for django-filter's model filters.
- `OwnedPrimaryKeyRelatedField` limits a serializer's reference to the caller's objects, so a
  body naming another user's object is a 400 on that field.
"""

from django.conf import settings
from django.db import models
from rest_framework import serializers
from rest_framework.exceptions import NotFound

from billing.errors import NotEditable, StaleWrite
from billing.serializers import json_integer

MAX_ID = 2**63 - 1  # bigint


class OwnedModel(models.Model):
    """An owned row, written only from what was read.

    `save()` of a row already in the database writes only the columns that differ from what was
    read (`_loaded`, recorded by `from_db`), never falls back to an INSERT (a row deleted meanwhile
    is `DoesNotExist`, which the API answers with 404, instead of coming back to life), and never
    moves a row to another owner. A model with a `version` column is also compare-and-set: the
    UPDATE matches only the version that was read and bumps it, so a write based on a stale read
    (an admin form opened before a payment landed) is refused with `StaleWrite` instead of
    overwriting what happened since. The services read with `select_for_update()`, so under their
    lock the version cannot move and their writes always match.
    """

    # No index of its own: every table's indexes lead with owner_id (Meta.indexes), which serve
    # the lookups by owner, and a redundant index would only slow every write. PROTECT: an owner's
    # books are never deleted by deleting the user (the admin shows what stands in the way).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    def save(self, *args, **kwargs) -> None:
        if self._state.adding:
            # A new object is inserted, never matched against an existing row by its pk.
            kwargs.setdefault("force_insert", True)
            super().save(*args, **kwargs)
        else:
            self._save_existing(*args, **kwargs)
        self._loaded = {
            f.attname: self.__dict__[f.attname]
            for f in self._meta.concrete_fields
            if f.attname in self.__dict__
        }

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance._loaded = {
            name: value
            for name, value in zip(field_names, values, strict=True)
            if value is not models.DEFERRED
        }
        return instance

    def refresh_from_db(self, *args, **kwargs) -> None:
        super().refresh_from_db(*args, **kwargs)
        loaded = getattr(self, "_loaded", None) or {}
        fresh = kwargs.get("fields") or (args[1] if len(args) > 1 else None)
        names = {self._meta.get_field(n).attname for n in fresh} if fresh else None
        for field in self._meta.concrete_fields:
            if field.attname in self.__dict__ and (names is None or field.attname in names):
                loaded[field.attname] = self.__dict__[field.attname]
        self._loaded = loaded

    def changed_fields(self) -> set[str]:
        """The attnames whose value differs from what was read (nothing read: nothing known)."""
        loaded = getattr(self, "_loaded", None) or {}
        return {name for name, value in loaded.items() if getattr(self, name) != value}

    def _save_existing(self, *args, update_fields=None, **kwargs) -> None:
        changed = self.changed_fields()
        if "owner_id" in changed:
            raise NotEditable(f"A {self._meta.verbose_name} never moves to another owner.")
        fields = set(update_fields) if update_fields is not None else changed
        fields -= {"updated_at", "version", self._meta.pk.attname}
        if not fields:
            return  # nothing changed: nothing to write
        fields.add("updated_at")
        has_version = any(f.name == "version" for f in self._meta.concrete_fields)
        if has_version:
            self._expected_version = self._loaded["version"]
            self.version = self._expected_version + 1
            fields.add("version")
        try:
            super().save(*args, update_fields=sorted(fields), **kwargs)
        except BaseException:
            if has_version:
                self.version = self._expected_version
            raise
        finally:
            self._expected_version = None

    def _do_update(self, base_qs, using, pk_val, values, update_fields, forced_update):
        expected = getattr(self, "_expected_version", None)
        if expected is not None:
            base_qs = base_qs.filter(version=expected)
        if super()._do_update(base_qs, using, pk_val, values, update_fields, forced_update):
            return True
        name = self._meta.verbose_name
        if type(self)._base_manager.using(using).filter(pk=pk_val).exists():
            raise StaleWrite(f"This {name} was changed since it was read; read it again and retry.")
        raise self.DoesNotExist(f"This {name} no longer exists.")


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
