"""Strict serializer fields: a value has the JSON type and form the OpenAPI schema gives it, or 400.

DRF is lenient on input: a CharField takes the number 12 and stores "12", an IntegerField takes
"12" and 12.0, a DecimalField takes the JSON number 12.5 (a float), " 12.5 " and "1e2", a
DateField takes "20261123". The schema (see `billing.schema`) promises strings, integers,
decimal strings such as "12.50" and ISO dates; these fields hold the API to exactly that, so a
client generated from the schema and the server agree on what is valid (and floats stay away
from money).
"""

import re
from decimal import Decimal

from django.db import models
from rest_framework import serializers

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


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: not "12", not 12.5, not true."""

    def to_internal_value(self, data):
        value = json_integer(data)
        if value is None:
            self.fail("invalid")
        return super().to_internal_value(value)


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
        return value


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
