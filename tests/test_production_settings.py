"""What the production settings (DJANGO_DEBUG=0) serve around the API: the security headers,
HTTPS and HSTS when configured, and the admin's static assets."""

import pytest

pytestmark = pytest.mark.django_db


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
