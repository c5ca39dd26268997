"""The request log (`billing.middleware.RequestLogMiddleware`): one record per request, with its
request id, and never a secret."""

import logging

import pytest

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_request_log_has_one_record_per_request_and_no_secrets(api, alice, caplog):
    caplog.set_level(logging.INFO, logger="billing.request")

    login = api.post("/api/login/", {"username": "alice", "password": PASSWORD}, format="json")
    token = login.json()["token"]
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    api.get("/api/customers/?search=acme", HTTP_X_REQUEST_ID="req-123")

    records = [r for r in caplog.records if r.name == "billing.request"]
    assert [(r.method, r.path, r.status) for r in records] == [
        ("POST", "/api/login/", 200),
        ("GET", "/api/customers/?search=acme", 200),
    ]
    assert records[1].user_id == alice.pk
    assert records[1].request_id == "req-123"
    assert records[1].duration_ms >= 0
    everything = " ".join(str(vars(r)) for r in caplog.records)
    assert token not in everything
    assert token[:15] not in everything
    assert PASSWORD not in everything


def test_request_id_is_echoed_or_made_up(api):
    assert api.get("/api/health/", HTTP_X_REQUEST_ID="abc-1")["X-Request-ID"] == "abc-1"
    generated = api.get("/api/health/", HTTP_X_REQUEST_ID="bad\x01id")["X-Request-ID"]
    assert len(generated) == 32
    assert generated.isalnum()
