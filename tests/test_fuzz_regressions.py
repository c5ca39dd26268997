"""One test per finding of the schema fuzzer (tests/live/fuzz.py: schemathesis against /api/schema/).

The fuzzer's checks are "a response matches its documented schema" (ST108), "a request the schema
allows is not refused for its form" (ST202), "a request the schema refuses is refused" (ST201) and
"no 5xx". Each test pins one finding on both sides where it has two: what the schema says and
what the server does.
"""

import functools
import json

import jsonschema
import jsonschema_rs
import pytest
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer

from customers.models import Customer

pytestmark = pytest.mark.django_db


@functools.cache
def openapi() -> dict:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(schema))


def _json_schema(node):
    """OpenAPI 3.0 to JSON Schema: `nullable: true` becomes "or null"."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    return {"anyOf": [converted, {"type": "null"}]} if node.get("nullable") else converted


def _validator(schema: dict) -> jsonschema.Draft7Validator:
    root = {**_json_schema(schema), "components": _json_schema(openapi()["components"])}
    return jsonschema.Draft7Validator(root, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def response_schema(path: str, method: str, status: int) -> jsonschema.Draft7Validator:
    response = openapi()["paths"][path][method]["responses"][str(status)]
    return _validator(response["content"]["application/json"]["schema"])


def request_schema(path: str, method: str) -> jsonschema.Draft7Validator:
    return _validator(
        openapi()["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    )


def parameter(path: str, method: str, name: str) -> dict:
    return next(p for p in openapi()["paths"][path][method]["parameters"] if p["name"] == name)


def assert_matches(validator: jsonschema.Draft7Validator, body) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, errors


# --- ST108: responses that did not match their schema -----------------------------------------------


def test_a_customer_without_email_matches_the_customer_schema(alice_api):
    # Finding: `email: ""` of a customer failed `format: email` in every customer response.
    created = alice_api.post("/api/customers/", {"name": "Initech"})
    listed = alice_api.get("/api/customers/")

    assert created.status_code == 201
    assert created.json()["email"] == ""
    assert_matches(response_schema("/api/customers/", "post", 201), created.json())
    assert_matches(response_schema("/api/customers/", "get", 200), listed.json())
    assert_matches(response_schema("/api/customers/{id}/", "get", 200), created.json())


def test_a_user_without_email_matches_the_user_schema(api):
    # Finding: register (and /me) answered `email: ""`, which the User schema refused.
    response = api.post("/api/register/", {"username": "sr", "password": "a-long-and-unusual-pass"})

    assert response.status_code == 201
    assert response.json()["email"] == ""
    assert_matches(response_schema("/api/register/", "post", 201), response.json())
    assert_matches(response_schema("/api/me/", "get", 200), response.json())


def test_customer_search_errors_are_field_errors(alice_api):
    # Finding: DRF answered a NUL in ?search= with a bare list, not the documented {field: [...]}.
    nul = alice_api.get("/api/customers/?search=a%00b")
    long = alice_api.get("/api/customers/?search=" + "x" * 201)

    assert (nul.status_code, long.status_code) == (400, 400)
    assert list(nul.json()) == ["search"]
    assert list(long.json()) == ["search"]
    search = parameter("/api/customers/", "get", "search")["schema"]
    assert search["maxLength"] == 200
    assert not jsonschema.Draft7Validator(search).is_valid("a\x00b")


# --- ST201: requests the schema refuses, which the server took ---------------------------------------


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/api/customers/", "tax_id", 0),  # the finding: stored as "0"
        ("/api/customers/", "name", 12),
        ("/api/customers/", "email", ["a@b.test"]),
    ],
)
def test_a_string_field_refuses_other_json_types(alice_api, path, field, value):
    body = {"name": "Acme", field: value}

    response = alice_api.post(path, body)

    assert not request_schema(path, "post").is_valid(body)
    assert response.status_code == 400
    assert field in response.json()
    assert not Customer.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("customer", "CUSTOMER"),  # a numeric string, filled in below: "5" for the id 5
        ("customer", "FLOAT"),  # 5.5 for the id 5 (was read as the customer 5)
        ("due_date", "20301231"),  # ISO 8601 "basic" form: not the documented YYYY-MM-DD
    ],
)
def test_invoice_fields_take_only_their_documented_form(alice_api, alice_customer, field, value):
    value = {"CUSTOMER": str(alice_customer.pk), "FLOAT": alice_customer.pk + 0.5}.get(value, value)
    body = {"customer": alice_customer.pk, "due_date": "2030-12-31", field: value}

    response = alice_api.post("/api/invoices/", body)

    assert not request_schema("/api/invoices/", "post").is_valid(body)
    assert response.status_code == 400
    assert field in response.json()


def test_an_integer_may_be_written_with_a_zero_fraction(alice_api, alice_customer):
    # JSON Schema counts 5.0 as an integer, so the server takes it (and only it) as 5.
    body = {"customer": float(alice_customer.pk), "due_date": "2030-12-31"}

    assert request_schema("/api/invoices/", "post").is_valid(body)
    assert alice_api.post("/api/invoices/", body).json()["customer"] == alice_customer.pk


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("total_min=", None),  # the finding: an empty filter value, which the schema refused
        ("due_date_before=", None),
        ("customer=", None),
        ("customer=+CUSTOMER", "customer"),  # int() reads "+5" and " 5": the schema says integer
        ("customer=%20CUSTOMER", "customer"),
        ("issue_date_after=2026-1-5", "issue_date"),  # date() reads it: the schema says YYYY-MM-DD
        ("total_min=%201", "total"),
        ("total_min=1_000", "total"),
    ],
)
def test_filter_values_have_the_documented_form(alice_api, alice_customer, query, field):
    query = query.replace("CUSTOMER", str(alice_customer.pk))

    for path in ("/api/invoices/", "/api/invoices/summary/"):
        response = alice_api.get(f"{path}?{query}")

        if field is None:
            name = query.split("=")[0]
            assert response.status_code == 200, response.json()
            assert parameter(path, "get", name)["allowEmptyValue"] is True
        else:
            assert response.status_code == 400
            assert list(response.json()) == [field]


def test_payment_filters_allow_empty_values_and_refuse_other_forms(alice_api):
    assert alice_api.get("/api/payments/?invoice=&paid_at_after=").status_code == 200
    assert alice_api.get("/api/payments/?paid_at_after=2026-1-5").status_code == 400
    assert parameter("/api/payments/", "get", "paid_at_after")["allowEmptyValue"] is True
    assert parameter("/api/payments/", "get", "method")["allowEmptyValue"] is True  # "" is no filter
    assert alice_api.get("/api/payments/?method=").status_code == 200


# --- ST202: requests the schema allows, which the server refused for their form ------------------------


@pytest.mark.parametrize("page", ["page", "page_size"])
def test_pages_start_at_one_in_the_schema_as_on_the_server(alice_api, page):
    # Finding: ?page=0&page_size=0 were integers the schema allowed; the server says 400.
    schema = parameter("/api/customers/", "get", page)["schema"]

    assert (schema["minimum"], schema["maximum"]) == (1, 999_999_999)
    assert alice_api.get(f"/api/customers/?{page}=0").status_code == 400
    assert alice_api.get(f"/api/customers/?{page}=1").status_code == 200


@pytest.fixture
def big_invoice(alice, alice_customer, make_invoice):
    return make_invoice(alice, alice_customer, amount="100000.00")


@pytest.mark.parametrize(
    ("amount", "valid"),
    [
        ("", False),  # the finding: the schema's pattern allowed "" (and "-", ".")
        ("-", False),
        (".", False),
        ("0", False),
        ("0.00", False),
        ("-0.01", False),
        ("-0", False),
        ("1.005", False),
        ("1e2", False),
        (" 5", False),
        ("+5", False),
        (".5", False),
        ("1234567890123", False),
        ("0.01", True),
        ("7", True),
        ("007.5", True),
        ("99999.99", True),
    ],
)
def test_amount_pattern_is_what_the_server_accepts(alice_api, big_invoice, amount, valid):
    body = {"invoice": big_invoice.pk, "amount": amount, "method": "cash"}

    response = alice_api.post("/api/payments/", body)

    assert request_schema("/api/payments/", "post").is_valid(body) is valid
    assert response.status_code == (201 if valid else 400), response.json()


@pytest.mark.parametrize(
    ("line", "valid"),
    [
        ({"quantity": "0.001", "unit_price": "0", "tax_rate": "100"}, True),
        ({"quantity": "1", "unit_price": "0.00", "tax_rate": "100.00"}, True),
        ({"quantity": "0.000", "unit_price": "1", "tax_rate": "0"}, False),
        ({"quantity": "1", "unit_price": "1", "tax_rate": "100.01"}, False),
        ({"quantity": "1", "unit_price": "1", "tax_rate": "101"}, False),
        ({"quantity": "1", "unit_price": "-0", "tax_rate": "0"}, False),
        ({"quantity": 1, "unit_price": "1", "tax_rate": "0"}, False),  # a JSON number
    ],
)
def test_line_patterns_are_what_the_server_accepts(alice_api, alice_customer, line, valid):
    body = {"customer": alice_customer.pk, "due_date": "2030-01-31", "lines": [{"description": "x", **line}]}

    response = alice_api.post("/api/invoices/", body)

    assert request_schema("/api/invoices/", "post").is_valid(body) is valid
    assert response.status_code == (201 if valid else 400), response.json()


def test_currency_is_an_enum_of_the_accepted_codes(alice_api, alice_customer):
    # Finding: currency "000" was any three characters to the schema.
    body = {"customer": alice_customer.pk, "due_date": "2030-01-31"}
    currency = request_schema("/api/invoices/", "post")

    assert currency.is_valid({**body, "currency": "JPY"})
    assert alice_api.post("/api/invoices/", {**body, "currency": "JPY"}).status_code == 201
    for code in ("000", "XAU", "usd"):
        assert not currency.is_valid({**body, "currency": code})
        assert alice_api.post("/api/invoices/", {**body, "currency": code}).status_code == 400


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("address", "\x18\x00\xb2'"),  # the finding: a NUL, which PostgreSQL cannot store
        ("name", "nul\x00"),
        ("name", "   "),  # blank once trimmed
        ("name", "\x1c"),  # Python's str.strip() trims it too
    ],
)
def test_strings_the_server_refuses_are_outside_the_schema(alice_api, field, value):
    body = {"name": "Acme", field: value}

    response = alice_api.post("/api/customers/", body)

    assert not request_schema("/api/customers/", "post").is_valid(body)
    assert response.status_code == 400
    assert field in response.json()


def test_length_counts_the_characters_as_sent(alice_api):
    # The schema's maxLength counts every character; so does the server (it trims after counting).
    body = {"name": " " + "x" * 200}

    assert not request_schema("/api/customers/", "post").is_valid(body)
    assert alice_api.post("/api/customers/", body).status_code == 400


@pytest.mark.parametrize(("key", "valid"), [("", False), (" k", False), ("k\x7f", False), ("k k", True)])
def test_idempotency_key_schema_is_what_the_server_accepts(alice_api, alice_customer, key, valid):
    schema = jsonschema.Draft7Validator(parameter("/api/invoices/", "post", "Idempotency-Key")["schema"])
    body = {"customer": alice_customer.pk, "due_date": "2030-01-31"}

    response = alice_api.post("/api/invoices/", body, HTTP_IDEMPOTENCY_KEY=key)

    assert schema.is_valid(key) is valid
    assert response.status_code == (201 if valid else 400)


def test_register_password_length_is_in_the_schema(api):
    password = openapi()["components"]["schemas"]["RegisterRequest"]["properties"]["password"]

    assert password["minLength"] == 8
    response = api.post("/api/register/", {"username": "newbie", "password": "short"})
    assert response.status_code == 400
    assert list(response.json()) == ["password"]


def test_a_registered_password_is_kept_as_sent(api):
    # Register trimmed the password and login does not: " secret… " could never log in.
    password = "  a-long-and-unusual-pass  "

    assert api.post("/api/register/", {"username": "newbie", "password": password}).status_code == 201
    assert api.post("/api/login/", {"username": "newbie", "password": password}).status_code == 200


# --- undocumented statuses --------------------------------------------------------------------------


def test_the_summary_documents_the_list_filters_and_their_400(alice_api):
    # The summary takes the list's filters but documented neither them nor the 400 they give.
    operation = openapi()["paths"]["/api/invoices/summary/"]["get"]

    assert {"status", "customer", "total_min", "issue_date_after"} <= {
        p["name"] for p in operation["parameters"]
    }
    assert "400" in operation["responses"]
    assert alice_api.get("/api/invoices/summary/?status=nope").status_code == 400


# --- 5xx ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "count"),
    [
        ("total_min=1e999999999", 0),  # PostgreSQL: "value overflows numeric format", a 500
        ("total_max=-1e999999999", 0),
        ("total_max=1e999999999", 1),
        ("total_min=1e-999999999", 1),  # above zero: the invoice of 100.00
        ("total_min=0.001&total_max=100.001", 1),
        ("total_min=100.001", 0),
    ],
)
def test_total_bounds_beyond_any_amount_are_no_server_error(alice_api, alice, make_invoice, query, count):
    make_invoice(alice)

    listed = alice_api.get(f"/api/invoices/?{query}")
    summary = alice_api.get(f"/api/invoices/summary/?{query}")

    assert listed.status_code == 200
    assert listed.json()["count"] == count
    assert summary.json()["count"] == count


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (".2080E+468634104797843368460590017", False),  # the finding: a number Python cannot hold
        ("1e123456789", True),
        ("-.5E-3", True),
        ("1e", False),
        ("1_000", False),
    ],
)
def test_total_bound_notation_is_what_the_server_accepts(alice_api, value, valid):
    schema = jsonschema.Draft7Validator(parameter("/api/invoices/", "get", "total_max")["schema"])

    response = alice_api.get("/api/invoices/", {"total_max": value})

    assert schema.is_valid(value) is valid
    assert response.status_code == (200 if valid else 400)


def test_too_many_query_parameters_are_a_json_400(alice_api):
    # Django refuses more than DATA_UPLOAD_MAX_NUMBER_FIELDS parameters with its HTML 400 page.
    query = "&".join(f"page_size={i}" for i in range(2100))

    for path in ("/api/payments/", "/api/invoices/summary/", "/api/customers/"):
        response = alice_api.get(f"{path}?{query}")

        assert response.status_code == 400
        assert response["Content-Type"] == "application/json"
        assert response.json()["code"] == "bad_request"


@pytest.mark.parametrize("path", ["/api/invoices/", "/api/invoices/summary/", "/api/payments/"])
@pytest.mark.parametrize("ordering", [",,,", "total,", ",-created_at"])
def test_an_empty_ordering_field_is_a_400_not_a_500(alice_api, path, ordering):
    # Finding: ?ordering=,,, reached order_by("") (a FieldError): a 500.
    response = alice_api.get(path, {"ordering": ordering})

    assert response.status_code == 400
    assert list(response.json()) == ["ordering"]
    assert alice_api.get(path, {"ordering": ""}).status_code == 200  # no ordering


@pytest.mark.parametrize(("ordering", "valid"), [("name,-created_at", True), ("id", False), (",", False)])
def test_customer_ordering_is_checked_as_documented(alice_api, ordering, valid):
    # One comma-separated value of the documented enum (style form, explode false), as every list's.
    parameter_ = parameter("/api/customers/", "get", "ordering")
    schema = jsonschema.Draft7Validator(parameter_["schema"])

    response = alice_api.get("/api/customers/", {"ordering": ordering})

    assert (parameter_["style"], parameter_["explode"]) == ("form", False)
    assert schema.is_valid(ordering.split(",")) is valid
    assert response.status_code == (200 if valid else 400)


@pytest.mark.parametrize(
    ("username", "valid"), [("ñÒ", True), ("Zoë.van-Dijk", True), ("٣x", True), ("a b", False)]
)
def test_usernames_of_any_script_are_in_the_schema(api, username, valid):
    # Finding: "ñÒ" was refused by the schema (`\w` is ASCII-only in JSON Schema's ECMA dialect) and
    # accepted by the server (Django's validator is Unicode-aware). JSON Schema's reading, as
    # schemathesis and JavaScript clients apply it, needs jsonschema_rs (Python's re has no \p{L}).
    schema = openapi()["components"]["schemas"]["RegisterRequest"]["properties"]["username"]

    response = api.post("/api/register/", {"username": username, "password": "a-long-and-unusual-pass"})

    assert jsonschema_rs.validator_for(schema).is_valid(username) is valid
    assert response.status_code == (201 if valid else 400)


@pytest.mark.parametrize("path", ["/api/invoices/", "/api/payments/"])
def test_an_empty_ordering_is_documented_as_no_ordering(alice_api, path):
    # Finding: `?ordering=` (how [""] is sent) was accepted while the schema refused it.
    assert parameter(path, "get", "ordering")["allowEmptyValue"] is True
    assert alice_api.get(f"{path}?ordering=").status_code == 200
    repeatable = "status" if path == "/api/invoices/" else "method"
    assert parameter(path, "get", repeatable)["allowEmptyValue"] is True  # "" is no filter here too
    assert alice_api.get(f"{path}?{repeatable}=").status_code == 200
