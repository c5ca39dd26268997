"""OpenAPI: the auth scheme, every error status an operation can answer with, and exact field rules.

drf-spectacular documents the success responses from the serializers; `BillingAutoSchema` adds
the errors that the conventions of the API produce (400, 401, 403, 404, 405, 409, 413, 415, 422, 429,
500, 503) so that a client generated from the schema knows every status it must handle. Errors come
in two shapes, both components: `FieldErrors` (`{field: [message, ...]}`, nested for nested fields)
and `Error` (`{"detail", "code"}`, `code` one of `ERROR_CODES`).

It also makes the schema say exactly what the server accepts, so that a value the schema allows is
never refused for its form (schema-fuzzed with schemathesis, `tests/live/fuzz.py`):

- decimal strings get a pattern built from their digits, places and bounds ("0.01" and up for a
  payment amount, "0" to "100" for a tax rate), and responses the canonical "-12.50" form;
- request strings say that they carry no NUL character (PostgreSQL cannot store one) and, where a
  blank is refused, that they hold more than whitespace;
- an e-mail that may be blank is "an e-mail address or empty";
- lists carry their maximum length, query parameters their bounds;
- every `pattern` means the same in ECMA-262 (JSON Schema's dialect, read without the `u` flag by
  JavaScript clients) and in Python's `re` (`postprocess_schema` ends each with `(?!\\n)$` and warns
  about a construct the two read differently).

Enum values that are not identifiers (`-paid_at`) get names (`x-enum-varnames`, which
openapi-python-client reads) so that a generated client has `PAID_AT_DESC`, not `VALUE_0`.
"""

import re
from decimal import Decimal

from django.core.exceptions import FieldDoesNotExist
from django.core.validators import RegexValidator
from drf_spectacular.drainage import warn
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent, build_bearer_security_scheme_object
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers
from rest_framework.permissions import AllowAny

from billing.models import ONE_LINE
from billing.money import format_price
from billing.serializers import MoneyField

# Every `code` of an `{"detail", "code"}` error body, with the status it comes with and when. A test
# (tests/test_openapi_schema.py) holds this list to the codes the project raises.
ERROR_CODES = [
    ("parse_error", "400: the body is not valid JSON."),
    ("bad_request", "400: a malformed request (a bad Content-Length, too many query parameters)."),
    ("business_rule_violation", "400: a business limit refuses a well-formed request."),
    ("invoice_incomplete", "400: an invoice needs a line and a total above zero to be sent."),
    ("amount_too_large", "400: an amount is larger than the API holds."),
    ("constraint_violation", "400: the database refuses the data as sent."),
    ("invalid_idempotency_key", "400: the Idempotency-Key header is malformed."),
    ("not_authenticated", "401: no Authorization header."),
    ("authentication_failed", "401: a malformed Authorization header, or an invalid or expired key."),
    ("permission_denied", "403: the credential's role does not allow this."),
    ("registration_closed", "403: registration is switched off."),
    ("not_found", "404: no such object among the caller's own, or no such path."),
    ("method_not_allowed", "405: the path does not answer this method."),
    ("not_acceptable", "406: the Accept header asks for something other than JSON."),
    ("invalid_transition", "409: the object's state forbids the action."),
    ("not_editable", "409: the object is locked against this change."),
    ("stale_write", "409: the object changed since it was read; read it again."),
    ("in_use", "409: other objects still refer to this one."),
    ("last_owner", "409: the last owner of an organization can be neither removed nor demoted."),
    ("conflict", "409: a concurrent request changed the same data; retry."),
    ("request_in_progress", "409: a request with the same Idempotency-Key is still running; retry."),
    ("no_recipient", "409: an email was asked for and there is no address to send it to."),
    ("request_too_large", "413: the body is larger than the server accepts."),
    ("unsupported_media_type", "415: the body is not JSON, or its charset is not UTF-8, UTF-16 or UTF-32."),
    ("idempotency_key_reused", "422: the Idempotency-Key was used with another request."),
    ("throttled", "429: too many requests; retry after the Retry-After header's seconds."),
    ("server_error", "500: an unexpected failure (the server's log has it)."),
    ("pdf_unavailable", "503: the PDF engine cannot be loaded on this server (the rest of the API serves)."),
    (
        "pdf_busy",
        "503: the server renders as many PDFs as it takes at once; retry after Retry-After's seconds.",
    ),
    ("throttle_unavailable", "503: the login throttle cannot count the request; retry."),
]


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What went wrong, for a person.")
    code = serializers.ChoiceField(choices=ERROR_CODES, help_text="A stable machine-readable code.")


# DRF's field errors: each field's messages, a nested object's errors as an object, a list's errors
# as a list with one entry per item (`{}` for an item without errors, the messages of an item that
# is not an object at all: `{"lines": [["This field may not be null."]]}`). Spelled out to that depth,
# which is as deep as the API's fields nest (openapi-python-client cannot name a recursive list).
FIELD_ERRORS_COMPONENT = {
    "type": "object",
    "description": (
        "Invalid input, field by field: `{field: [message, ...]}`; errors of the body as a whole "
        "under `non_field_errors`; a nested object's errors nested (`{lines: [{}, {quantity: [...]}]}`)."
    ),
    "additionalProperties": {
        "anyOf": [
            {
                "type": "array",
                "items": {
                    "anyOf": [
                        {"type": "string"},
                        {"$ref": "#/components/schemas/FieldErrors"},
                        {"type": "array", "items": {"type": "string"}},
                    ]
                },
            },
            {"$ref": "#/components/schemas/FieldErrors"},
        ]
    },
}
VALIDATION_ERROR_DESCRIPTION = (
    "Invalid input: `FieldErrors` for the fields' values, `Error` for a request that cannot be read "
    "(`parse_error`, `bad_request`) or a business limit (`business_rule_violation`, ...)."
)
ERRORS = {
    "401": OpenApiResponse(
        ErrorSerializer,
        description=(
            "No Authorization header (`not_authenticated`), or a malformed one, or an invalid or "
            "expired key (`authentication_failed`)."
        ),
    ),
    "403": OpenApiResponse(
        ErrorSerializer,
        description="The credential's role does not allow this (`permission_denied`); checked after 404.",
    ),
    "404": OpenApiResponse(ErrorSerializer, description="No such object among the caller's own."),
    "409": OpenApiResponse(
        ErrorSerializer,
        description="The object's state forbids the action, or a concurrent request conflicts.",
    ),
    "413": OpenApiResponse(
        ErrorSerializer,
        description="The body is larger than MAX_REQUEST_BYTES (`request_too_large`).",
    ),
    "415": OpenApiResponse(
        ErrorSerializer,
        description=(
            "The body is not `application/json`, or names a charset other than UTF-8, UTF-16 or "
            "UTF-32 (`unsupported_media_type`)."
        ),
    ),
    "422": OpenApiResponse(
        ErrorSerializer, description="The Idempotency-Key was used before with another request."
    ),
    "429": OpenApiResponse(ErrorSerializer, description="Too many requests; retry later."),
    "500": OpenApiResponse(
        ErrorSerializer, description="An unexpected failure (`server_error`); nothing of it is in the body."
    ),
    "503": OpenApiResponse(
        ErrorSerializer,
        description="The throttle could not count the request (`throttle_unavailable`); retry later.",
    ),
}
# The methods a path may answer; any other one of them is 405 there.
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


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
# billing.models.ONE_LINE as a pattern: no control character (so no line break), and for a field
# that trims (a name), not blank either.
_CONTROL = "\\u0000-\\u001f\\u007f"
ONE_LINE_PATTERN = f"^[^{_CONTROL}]*$"
ONE_LINE_NOT_BLANK_PATTERN = f"^[^{_CONTROL}]*[^{_CONTROL}{_SPACE_CLASS}][^{_CONTROL}]*$"
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


def bmp_class(python_class: str) -> str:
    """The body of a character class, `\\uXXXX` ranges only, that holds the characters of the Basic
    Multilingual Plane that `python_class` (say `\\w`, Unicode-aware in Python) matches in this
    Python. Python's `re` and an ECMA-262 pattern read it alike; a character beyond U+FFFF is in
    neither reading (without the `u` flag, JavaScript sees it as two surrogates, which no such class
    holds), so the class cannot carry one; nor a surrogate, which is half of one there."""
    matches = re.compile(f"[{python_class}]").fullmatch
    ranges, start = [], None
    for code in range(0x10000):
        if matches(chr(code)) and not 0xD800 <= code <= 0xDFFF:
            start = code if start is None else start
        elif start is not None:
            ranges.append((start, code - 1))
            start = None
    if start is not None:
        ranges.append((start, 0xFFFF))
    return "".join(f"\\u{low:04x}" if low == high else f"\\u{low:04x}-\\u{high:04x}" for low, high in ranges)


# The end of the string in both readings: Python's `$` also matches before a final newline.
END_OF_STRING = "(?!\\n)$"


def decimal_response_pattern(*, max_digits: int, places: int) -> str:
    """How DRF writes a decimal: always `places` decimals, as in "-12.50"."""
    return f"^-?[0-9]{{1,{max_digits - places}}}\\.[0-9]{{{places}}}$"


def money_response_pattern(*, max_digits: int, places: int) -> str:
    """How a `MoneyField` writes an amount: its currency's places, 0 to `places` ("1250", "12.50",
    "1.250"; a unit price up to 4), never negative."""
    return f"^[0-9]{{1,{max_digits - places}}}(?:\\.[0-9]{{1,{places}}})?$"


MONEY_FORMAT = (
    'Written with exactly its currency\'s ISO 4217 minor units: "1250" JPY, "12.50" USD, "1.250" KWD.'
)
PRICE_FORMAT = (
    "Written with its currency's ISO 4217 minor units, or with as many places as it has up to 4: "
    '"50.00" USD, "0.0125" USD, "333" JPY.'
)


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
        # An http bearer scheme: Swagger UI's Authorize takes the raw key and sends it as
        # `Bearer <key>`, and generated clients do the same.
        return {
            **build_bearer_security_scheme_object(header_name="Authorization", token_prefix="Bearer"),
            "description": (
                "A member's token from `POST /api/login/` or an organization's API key (`sk_...`, from "
                "`POST /api/api-keys/`), sent as `Authorization: Bearer <key>` or, the same credential, "
                "`Authorization: Token <key>`. A header in another form is a 401 that says so."
            ),
        }


class BillingAutoSchema(AutoSchema):
    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if schema is None or "$ref" in schema:
            return schema
        if isinstance(field, MoneyField):
            described = PRICE_FORMAT if field.format is format_price else MONEY_FORMAT
            text = schema.get("description")
            schema = {
                **schema,
                "pattern": money_response_pattern(max_digits=field.max_digits, places=field.decimal_places),
                "description": f"{text} {described}" if text else described,
            }
        elif isinstance(field, serializers.DecimalField):
            schema = {**schema, "pattern": self._decimal_pattern(field, direction)}
        elif isinstance(field, serializers.EmailField) and self._may_be_blank(field):
            schema = self._email_or_blank(schema, field.max_length)
        elif (
            isinstance(field, serializers.CharField)
            and direction == "request"
            and not field.read_only
            and (any(v is ONE_LINE for v in field.validators))
        ):
            blank_ok = field.allow_blank or not field.trim_whitespace
            schema = {**schema, "pattern": ONE_LINE_PATTERN if blank_ok else ONE_LINE_NOT_BLANK_PATTERN}
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
                responses[code] = self._get_response_for_code(
                    self._error_response(code, direction), code, direction=direction
                )
        return responses

    def _error_response(self, code: str, direction: str) -> OpenApiResponse:
        if code == "400":
            self.registry.register_on_missing(
                ResolvedComponent(
                    name="FieldErrors",
                    type=ResolvedComponent.SCHEMA,
                    object="FieldErrors",
                    schema=FIELD_ERRORS_COMPONENT,
                )
            )
            error = self.resolve_serializer(ErrorSerializer, direction)
            return OpenApiResponse(
                {"anyOf": [{"$ref": "#/components/schemas/FieldErrors"}, error.ref]},
                description=VALIDATION_ERROR_DESCRIPTION,
            )
        if code == "405":
            return OpenApiResponse(
                ErrorSerializer,
                description=(
                    f"This path does not answer {', '.join(self._methods_not_allowed())}: those methods "
                    "get 405 (`method_not_allowed`), with the `Allow` header listing the ones it does."
                ),
            )
        return ERRORS[code]

    def _methods_not_allowed(self) -> list[str]:
        """The methods of HTTP_METHODS that the view of this path does not answer (405)."""
        action_map = getattr(self.view, "action_map", None)
        if action_map is not None:  # a viewset: the router bound these methods for this path
            allowed = {method.upper() for method in action_map}
        else:
            allowed = {method for method in HTTP_METHODS if hasattr(self.view, method.lower())}
        return [method for method in HTTP_METHODS if method not in allowed]

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
        # A permission that knows it refuses some role here (users.permissions.RolePermission).
        if any(getattr(p, "may_forbid", None) and p.may_forbid(view, method) for p in view.get_permissions()):
            codes.append("403")
        if "{" in self.path or self._is_list_view():
            codes.append("404")
        if self._methods_not_allowed():
            codes.append("405")
        if method in ("POST", "PUT", "PATCH", "DELETE") and getattr(view, "may_conflict", True):
            codes.append("409")
        if method in ("POST", "PUT", "PATCH"):  # a body: checked for size and media type
            codes += ["413", "415"]
        if self._is_idempotent():
            codes.append("422")
        if view.get_throttles():
            codes += ["429", "503"]
        codes.append("500")
        return codes


def postprocess_schema(result, generator, request, public):
    """The last pass over the whole schema (after drf-spectacular's enum components): every pattern
    ends with END_OF_STRING and is checked to read alike in ECMA-262 and Python; enum values that are
    not identifiers get names."""
    for node in _schema_nodes(result):
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            node["pattern"] = pattern = _end_of_string(pattern)
            problem = pattern_portability_problem(pattern)
            if problem:
                warn(f"the pattern {pattern!r} reads differently in ECMA-262 and Python: {problem}")
        values = node.get("enum")
        if isinstance(values, list) and "x-enum-varnames" not in node:
            names = enum_varnames(values)
            if names is not None:
                node["x-enum-varnames"] = names
    return result


def _schema_nodes(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _schema_nodes(value)
    elif isinstance(node, list):
        for item in node:
            yield from _schema_nodes(item)


def _end_of_string(pattern: str) -> str:
    """`pattern` with a closing `$` spelled END_OF_STRING (a `$` not escaped by a backslash)."""
    if pattern.endswith(END_OF_STRING) or not pattern.endswith("$"):
        return pattern
    backslashes = len(pattern[:-1]) - len(pattern[:-1].rstrip("\\"))
    return pattern if backslashes % 2 else pattern[:-1] + END_OF_STRING


_PORTABLE_ESCAPE = re.compile(r"\\(?:u[0-9A-Fa-f]{4}|x[0-9A-Fa-f]{2}|[nrtfv]|[!-/:-@\[-`{-~])")


def pattern_portability_problem(pattern: str) -> str | None:
    """Why `pattern` may match other strings in ECMA-262 (no flags) than in Python's `re`, or None.

    Conservative: it allows the constructs both read alike (escaped punctuation, `\\uXXXX`, `\\xHH`,
    `\\n`-style escapes, classes, groups, lookaheads, quantifiers, `^`, a closing END_OF_STRING) and
    names the first other one, such as `\\w`, `\\d`, `\\s` or `\\b` (Unicode-aware in Python, ASCII
    or another set in ECMA-262), `.` (ECMA-262 also excludes \\r, U+2028, U+2029), a `$` elsewhere
    than at the end, named groups, lookbehinds and inline flags.
    """
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            escape = _PORTABLE_ESCAPE.match(pattern, i)
            if escape is None:
                return f"the escape {pattern[i : i + 2]!r}"
            i = escape.end()
            continue
        if in_class:
            if char == "[":
                return "a '[' inside a class (a nested set in Python)"
            if char == "]":
                in_class = False
        elif char == "[":
            in_class = True
            if pattern.startswith(("[]", "[^]"), i):
                return "a class that starts with ']'"
        elif char == ".":
            return "'.' (ECMA-262 also leaves out \\r, U+2028 and U+2029)"
        elif char == "$" and not (i == len(pattern) - 1 and pattern.endswith(END_OF_STRING)):
            return "a '$' other than the closing one (Python's also matches before a final newline)"
        elif char == "(" and pattern.startswith("(?", i) and not pattern.startswith(("(?:", "(?=", "(?!"), i):
            return f"the group {pattern[i : i + 4]!r}"
        elif char == "{" and pattern.startswith("{,", i):
            return "'{,n}' (a quantifier in Python, literal text in ECMA-262)"
        i += 1
    return "an unclosed class" if in_class else None


def enum_varnames(values: list) -> list[str] | None:
    """Names for the members of a string enum with a value that does not start with a letter
    (`-paid_at`: `PAID_AT_DESC`), or None when every value can name itself (or names would clash)."""
    if not values or not all(isinstance(value, str) for value in values):
        return None
    if all(value[:1].isalpha() for value in values):
        return None
    names = []
    for value in values:
        name = (
            "ALL"
            if value == "*"
            else re.sub(r"[^0-9A-Za-z]+", "_", value.lstrip("-")).strip("_").upper() or "BLANK"
        )
        if value.startswith("-") and len(value) > 1:
            name += "_DESC"
        names.append(f"VALUE_{name}" if name[0].isdigit() else name)
    if len(set(names)) != len(names):
        warn(f"no distinct names for the enum values {values}")
        return None
    return names
