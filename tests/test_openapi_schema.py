"""The schema as integrators and generators read it: valid OpenAPI, every pattern the same in
JavaScript (ECMA-262 without the `u` flag) and Python's `re`, errors documented as components with
every code the project answers with, and enums that generated clients can name."""

import importlib
import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
from openapi_spec_validator import validate
from rest_framework.exceptions import APIException

from billing.errors import BillingError
from billing.schema import END_OF_STRING, ERROR_CODES, enum_varnames, pattern_portability_problem
from users.serializers import USERNAME_PATTERN

NODE = "/usr/bin/node"

# Strings that tell the readings of a pattern apart: ends of lines, spaces of every kind, letters and
# digits of other scripts, a character beyond U+FFFF (two surrogates in JavaScript), the decimals
# the API takes. Every character of the Basic Multilingual Plane is tried on its own as well.
PROBES = [
    "",
    "\n",
    "\r",
    "a\n",
    "\na",
    "a\r",
    "0\n",
    "1\n",
    "\u2028",
    "a\u2029",
    " ",
    " a",
    "a ",
    "a b",
    "\u00a0",
    "\ufeff",
    "alice",
    "alice\n",
    "Zoë.van-Dijk",
    "ñÒ",
    "٣x",
    "x_y@z+w-v",
    "\U0001d400lice",
    "\U0001f600",
    "a\U0001f600",
    "\U00020000",
    "\ud83d",
    "0",
    "00",
    "1",
    "0.01",
    "0.001",
    "12.50",
    "12.50\n",
    "-12.50",
    "12.5",
    "100",
    "100.00",
    "100.01",
    "99.99",
    "1e5",
    "+1.5E-3",
    ".5",
    "999999999999.99",
    "9999999999999",
    "INV-000001",
    "INV 1",
    " INV",
    "name,-created_at",
    "-created_at,",
    "key-1",
    "x\u0000",
]


@pytest.fixture(scope="module")
def schema():
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    generated = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(generated))


def patterns_of(node) -> set[str]:
    found = set()
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            found.add(node["pattern"])
        for value in node.values():
            found |= patterns_of(value)
    elif isinstance(node, list):
        for item in node:
            found |= patterns_of(item)
    return found


def javascript(program: str, data) -> object:
    """Run `program` in Node with `data` (JSON) on its standard input; its JSON output."""
    assert Path(NODE).is_file(), "Node (/usr/bin/node) reads the patterns as JavaScript clients do"
    result = subprocess.run(
        [NODE, "-e", program], input=json.dumps(data), capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(result.stdout)


JS_COMPILE = """
const patterns = JSON.parse(require("fs").readFileSync(0, "utf8"));
const errors = {};
for (const p of patterns) { try { new RegExp(p); } catch (e) { errors[p] = String(e); } }
process.stdout.write(JSON.stringify(errors));
"""

JS_MATCH = """
const {patterns, probes} = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = patterns.map(p => { const r = new RegExp(p); return probes.map(s => r.test(s) ? "1" : "0").join(""); });
process.stdout.write(JSON.stringify(out));
"""


def test_the_served_schema_is_valid_openapi(api, db):
    response = api.get("/api/schema/?format=json")

    assert response.status_code == 200
    validate(json.loads(response.content))


def test_every_pattern_compiles_in_python_and_in_javascript(schema):
    patterns = sorted(patterns_of(schema))

    assert USERNAME_PATTERN in patterns
    for pattern in patterns:
        re.compile(pattern)
    assert javascript(JS_COMPILE, patterns) == {}


def test_every_pattern_matches_the_same_strings_in_python_and_in_javascript(schema):
    patterns = sorted(patterns_of(schema))
    probes = PROBES + [chr(code) for code in range(0x10000)]

    in_javascript = javascript(JS_MATCH, {"patterns": patterns, "probes": probes})

    for pattern, js_matches in zip(patterns, in_javascript, strict=True):
        search = re.compile(pattern).search
        python_matches = "".join("1" if search(probe) else "0" for probe in probes)
        differ = [probes[i] for i in range(len(probes)) if python_matches[i] != js_matches[i]]
        assert not differ, f"{pattern[:80]!r} reads {differ[:10]!r} differently"


def test_every_pattern_ends_at_the_end_of_the_string_and_is_portable(schema):
    for pattern in patterns_of(schema):
        assert pattern.endswith(END_OF_STRING), pattern
        assert pattern_portability_problem(pattern) is None, pattern


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("^[\\w.@+-]+(?!\\n)$", "the escape '\\\\w'"),
        ("^[\\p{L}]+(?!\\n)$", "the escape '\\\\p'"),
        ("^\\d+(?!\\n)$", "the escape '\\\\d'"),
        ("^a.b(?!\\n)$", "'.'"),
        ("^a$", "a '$'"),
        ("^(?P<x>a)(?!\\n)$", "the group '(?P<'"),
        ("^a{,3}(?!\\n)$", "'{,n}'"),
    ],
)
def test_a_pattern_read_differently_by_the_two_is_named(pattern, problem):
    assert pattern_portability_problem(pattern).startswith(problem)


def test_the_username_rule_is_pythons_word_characters_of_the_basic_plane(schema):
    published = schema["components"]["schemas"]["RegisterRequest"]["properties"]["username"]["pattern"]
    word = re.compile(r"\w")

    assert published == USERNAME_PATTERN
    for code in range(0x10000):
        char = chr(code)
        expected = bool(word.match(char)) or char in ".@+-"
        assert bool(re.search(published, char)) is expected, hex(code)


@pytest.mark.parametrize(
    ("username", "accepted"),
    [
        ("ñÒ", True),
        ("Zoë.van-Dijk", True),
        ("٣x", True),
        ("x_y@z+w-v", True),
        ("a b", False),
        ("alice\n", False),
        ("\U0001d400lice", False),  # beyond U+FFFF: no portable pattern can take it
        ("emoji\U0001f600", False),
    ],
)
def test_registration_checks_the_published_username_pattern(api, db, username, accepted):
    response = api.post("/api/register/", {"username": username, "password": "a-long-and-unusual-pass"})

    assert bool(re.search(USERNAME_PATTERN, username)) is accepted
    assert response.status_code == (201 if accepted else 400), response.json()
    if not accepted:
        assert list(response.json()) == ["username"]


def _project_error_codes() -> set[str]:
    """The `code` of every domain error and API exception the project defines or DRF answers with."""
    for module in (
        "billing.idempotency",
        "users.services",
        "users.throttling",
        "customers.services",
        "invoices.models",
        "invoices.services",
        "payments.services",
    ):
        importlib.import_module(module)

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    domain = {error.code for error in subclasses(BillingError)}
    drf = {
        exception.default_code
        for exception in subclasses(APIException)
        if exception.__module__.startswith(("rest_framework.", "users.", "billing."))
        and exception.__name__ != "ValidationError"  # the field-errors shape
    }
    return domain | drf


# Codes that never come in an `{"detail", "code"}` body: the base class, a management command's
# error, one raised on `non_field_errors` (the field-errors shape).
NOT_HTTP_DETAIL_CODES = {"billing_error", "mark_overdue_incomplete", "invalid_credentials"}


def test_the_error_code_enum_holds_every_code_the_project_answers_with(schema):
    documented = schema["components"]["schemas"]["ErrorCodeEnum"]["enum"]
    raised = _project_error_codes() - NOT_HTTP_DETAIL_CODES

    assert documented == [code for code, _ in ERROR_CODES]
    assert raised - set(documented) == set()
    # and the handler's and middleware's own bodies
    assert {"bad_request", "conflict", "constraint_violation", "request_too_large", "server_error"} <= set(
        documented
    )


def validator(schema: dict, ref: dict) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**ref, "components": schema["components"]})


def response_schema(schema, path, method, status) -> dict:
    return schema["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]


def assert_valid(schema, path, method, status, body):
    errors = [
        e.message for e in validator(schema, response_schema(schema, path, method, status)).iter_errors(body)
    ]
    assert not errors, (body, errors)


def test_field_errors_document_the_nested_bodies_drf_answers_with(schema, alice_api, alice_customer):
    response = alice_api.post(
        "/api/invoices/",
        {
            "customer": alice_customer.pk,
            "due_date": "not a date",
            "lines": [
                {"description": "ok", "quantity": "1", "unit_price": "1.00"},
                {"description": "", "quantity": "-1", "unit_price": "x"},
            ],
        },
    )

    assert response.status_code == 400
    body = response.json()
    assert body["lines"][0] == {}
    assert set(body["lines"][1]) == {"description", "quantity", "unit_price"}
    assert_valid(schema, "/api/invoices/", "post", "400", body)
    field_errors = validator(schema, {"$ref": "#/components/schemas/FieldErrors"})
    assert field_errors.is_valid(body)
    assert not field_errors.is_valid({"detail": "x", "code": "parse_error"})


def test_field_errors_document_the_messages_of_a_list_item_that_is_not_an_object(
    schema, alice_api, alice_customer
):
    # Found by the schema fuzz: a null line's errors are a list of messages inside the list.
    response = alice_api.post(
        "/api/invoices/", {"customer": alice_customer.pk, "due_date": "2030-01-31", "lines": [None]}
    )

    assert response.status_code == 400
    assert response.json() == {"lines": [["This field may not be null."]]}
    assert_valid(schema, "/api/invoices/", "post", "400", response.json())


def test_a_body_that_is_not_json_is_a_documented_error(schema, alice_api):
    response = alice_api.generic("POST", "/api/customers/", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"
    assert_valid(schema, "/api/customers/", "post", "400", response.json())


def test_a_method_a_path_does_not_answer_is_a_documented_405(schema, alice_api):
    for method in ("put", "patch", "delete"):
        response = getattr(alice_api, method)("/api/payments/1/", {})

        assert response.status_code == 405
        assert response.json()["code"] == "method_not_allowed"
        assert_valid(schema, "/api/payments/{id}/", "get", "405", response.json())
    description = schema["paths"]["/api/payments/{id}/"]["get"]["responses"]["405"]["description"]
    assert "POST, PUT, PATCH, DELETE" in description


def test_a_body_too_large_is_a_documented_413(schema, alice_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    response = alice_api.post("/api/customers/", {"name": "x" * 200})

    assert response.status_code == 413
    assert_valid(schema, "/api/customers/", "post", "413", response.json())


@pytest.mark.parametrize(
    ("content_type", "body"),
    [("text/plain", "name=x"), ("application/json; charset=rot13", '{"name": "x"}')],
)
def test_an_unsupported_media_type_is_a_documented_415(schema, alice_api, content_type, body):
    response = alice_api.generic("POST", "/api/customers/", body, content_type=content_type)

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert_valid(schema, "/api/customers/", "post", "415", response.json())


def test_every_operation_documents_500_and_the_bodys_errors(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert "500" in responses, (method, path)
            if method in ("post", "put", "patch"):
                assert {"413", "415"} <= set(responses), (method, path)


def test_response_currencies_and_statuses_are_the_inputs_enums(schema):
    components = schema["components"]["schemas"]

    def ref(node):
        return node.get("$ref") or node["allOf"][0]["$ref"]

    currency = ref(components["InvoiceInputRequest"]["properties"]["currency"])
    assert currency == "#/components/schemas/CurrencyEnum"
    assert ref(components["Invoice"]["properties"]["currency"]) == currency
    assert ref(components["InvoiceDetail"]["properties"]["currency"]) == currency
    assert ref(components["CurrencyTotals"]["properties"]["currency"]) == currency
    status = ref(components["Invoice"]["properties"]["status"])
    assert status == "#/components/schemas/InvoiceStatusEnum"
    assert ref(components["PaymentResult"]["properties"]["invoice_status"]) == status


def test_descending_orderings_have_names_for_generated_clients(schema):
    ordering = next(
        p for p in schema["paths"]["/api/payments/"]["get"]["parameters"] if p["name"] == "ordering"
    )
    items = ordering["schema"]["items"]

    names = dict(zip(items["enum"], items["x-enum-varnames"], strict=True))
    assert names["-paid_at"] == "PAID_AT_DESC"
    assert names["paid_at"] == "PAID_AT"


def test_enum_names_are_given_only_where_values_cannot_name_themselves():
    assert enum_varnames(["draft", "sent"]) is None
    assert enum_varnames(["", "a-b", "-a-b", "3d"]) == ["BLANK", "A_B", "A_B_DESC", "VALUE_3D"]
    assert enum_varnames(["-a", "a_desc"]) is None  # names would clash: left to the generator
