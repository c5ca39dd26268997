"""Filter building blocks shared by every list: strict forms for dates, numbers and ids (a value
the schema does not allow is a 400, never silently ignored), owned choices, money bounds, an
ordering made stable by the id, one value per parameter unless it is repeatable, and a backend
that skips the filter form when no filter is named."""

import re
from collections.abc import Iterable
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django_filters import fields
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import ValidationError as DRFValidationError

from billing.money import MAX_AMOUNT, MONEY_PLACES
from billing.serializers import DATE_RE

INTEGER_RE = re.compile(r"-?[0-9]+")
# A finite number in the notation a query string may use: "300.01", "-5", "1e400" (no " 5", "1_000",
# NaN, nor an exponent of more than 9 digits, which Python's decimal module cannot represent).
NUMBER_PATTERN = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,9})?"
NUMBER_RE = re.compile(NUMBER_PATTERN)

# Query values have the exact form the schema gives them, as request bodies do (billing.serializers):
# a filter given "+5", " 5", "2026-1-5", "11/23/2026" or "1e3" is a 400, not read generously.


def _exact(pattern: re.Pattern, value, field: forms.Field, code: str) -> None:
    if value not in field.empty_values and not (isinstance(value, str) and pattern.fullmatch(value)):
        raise ValidationError(field.error_messages[code], code=code)


class _IdField(fields.ModelChoiceField):
    def to_python(self, value):
        _exact(INTEGER_RE, value, self, "invalid_choice")
        return super().to_python(value)


class _IsoDateField(forms.DateField):
    def to_python(self, value):
        _exact(DATE_RE, value, self, "invalid")
        return super().to_python(value)


class _NumberField(forms.DecimalField):
    def to_python(self, value):
        _exact(NUMBER_RE, value, self, "invalid")
        return super().to_python(value)


class _IsoDateRangeField(fields.DateRangeField):
    def __init__(self, *args, **kwargs):
        # RangeField's own constructor, with these fields (DateRangeField's would make plain ones).
        fields.RangeField.__init__(self, (_IsoDateField(), _IsoDateField()), *args, **kwargs)


class _NumberRangeField(fields.RangeField):
    def __init__(self, *args, **kwargs):
        super().__init__((_NumberField(), _NumberField()), *args, **kwargs)


class _RepeatableChoiceField(fields.MultipleChoiceField):
    def to_python(self, value):
        # An empty value is no filter, as for every other filter: `?status=` is all statuses, and
        # `?status=&status=sent` the sent ones (an empty repetition adds nothing).
        return [item for item in super().to_python(value) if item not in self.empty_values]


class RepeatableChoiceFilter(django_filters.MultipleChoiceFilter):
    """`?status=sent&status=overdue`: any of the choices given (an empty value is none given)."""

    field_class = _RepeatableChoiceField


class OwnedChoiceFilter(django_filters.ModelChoiceFilter):
    """One of the caller's objects, by id (another user's id is a 400, as an unknown one)."""

    field_class = _IdField


class IsoDateRangeFilter(django_filters.DateFromToRangeFilter):
    """`<name>_after` and `<name>_before`, inclusive, as YYYY-MM-DD."""

    field_class = _IsoDateRangeField


def _money_bound(value: Decimal | None, rounding: str) -> Decimal | None:
    """A bound as the database can compare it with an amount: within the range of a money column
    (a bound beyond it matches all or nothing just the same) and at the columns' thousandths, rounded
    inwards (`total >= 0.0001` is `total >= 0.001`). PostgreSQL refuses a literal such as 1E+999999999."""
    if value is None:
        return None
    finest = Decimal(1).scaleb(-MONEY_PLACES)
    limit = MAX_AMOUNT + finest
    return max(-limit, min(limit, value)).quantize(finest, rounding=rounding)


@extend_schema_field({"type": "string", "pattern": f"^{NUMBER_PATTERN}$"})
class MoneyRangeFilter(django_filters.RangeFilter):
    """`<name>_min` and `<name>_max`, inclusive: any finite number ("1e400" simply matches nothing)."""

    field_class = _NumberRangeField

    def filter(self, qs, value):
        if value:
            value = slice(_money_bound(value.start, ROUND_CEILING), _money_bound(value.stop, ROUND_FLOOR))
        return super().filter(qs, value)


class _OrderingCSVField(fields.BaseCSVField):
    """Comma-separated fields, none of them empty: `?ordering=,,` is a 400 (it was a FieldError, a
    500, at `order_by("")`); `?ordering=` alone is no ordering."""

    def clean(self, value):
        if value and any(item in self.empty_values for item in value):
            raise ValidationError("An ordering field may not be empty.", code="invalid_choice")
        return super().clean(value)


class StableOrderingFilter(django_filters.OrderingFilter):
    """`?ordering=field` or `-field`; ties are broken by id so pages never overlap."""

    base_field_class = _OrderingCSVField

    def filter(self, qs, value):
        if value in ([], (), {}, "", None):
            return qs
        ordering = [self.get_ordering_value(param) for param in value]
        tiebreak = "-id" if ordering[-1].startswith("-") else "id"
        return qs.order_by(*ordering, tiebreak)


class FilterBackend(DjangoFilterBackend):
    """django-filter's backend, without building the filter form for a request that names no filter.

    Every filter leaves the queryset as it is when its value is empty, so such a request's result is
    the queryset as given (`tests/test_representation.py` pins that for each filter set). Building
    and validating the form anyway (a deep copy of every filter, a form class made on the fly) was
    a tenth of a plain list request and of every detail request, which DRF filters too. A filter set
    with a required filter always takes the full path, so a missing value is still a 400. A key
    that takes one value and is given twice is a 400 on either path.
    """

    def filter_queryset(self, request, queryset, view):
        filterset_class = self.get_filterset_class(view, queryset)
        if filterset_class is not None:
            single = [key for key, repeatable in query_keys(filterset_class).items() if not repeatable]
            refuse_repeated(request.query_params, single)
            if filters_nothing(request, filterset_class):
                return queryset
        return super().filter_queryset(request, queryset, view)


REPEATED = "Give this parameter only once (it was given {count} times)."


def refuse_repeated(params, keys: Iterable[str]) -> None:
    """A 400 on each of `keys` that the query string gives more than once.

    Django's QueryDict answers `get()` with the last value, so `?total_min=abc&total_min=1` would
    pass as `total_min=1`: which of two values a client meant is not for the server to guess.
    """
    errors = {}
    for key in keys:
        count = len(params.getlist(key))
        if count > 1:
            errors[key] = [REPEATED.format(count=count)]
    if errors:
        raise DRFValidationError(errors)


def query_keys(filterset_class) -> dict[str, bool]:
    """Each query key a filter of `filterset_class` reads, and whether it may be repeated.

    The same reading as the schema's (drf-spectacular's django-filter extension): a multiple-choice
    filter is an exploded array, repeatable (`?status=sent&status=paid`); a CSV filter such as the
    ordering is one comma-separated value; a range filter is one value per suffix.
    """
    keys = {}
    for name, filter_ in filterset_class.base_filters.items():
        if isinstance(filter_, django_filters.BaseCSVFilter):
            keys[name] = False
        elif isinstance(filter_, django_filters.MultipleChoiceFilter):
            keys[name] = True
        elif isinstance(filter_, django_filters.RangeFilter):
            suffixes = getattr(filter_.field_class.widget, "suffixes", ["min", "max"])
            keys.update({f"{name}_{suffix}" if suffix else name: False for suffix in suffixes})
        else:
            keys[name] = False
    return keys


def filters_nothing(request, filterset_class) -> bool:
    """Whether `filterset_class` leaves every queryset of this request as it is: no filter of it is
    named in the query string and none is required (a missing required value is a 400)."""
    return not any(f.extra.get("required") for f in filterset_class.base_filters.values()) and not (
        names_a_filter(request.query_params, filterset_class)
    )


def names_a_filter(params, filterset_class) -> bool:
    """Whether a query string has a key a filter of `filterset_class` reads: its name, or its name
    with a suffix (`issue_date_after`, `total_min`). A superset, so that no filter is ever missed."""
    names = filterset_class.base_filters
    return any(key in names or any(key.startswith(f"{name}_") for name in names) for key in params)
