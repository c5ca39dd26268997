"""`/` sends a person to the docs; `GET /api/` lists the API's entry points for a client."""

import json

import jsonschema
import pytest

pytestmark = pytest.mark.django_db

ENTRY_POINTS = {
    "schema": "/api/schema/",
    "docs": "/api/docs/",
    "redoc": "/api/redoc/",
    "health": "/api/health/",
    "login": "/api/login/",
    "register": "/api/register/",
    "me": "/api/me/",
    "customers": "/api/customers/",
    "invoices": "/api/invoices/",
    "payments": "/api/payments/",
    "summary": "/api/invoices/summary/",
}


def test_the_root_redirects_to_the_docs(client):
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"] == "/api/docs/"


def test_the_api_index_lists_the_entry_points_as_absolute_urls(api):
    response = api.get("/api/")

    assert response.status_code == 200
    assert response.json() == {key: f"http://testserver{path}" for key, path in ENTRY_POINTS.items()}


def test_the_api_index_uses_the_host_it_was_asked_on(api, settings):
    settings.ALLOWED_HOSTS = ["billing.example"]

    response = api.get("/api/", HTTP_HOST="billing.example")

    assert response.json()["invoices"] == "http://billing.example/api/invoices/"


def test_the_api_index_needs_no_credentials_and_ignores_bad_ones(api):
    api.credentials(HTTP_AUTHORIZATION="Bearer not-a-key")

    assert api.get("/api/").status_code == 200


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_the_api_index_is_read_only(api, method):
    response = getattr(api, method)("/api/")

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_every_entry_point_is_there(api):
    for key, url in api.get("/api/").json().items():
        response = api.get(url)
        # login and register answer GET with 405, the rest with their page or 401: none is missing.
        assert response.status_code in {200, 401, 405}, (key, response.status_code)


def test_the_index_is_documented_and_the_redirect_and_docs_pages_are_not(api):
    schema = api.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/"]["get"]
    body = api.get("/api/").json()

    assert operation["operationId"] == "entry_points"
    assert operation["security"] == [{}]  # no credentials
    assert set(schema["paths"]["/api/"]) == {"get"}
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]
    component = schema["components"]["schemas"]["EntryPoints"]
    assert set(component["properties"]) == set(ENTRY_POINTS) == set(component["required"])
    assert all(prop["format"] == "uri" for prop in component["properties"].values())
    jsonschema.validate(body, {**ref, "components": schema["components"]})
    assert "/" not in schema["paths"]
    assert not any("redoc" in path for path in schema["paths"])
    assert "/api/" in json.dumps(schema["info"]["description"])
