"""How a request body is read: JSON only (415 otherwise), well-formed (400), within the size limit
(413, before it is read), and its text kept as sent. A body refused writes nothing."""

import json

import pytest

from tests.conftest import row_counts

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"name": }',
        b"not json",
        b"\xff\xfe\x00",
        b'{"name": "a"',
        b"[" * 100_000 + b"]" * 100_000,
        b"NaN",
    ],
    ids=["truncated", "missing value", "text", "binary", "unclosed", "deeply nested", "NaN literal"],
)
def test_malformed_json_is_400(alice_api, raw):
    response = alice_api.generic("POST", "/api/customers/", raw, content_type="application/json")

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert row_counts()["customers.Customer"] == 0


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"],
)
def test_wrong_content_types_are_415(alice_api, content_type):
    response = alice_api.generic("POST", "/api/customers/", b"name=Acme", content_type=content_type)

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_a_body_over_the_size_limit_is_413_before_it_is_read(alice_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"name": "x" * 2000}).encode()

    response = alice_api.generic("POST", "/api/customers/", body, content_type="application/json")

    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
    assert row_counts()["customers.Customer"] == 0


def test_unicode_round_trips(alice_api):
    name = "Société Générale — 東京 💶"

    response = alice_api.post(
        "/api/customers/", {"name": name, "address": "Straße 1\nMünchen"}, format="json"
    )

    assert response.status_code == 201
    assert alice_api.get(f"/api/customers/{response.json()['id']}/").json()["name"] == name
