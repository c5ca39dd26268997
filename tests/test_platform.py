import subprocess
import sys

import pytest
from django.core.management import call_command
from django.db import DatabaseError

from tests.factories import org

pytestmark = pytest.mark.django_db


def test_health_reports_ok(api):
    response = api.get("/api/health/")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_health_reports_503_when_the_database_fails(api, monkeypatch):
    from django.db.backends.utils import CursorWrapper

    def broken(*args, **kwargs):
        raise DatabaseError("connection refused")

    monkeypatch.setattr(CursorWrapper, "execute", broken)
    response = api.get("/api/health/")

    assert response.status_code == 503
    assert response.json() == {"status": "error", "database": "unavailable"}


def test_schema_builds_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))

    text = out.read_text()
    assert "tokenAuth" in text
    assert "/api/customers/{id}/" in text


def test_schema_descriptions_are_the_apis_own(api):
    """A component without a docstring of its own must not inherit an implementation note (the fast
    path's mixin) as its description."""
    schema = api.get("/api/schema/?format=json").json()
    descriptions = {name: c.get("description", "") for name, c in schema["components"]["schemas"].items()}
    assert descriptions["Line"] == ""
    assert not [name for name, text in descriptions.items() if "DRF" in text or "serializer" in text.lower()]


def test_schema_documents_auth_and_error_statuses(api):
    schema = api.get("/api/schema/?format=json").json()

    assert schema["components"]["securitySchemes"]["tokenAuth"]["type"] == "http" or (
        schema["components"]["securitySchemes"]["tokenAuth"]["in"] == "header"
    )
    customer_detail = schema["paths"]["/api/customers/{id}/"]
    assert {"200", "401", "404"} <= set(customer_detail["get"]["responses"])
    assert {"200", "400", "401", "404", "409"} <= set(customer_detail["put"]["responses"])
    assert {"204", "401", "404", "409"} <= set(customer_detail["delete"]["responses"])
    assert {"200", "400", "429"} <= set(schema["paths"]["/api/login/"]["post"]["responses"])
    assert "401" not in schema["paths"]["/api/login/"]["post"]["responses"]


@pytest.mark.parametrize("path", ["/api/docs/", "/api/redoc/"])
def test_docs_are_served_from_local_assets(api, path):
    response = api.get(path)

    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/drf_spectacular_sidecar/" in html
    assert "cdn" not in html.lower()
    assert "//unpkg" not in html
    assert "jsdelivr" not in html


def test_swagger_ui_assets_are_served(client):
    response = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")

    assert response.status_code == 200


def test_admin_requires_staff(client, alice):
    client.force_login(alice)

    response = client.get("/admin/customers/customer/")

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_admin_lists_customers_for_staff(client, django_user_model, alice_customer):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "x")
    client.force_login(admin)

    response = client.get("/admin/customers/customer/?q=Acme")

    assert response.status_code == 200
    assert "Acme Corp" in response.content.decode()


def _run_check(env_extra: dict) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def test_production_refuses_the_development_secret_key():
    result = _run_check({"DJANGO_DEBUG": "0"})

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in result.stderr


def test_check_deploy_is_clean_with_the_deploy_variables():
    result = _run_check(
        {
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "k" * 20 + "-Zq8!x2@Lm#9vR$4tY%6wE^3uI&7oP*1aS(5dF)0gH",
            "DJANGO_SECURE_SSL_REDIRECT": "1",
            "DJANGO_SECURE_HSTS_SECONDS": "31536000",
            "DJANGO_SECURE_HSTS_PRELOAD": "1",
        }
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_malformed_boolean_setting_fails_loudly():
    result = _run_check({"DJANGO_DEBUG": "maybe"})

    assert result.returncode != 0
    assert "DJANGO_DEBUG must be a boolean" in result.stderr


def test_seed_demo_is_repeatable_and_leaves_consistent_books(capsys):
    from django.contrib.auth import get_user_model

    from invoices.models import Invoice

    call_command("seed_demo")
    call_command("seed_demo")  # a second run resets the password and adds nothing
    call_command("verify_ledger")

    demo = get_user_model().objects.get(username="demo")
    statuses = sorted(Invoice.objects.filter(organization=org(demo)).values_list("status", flat=True))
    assert statuses == ["draft", "overdue", "paid", "sent", "sent", "sent", "sent", "void"]
    out = capsys.readouterr().out
    assert "username 'demo', password '" in out
    assert "0 mismatches" in out
