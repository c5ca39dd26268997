"""OpenAPI: the auth scheme, every error status an operation can answer with, and exact field rules.

drf-spectacular documents the success responses from the serializers; `BillingAutoSchema` adds
the errors that the conventions of the API produce (400, 401, 404, 409, 422, 429) so that a client
generated from the schema knows every status it must handle.

It also makes the schema say exactly what the server accepts, so that a value the schema allows is
never refused for its form (schema-fuzzed with schemathesis, `tests/live/fuzz.py`):

- decimal strings get a pattern built from their digits, places and bounds ("0.01" and up for a
  payment amount, "0" to "100" for a tax rate), and responses the canonical "-12.50" form;
- request strings say that they carry no NUL character (PostgreSQL cannot store one) and, where a
  blank is refused, that they hold more than whitespace;
- an e-mail that may be blank is "an e-mail address or empty";
- lists carry their maximum length, query parameters their bounds.
"""

import re
from decimal import Decimal

from django.core.exceptions import FieldDoesNotExist
from django.core.validators import RegexValidator
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, for a person.")
    code = serializers.CharField(help_text="A stable machine-readable code.")


VALIDATION_ERROR = OpenApiResponse(
    response=OpenApiTypes.OBJECT,
    description=(
        "Invalid input: `{field: [message, ...]}` as DRF reports it (nested for nested fields), "
        'or `{"detail": ..., "code": ...}` for an unreadable body.'
    ),
)
ERRORS = {
    "401": OpenApiResponse(ErrorSerializer, description="No token, or an invalid or expired one."),
    "404": OpenApiResponse(ErrorSerializer, description="No such object among the caller's own."),
    "409": OpenApiResponse(
        ErrorSerializer,
        description="The object's state forbids the action, or a concurrent request conflicts.",
    ),
    "422": OpenApiResponse(
        ErrorSerializer, description="The Idempotency-Key was used before with another request."
    ),
    "429": OpenApiResponse(ErrorSerializer, description="Too many requests; retry later."),
}


# Characters `str.isspace()` is true for, which DRF trims: a JSON Schema class that spells them out
# (`\s` means slightly different things in Python and in ECMA-262 regular expressions).
_SPACE_CLASS = "".join(
    f"\\u{start:04x}" if start == end else f"\\u{start:04x}-\\u{end:04x}"
    for start, end in (
        (0x09, 0x0D),
        (0x1C, 0x20),
        (0x85, 0x85),
        (0xA0, 0xA0),
        (0x1680, 0x1680),
        (0x2000, 0x200A),
        (0x2028, 0x2029),
        (0x202F, 0x202F),
        (0x205F, 0x205F),
        (0x3000, 0x3000),
    )
)
NO_NUL_PATTERN = "^[^\\u0000]*$"
NOT_BLANK_PATTERN = f"^[^\\u0000]*[^\\u0000{_SPACE_CLASS}][^\\u0000]*$"
# What `str.isprintable()` refuses among the characters a header can carry (Latin-1).
_NOT_PRINTABLE = "\\u0000-\\u001f\\u007f-\\u00a0\\u00ad"


def decimal_request_pattern(*, max_digits: int, places: int, minimum, maximum) -> str:
    """The decimal strings a `StrictDecimalField` accepts: digits, an optional point and at most
    `places` decimals, at most `max_digits - places` significant whole digits, within the bounds.

    Supports the bounds the API uses: none (a signed value), a minimum of 0 or of the smallest unit
    (0.01: "above zero"), and with a minimum of 0 a maximum that is a power of ten (100). Anything
    else fails loudly, so that a new field gets its pattern thought about.
    """
    whole = max_digits - places
    fraction = f"(?:\\.[0-9]{{1,{places}}})?"
    nonzero_whole = f"0*[1-9][0-9]{{0,{whole - 1}}}"
    smallest = Decimal(1).scaleb(-places)
    if maximum is not None:
        exponent = len(str(int(maximum))) - 1
        if Decimal(maximum) != Decimal(10) ** exponent or minimum is None or Decimal(minimum) != 0:
            raise ValueError(f"no decimal pattern for the bounds {minimum}..{maximum}")
        return f"^(?:0*[0-9]{{1,{exponent}}}{fraction}|0*1{'0' * exponent}(?:\\.0{{1,{places}}})?)$"
    if minimum is None:
        return f"^-?(?:{nonzero_whole}|0+){fraction}$"
    if Decimal(minimum) == 0:
        return f"^(?:{nonzero_whole}|0+){fraction}$"
    if Decimal(minimum) == smallest:
        nonzero_fraction = "|".join(f"{'0' * k}[1-9][0-9]{{0,{places - k - 1}}}" for k in range(places))
        return f"^(?:{nonzero_whole}{fraction}|0+\\.(?:{nonzero_fraction}))$"
    raise ValueError(f"no decimal pattern for the bounds {minimum}..{maximum}")


def unicode_word_classes(pattern: str) -> str:
    """A Python regex's `\\w` for JSON Schema. In Python, `\\w` matches letters and digits of every
    script; in an ECMA-262 pattern (JSON Schema's dialect), only ASCII ones. So a Unicode-aware
    Django validator such as the username's `^[\\w.@+-]+\\Z` is written with `\\p{L}\\p{N}_`."""
    out, in_class, i = [], False, 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            escape = pattern[i : i + 2]
            if escape == "\\w":
                out.append("\\p{L}\\p{N}_" if in_class else "[\\p{L}\\p{N}_]")
            else:
                out.append(escape)
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        out.append(char)
        i += 1
    return "".join(out)


def decimal_response_pattern(*, max_digits: int, places: int) -> str:
    """How DRF writes a decimal: always `places` decimals, as in "-12.50"."""
    return f"^-?[0-9]{{1,{max_digits - places}}}\\.[0-9]{{{places}}}$"


IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        # Printable characters; no leading or trailing space, which HTTP would strip.
        "pattern": f"^[^ {_NOT_PRINTABLE}](?:[^{_NOT_PRINTABLE}]*[^ {_NOT_PRINTABLE}])?$",
    },
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        "Up to 255 characters, unique per request you mean to make once. A retry with the same key and "
        "body returns the first response again (header `Idempotent-Replayed: true`) without a second "
        "write; the same key with another body or endpoint is 422; while the first is running, 409."
    ),
)


class TokenScheme(OpenApiAuthenticationExtension):
    target_class = "users.auth.ExpiringTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Token")


class BillingAutoSchema(AutoSchema):
    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if schema is None or "$ref" in schema:
            return schema
        if isinstance(field, serializers.DecimalField):
            schema = {**schema, "pattern": self._decimal_pattern(field, direction)}
        elif isinstance(field, serializers.EmailField) and self._may_be_blank(field):
            schema = self._email_or_blank(schema, field.max_length)
        elif isinstance(field, serializers.CharField) and direction == "request" and not field.read_only:
            has_regex = any(isinstance(v, RegexValidator) for v in field.validators)
            if not has_regex and not {"pattern", "format", "enum"} & set(schema):
                blank_ok = field.allow_blank or not field.trim_whitespace
                schema = {**schema, "pattern": NO_NUL_PATTERN if blank_ok else NOT_BLANK_PATTERN}
        elif isinstance(field, serializers.ListSerializer) and field.max_length is not None:
            schema = {**schema, "maxItems": field.max_length}
        return schema

    @staticmethod
    def _decimal_pattern(field: serializers.DecimalField, direction: str) -> str:
        if direction == "response" or field.read_only:
            return decimal_response_pattern(max_digits=field.max_digits, places=field.decimal_places)
        return decimal_request_pattern(
            max_digits=field.max_digits,
            places=field.decimal_places,
            minimum=field.min_value,
            maximum=field.max_value,
        )

    @staticmethod
    def _may_be_blank(field: serializers.CharField) -> bool:
        """A field that takes a blank, or a read-only one whose model column may hold one."""
        if field.allow_blank:
            return True
        model = getattr(getattr(field.parent, "Meta", None), "model", None)
        if not field.read_only or model is None:
            return False
        try:
            return model._meta.get_field(field.source).blank
        except FieldDoesNotExist:
            return False

    @staticmethod
    def _email_or_blank(schema: dict, max_length: int | None) -> dict:
        """An address, or "" (the field may be left blank, and reads back blank)."""
        meta_keys = {"readOnly", "writeOnly", "description", "default", "nullable", "title"}
        meta = {key: value for key, value in schema.items() if key in meta_keys}
        address = {key: value for key, value in schema.items() if key not in meta_keys}
        if max_length is not None:
            address["maxLength"] = max_length
        return {"anyOf": [address, {"type": "string", "maxLength": 0}], **meta}

    def _insert_field_validators(self, field, schema):
        super()._insert_field_validators(field, schema)
        unicode_regex = any(
            isinstance(v, RegexValidator) and not v.regex.flags & re.ASCII for v in field.validators
        )
        if unicode_regex and "pattern" in schema:
            schema["pattern"] = unicode_word_classes(schema["pattern"])

    def _get_filter_parameters(self):
        """django-filter's parameters: an empty value is no filter (`?customer=`), and CharFilters
        carry their maximum length and the NUL they refuse."""
        parameters = super()._get_filter_parameters()
        filterset_class = getattr(self.view, "filterset_class", None)
        base_filters = getattr(filterset_class, "base_filters", {})
        for parameter in parameters:
            schema = parameter.get("schema", {})
            # An empty value is no filter, a repeatable one's (`?status=`) too; `?ordering=`, a
            # comma-separated list, is no ordering.
            if filterset_class is not None and parameter["in"] == "query":
                parameter["allowEmptyValue"] = True
            filter_ = base_filters.get(parameter["name"])
            if (
                filter_ is None
                or schema.get("type") != "string"
                or {"format", "enum", "pattern"} & set(schema)
            ):
                continue
            max_length = filter_.extra.get("max_length")
            if max_length is not None:
                schema["maxLength"] = max_length
            schema["pattern"] = NO_NUL_PATTERN
        return parameters

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in self._error_codes():
            if code not in responses:
                response = VALIDATION_ERROR if code == "400" else ERRORS[code]
                responses[code] = self._get_response_for_code(response, code, direction=direction)
        return responses

    def _is_idempotent(self) -> bool:
        handler = getattr(self.view, getattr(self.view, "action", None) or self.method.lower(), None)
        return getattr(handler, "idempotent", False)

    def get_override_parameters(self):
        parameters = super().get_override_parameters()
        if self._is_idempotent():
            parameters = [*parameters, IDEMPOTENCY_KEY]
        return parameters

    def _error_codes(self) -> list[str]:
        view, method = self.view, self.method
        codes = []
        has_input = method in ("POST", "PUT", "PATCH") or bool(self._get_filter_parameters())
        if has_input or self._is_list_view():
            codes.append("400")
        if not all(isinstance(p, AllowAny) for p in view.get_permissions()):
            codes.append("401")
        if "{" in self.path or self._is_list_view():
            codes.append("404")
        if method in ("POST", "PUT", "PATCH", "DELETE") and getattr(view, "may_conflict", True):
            codes.append("409")
        if self._is_idempotent():
            codes.append("422")
        if view.get_throttles():
            codes.append("429")
        return codes
