"""The OpenAPI schema as a client reads it, for tests that pin the schema and the server to each other.

`openapi()` is the public schema (what GET /api/schema/ serves); `request_schema` and
`response_schema` turn an operation's body into a JSON Schema validator, `parameter` and
`query_parameters` find an operation's parameters.

Many such tests pin a finding of the schema fuzzer (tests/live/fuzz.py: schemathesis against
/api/schema/), whose checks are "a response matches its documented schema", "a request the schema
allows is not refused for its form", "a request the schema refuses is refused" and "no 5xx": each
pins both sides where there are two, what the schema says and what the server does. They sit with
the tests of what they are about (test_customers.py, test_invoice_api.py, test_query_parameters.py, ...).
"""

import functools
import json

import jsonschema
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer


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


def query_parameters(path: str) -> list[dict]:
    """The query parameters of GET `path`."""
    return [p for p in openapi()["paths"][path]["get"]["parameters"] if p["in"] == "query"]


def repeatable(parameter: dict) -> bool:
    """Whether the schema lets a client give the parameter more than once (`?status=a&status=b`)."""
    return parameter["schema"].get("type") == "array" and parameter.get("explode", True)


def assert_matches(validator: jsonschema.Draft7Validator, body) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, errors
