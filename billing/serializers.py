"""Strict serializer fields: a value has the JSON type and form the OpenAPI schema gives it, or 400.

DRF is lenient on input: a CharField takes the number 12 and stores "12", an IntegerField takes
"12" and 12.0, a DecimalField takes the JSON number 12.5 (a float), " 12.5 " and "1e2", a
DateField takes "20261123". The schema (see `billing.schema`) promises strings, integers,
decimal strings such as "12.50" and ISO dates; these fields hold the API to exactly that, so a
client generated from the schema and the server agree on what is valid (and floats stay away
from money).
"""

import copy
import datetime
import re
from decimal import Decimal

from django.conf import settings
from django.core.signals import setting_changed
from django.db import models
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import ISO_8601, serializers
from rest_framework.fields import get_attribute
from rest_framework.settings import api_settings

from billing.currencies import CURRENCY_CODES
from billing.money import MONEY_DIGITS, MONEY_PLACES, PRICE_DIGITS, PRICE_PLACES, format_amount, format_price

DECIMAL_RE = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class StrictStringMixin:
    """Only a JSON string is a string; its length is counted as sent, before whitespace is trimmed."""

    def run_validation(self, data=serializers.empty):
        if data is not serializers.empty and data is not None and not isinstance(data, str):
            self.fail("invalid")
        if isinstance(data, str) and self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().run_validation(data)


class StrictCharField(StrictStringMixin, serializers.CharField):
    pass


class StrictEmailField(StrictStringMixin, serializers.EmailField):
    """An e-mail address as sent: " a@b.example" is refused rather than trimmed (and " " is no blank)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)


def json_integer(data) -> int | None:
    """The integer a JSON value is, as JSON Schema counts them (12 and 12.0), else None.

    Not "12" (a string), not 12.5 (which DRF would truncate to 12), not true (bool is an int).
    """
    if isinstance(data, bool):
        return None
    if isinstance(data, int):
        return data
    if isinstance(data, float) and data.is_integer():
        return int(data)
    return None


class StrictBooleanField(serializers.BooleanField):
    """A JSON `true` or `false` only: DRF's BooleanField also takes "yes", "on", 1 and "0", which
    the schema (`type: boolean`) does not allow, and which a client sending them got wrong."""

    def to_internal_value(self, data):
        if isinstance(data, bool):
            return data
        self.fail("invalid", input=data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: not "12", not 12.5, not true."""

    def to_internal_value(self, data):
        value = json_integer(data)
        if value is None:
            self.fail("invalid")
        return super().to_internal_value(value)


MAX_ID = 2**63 - 1  # bigint


@extend_schema_field({"type": "string", "enum": sorted(CURRENCY_CODES)})
class CurrencyField(StrictCharField):
    """An active ISO 4217 code; the schema lists them, so a client knows the valid values."""


class ReferenceField(serializers.IntegerField):
    """The id of another object, as a JSON integer: the shape only. Whether it names one of the
    caller's objects is the service's check (another organization's reads as one that does not exist)."""

    default_error_messages = {
        "incorrect_type": "Incorrect type. Expected pk value, received {data_type}.",
        "does_not_exist": 'Invalid pk "{pk_value}" - object does not exist.',
    }

    def __init__(self, **kwargs):
        super().__init__(min_value=1, max_value=MAX_ID, **kwargs)

    def to_internal_value(self, data):
        value = json_integer(data)
        if value is None:
            self.fail("incorrect_type", data_type=type(data).__name__)
        if not 1 <= value <= MAX_ID:
            self.fail("does_not_exist", pk_value=value)
        return value


class StrictDecimalField(serializers.DecimalField):
    """A decimal string of digits with an optional point, such as "12.50" — never a JSON number.

    DRF's own checks come first (so "abc" is "A valid number is required." and "1e400" is "no more
    than 14 digits"); then a number it would take in another notation ("1e2", " 5", "+5", ".5") is
    refused too. A minimum of zero or above also refuses "-0".
    """

    default_error_messages = {
        "not_a_string": 'A decimal number is sent as a string, such as "12.50".',
        "notation": 'Write the number as digits with an optional decimal point, such as "12.50".',
    }

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        value = super().to_internal_value(data)
        if not DECIMAL_RE.fullmatch(data):
            self.fail("notation")
        if self.min_value is not None and self.min_value >= 0 and Decimal(data).is_signed():
            self.fail("min_value", min_value=self.min_value)
        # As written, not quantized to the field's places as DRF's is: an amount's places are
        # judged against its currency's (JPY "1000.00" has two), which only the service knows.
        return Decimal(data) if value == Decimal(data) else value


class MoneyField(serializers.DecimalField):
    """A read-only amount, written with exactly its currency's places: "1250" JPY, "12.50" USD,
    "1.250" KWD (`billing.money.format_amount`; with `price=True`, a unit price: `format_price`).

    `currency` is where the object holds its currency (`"currency"` on an invoice or a summary row,
    `"invoice.currency"` on a line or a payment, whose invoice is loaded with it). The attribute is
    the pair (amount, currency), which both render paths (DRF's and `PlainRepresentationMixin`'s)
    read through `get_attribute` and write with this one `to_representation`.
    """

    def __init__(
        self, *, currency: str = "currency", price: bool = False, whole_digits: int | None = None, **kwargs
    ):
        digits, places = (PRICE_DIGITS, PRICE_PLACES) if price else (MONEY_DIGITS, MONEY_PLACES)
        if whole_digits is not None:  # a sum of amounts, wider than a column
            digits = whole_digits + places
        super().__init__(max_digits=digits, decimal_places=places, read_only=True, **kwargs)
        self.currency_attrs = currency.split(".")
        self.format = format_price if price else format_amount

    def get_attribute(self, instance):
        amount = super().get_attribute(instance)
        return None if amount is None else (amount, get_attribute(instance, self.currency_attrs))

    def to_representation(self, value):
        amount, currency = value
        return self.format(amount, currency)


class StrictDateField(serializers.DateField):
    """An ISO 8601 calendar date, YYYY-MM-DD (not "20261123", not "2026-W47-1")."""

    default_error_messages = {"invalid": "Date has wrong format. Use this format instead: YYYY-MM-DD."}

    def to_internal_value(self, value):
        if not isinstance(value, str) or not DATE_RE.fullmatch(value):
            self.fail("invalid", format="YYYY-MM-DD")
        return super().to_internal_value(value)


# A ModelSerializer whose fields built from the model are the strict ones. (A comment, not a
# docstring: the schema would show a docstring as the description of every subclass.)
class StrictModelSerializer(serializers.ModelSerializer):
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
        models.EmailField: StrictEmailField,
        models.IntegerField: StrictIntegerField,
        models.BigIntegerField: StrictIntegerField,
        models.PositiveIntegerField: StrictIntegerField,
        models.DecimalField: StrictDecimalField,
        models.DateField: StrictDateField,
    }


# Fields built once per class, copied for each serializer.
#
# A ModelSerializer builds its fields from the model for every instance (`get_fields`: the model's
# field info, a field class and its arguments for each one), which is most of a small request's
# serializer time. With this mixin first in its bases, a class builds them once, on its first
# instance, and each instance gets a deep copy of that prototype: fresh field objects, bound to it
# alone, as DRF's own copy of the declared fields is. What the class's own `get_fields` (or a
# subclass's) does on top of DRF's still runs for each instance. So it fits a serializer whose
# fields depend on its class alone (Meta and the declared fields), not on the instance, its
# context or settings read at that time; the prototypes are dropped when a setting changes (tests).
# The fields, and so the output and the schema, are the same.
#
# (A comment, not a docstring: the schema would show a docstring as the description of every
# serializer that has none of its own.)
class CachedFieldsMixin:
    _prototype_fields: dict = {}

    def get_fields(self):
        cls = type(self)
        prototype = self._prototype_fields.get(cls)
        if prototype is None:
            prototype = self._prototype_fields[cls] = super().get_fields()
        return copy.deepcopy(prototype)


def _drop_prototype_fields(**kwargs):
    CachedFieldsMixin._prototype_fields.clear()


setting_changed.connect(_drop_prototype_fields)


# --- a fast read path ------------------------------------------------------------------------------


# A read-only serializer's output, without DRF's per-instance machinery.
#
# DRF deep-copies every declared field for each serializer it builds and, for each object, walks
# every field through `get_attribute`, `SkipField` handling and the like: a fifth of a 20-invoice
# list request went there. This mixin reads the fields once per class into a plan and renders each
# object with a plain loop:
#
# - a model field or property read by its own name is a plain `getattr`; any other source (dotted
#   like `customer.name`, a method, a related manager) goes through the field's own
#   `get_attribute`, with DRF's handling of what it raises;
# - every value is formatted by the field's own `to_representation`, except an ISO 8601 date-time,
#   whose two steps (to the current time zone, "Z" for UTC) are done inline with the time zone
#   looked up once per object instead of once per field.
#
# So the output is DRF's, which `tests/test_representation.py` pins serializer by serializer, and
# the schema is unchanged, since it is built from the same declared fields. Hyperlinks, nested
# serializers that are not plain themselves and other relation fields are refused when the plan is
# built, so a new kind of field cannot render differently by accident. A nested plain serializer is
# rendered without a context, so its fields must not need one. A serializer without a model (of
# dicts, say) reads every field through `get_attribute`.
#
# (A comment, not a docstring: the schema would show a docstring as the description of every
# serializer that has none of its own.)
class PlainRepresentationMixin:
    _plain_plans: dict = {}

    @classmethod
    def _plain_plan(cls) -> list[tuple]:
        plan = cls._plain_plans.get(cls)
        if plan is None:
            plan = cls._plain_plans[cls] = _build_plan(cls())
        return plan

    def to_representation(self, instance):
        tz = timezone.get_current_timezone() if settings.USE_TZ else None
        ret = {}
        for name, attr, field, kind, represent in self._plain_plan():
            if kind is _METHOD:
                ret[name] = getattr(self, represent)(instance)
                continue
            if attr is not None:
                value = getattr(instance, attr)
            else:
                try:
                    value = field.get_attribute(instance)
                except serializers.SkipField:
                    continue
            if value is None:
                ret[name] = None
            elif kind is _DATETIME:
                ret[name] = represent(value, tz)
            else:
                ret[name] = represent(value)
        return ret


_METHOD, _DATETIME, _VALUE = "method", "datetime", "value"


def _build_plan(serializer) -> list[tuple]:
    """(name, attribute or None, field, kind, formatter or method name) for each readable field."""
    model = getattr(getattr(serializer, "Meta", None), "model", None)  # None: a plain Serializer
    plan = []
    for name, field in serializer.fields.items():
        where = f"{type(serializer).__name__}.{name}"
        if field.write_only:
            continue
        if isinstance(field, serializers.SerializerMethodField):
            plan.append((name, None, field, _METHOD, field.method_name))
        elif isinstance(field, MoneyField):
            plan.append((name, None, field, _VALUE, field.to_representation))
        elif isinstance(field, serializers.PrimaryKeyRelatedField) and len(field.source_attrs) == 1:
            if field.pk_field is not None:
                raise TypeError(f"{where}: pk_field is not supported")
            plan.append((name, model._meta.get_field(field.source).attname, field, _VALUE, int))
        elif isinstance(field, serializers.ListSerializer):
            if not isinstance(field.child, PlainRepresentationMixin):
                raise TypeError(f"{where}: nested serializers must be plain too")
            plan.append((name, None, field, _VALUE, _many(type(field.child))))
        elif isinstance(field, PlainRepresentationMixin):
            plan.append((name, None, field, _VALUE, type(field)().to_representation))
        elif isinstance(
            field, serializers.RelatedField | serializers.BaseSerializer | serializers.HiddenField
        ):
            raise TypeError(f"{where}: {type(field).__name__} is not supported")
        else:
            kind, represent = _VALUE, field.to_representation
            if _is_plain_datetime(field):
                kind, represent = _DATETIME, _datetime(field)
            plan.append((name, _plain_attribute(model, field), field, kind, represent))
    return plan


def _plain_attribute(model, field) -> str | None:
    """The attribute to read with a plain `getattr`: a source that is one concrete non-relation
    field or a property of `model`. None for anything else (and for every field of a serializer
    without a model, whose objects may be mappings), which DRF's `get_attribute` reads."""
    if model is None or len(field.source_attrs) != 1:
        return None
    name = field.source_attrs[0]
    concrete = {f.attname for f in model._meta.concrete_fields if not f.is_relation}
    return name if name in concrete or isinstance(getattr(model, name, None), property) else None


def _is_plain_datetime(field) -> bool:
    """A DateTimeField that formats as DRF's own does (no override of the formatting methods)."""
    base = serializers.DateTimeField
    return isinstance(field, base) and all(
        getattr(type(field), method) is getattr(base, method)
        for method in ("to_representation", "enforce_timezone")
    )


def _datetime(field):
    """DRF's steps for an aware date-time in ISO 8601: to the current time zone, then "Z" for UTC.
    Anything else (another format, a field time zone, no USE_TZ, a naive value, an overflow) is left
    to the field itself."""

    def represent(value, tz):
        if (
            tz is None
            or value.__class__ is not datetime.datetime
            or value.tzinfo is None
            or hasattr(field, "timezone")
            or getattr(field, "format", api_settings.DATETIME_FORMAT) != ISO_8601
        ):
            return field.to_representation(value)
        try:
            text = value.astimezone(tz).isoformat()
        except OverflowError:
            return field.to_representation(value)
        return text[:-6] + "Z" if text.endswith("+00:00") else text

    return represent


def _many(serializer_class):
    child = serializer_class()

    def represent(related):
        items = related.all() if isinstance(related, models.manager.BaseManager) else related
        return [child.to_representation(item) for item in items]

    return represent
