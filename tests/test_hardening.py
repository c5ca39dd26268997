"""Production hardening: nothing leaks from errors or logs, and the security headers are set."""

import logging

import pytest

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_a_server_error_answers_json_with_no_trace_of_the_failure(alice_api, monkeypatch, settings):
    import customers.views

    assert settings.DEBUG is False

    def explode(self, serializer):
        raise RuntimeError("secret connection string postgres://admin:hunter2@db")

    monkeypatch.setattr(customers.views.CustomerViewSet, "perform_create", explode)
    alice_api.raise_request_exception = False

    response = alice_api.post("/api/customers/", {"name": "Acme"}, format="json")

    assert response.status_code == 500
    assert response.json() == {"detail": "A server error occurred.", "code": "server_error"}
    assert b"hunter2" not in response.content
    assert b"Traceback" not in response.content


def test_an_unknown_url_is_a_json_404(api):
    response = api.get("/api/no-such-thing/")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


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


def test_security_headers_are_set(api):
    response = api.get("/api/health/")

    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"


def test_https_redirect_and_hsts_when_configured(api, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000

    plain = api.get("/api/customers/")
    secure = api.get("/api/health/", secure=True)

    assert plain.status_code == 301
    assert plain["Location"].startswith("https://")
    assert secure["Strict-Transport-Security"].startswith("max-age=31536000")
    assert api.get("/api/health/").status_code == 200  # a load balancer's plain-HTTP probe still works


def test_admin_login_page_is_served_with_its_static_assets(client):
    page = client.get("/admin/login/")

    assert page.status_code == 200
    assert client.get("/static/admin/css/base.css").status_code == 200
