"""Errors are JSON with a stable `code`, and say nothing of what failed inside."""

import pytest

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


@pytest.mark.parametrize("pk", ["0", "-1", "abc", "99999999999999999999999", "1.5", "%00"])
def test_hostile_ids_in_paths_are_404(alice_api, pk):
    for url in (f"/api/customers/{pk}/", f"/api/invoices/{pk}/", f"/api/payments/{pk}/"):
        assert alice_api.get(url).status_code == 404, url
