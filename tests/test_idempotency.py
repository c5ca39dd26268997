import datetime
from decimal import Decimal

import jsonschema
import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.models import IdempotencyKey
from invoices.models import Invoice, Line
from payments.models import Payment
from tests.factories import LinePayloadFactory
from tests.schema_helpers import parameter

pytestmark = pytest.mark.django_db


@pytest.fixture
def invoice(alice, make_invoice):
    return make_invoice(alice, amount="100.00")


def pay(api, target, amount="10.00", key="key-1", **extra):
    body = {"invoice": target.pk, "amount": amount, "method": "card", **extra}
    return api.post("/api/payments/", body, HTTP_IDEMPOTENCY_KEY=key)


def test_replay_returns_the_first_response_without_a_second_write(alice_api, invoice):
    first = pay(alice_api, invoice)
    replay = pay(alice_api, invoice)

    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json()
    assert replay["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert Payment.objects.count() == 1
    invoice.refresh_from_db()
    assert invoice.amount_paid == Decimal("10.00")


def test_replay_returns_the_original_outcome_even_after_the_invoice_changed(alice_api, invoice):
    first = pay(alice_api, invoice, amount="100.00")
    assert first.json()["invoice_status"] == "paid"

    replay = pay(alice_api, invoice, amount="100.00")  # a fresh request would be 409 now

    assert replay.status_code == 201
    assert replay.json() == first.json()


def test_same_key_with_another_body_is_422(alice_api, invoice):
    pay(alice_api, invoice, amount="10.00")

    response = pay(alice_api, invoice, amount="11.00")

    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert Payment.objects.count() == 1


def test_same_key_on_another_endpoint_is_422(alice_api, invoice):
    pay(alice_api, invoice, key="shared")

    response = alice_api.post(
        "/api/invoices/",
        {"customer": invoice.customer_id, "due_date": "2030-01-01"},
        HTTP_IDEMPOTENCY_KEY="shared",
    )

    assert response.status_code == 422
    assert Invoice.objects.count() == 1


def test_keys_are_scoped_per_user(alice_api, bob, bob_api, invoice, make_invoice):
    bobs_invoice = make_invoice(bob)

    assert pay(alice_api, invoice, key="same").status_code == 201
    assert pay(bob_api, bobs_invoice, key="same").status_code == 201
    assert Payment.objects.count() == 2


def test_a_refused_request_is_stored_and_replayed(alice_api, invoice):
    first = pay(alice_api, invoice, amount="100.01")
    assert first.status_code == 400

    replay = pay(alice_api, invoice, amount="100.01")

    assert replay.status_code == 400
    assert replay.json() == first.json()
    assert replay["Idempotent-Replayed"] == "true"
    assert not Payment.objects.exists()


def test_a_refusal_that_echoes_a_nul_character_is_stored_and_replayed(alice_api, invoice):
    # Found by the schema fuzzer on PostgreSQL: a 400 whose message quotes the client's value
    # ('"\u0000" is not a valid choice.') could not be stored as jsonb, and the request was a 500.
    # The stored response is JSON text, which escapes it.
    first = pay(alice_api, invoice, method="card\u0000")
    assert first.status_code == 400
    assert "method" in first.json()

    replay = pay(alice_api, invoice, method="card\u0000")

    assert replay.status_code == 400
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert not Payment.objects.exists()


def test_a_server_error_is_not_stored_so_the_retry_goes_through(alice_api, invoice, monkeypatch):
    import payments.views

    def crash(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(payments.views, "payment_record", crash)
    alice_api.raise_request_exception = False
    assert pay(alice_api, invoice).status_code == 500
    assert not IdempotencyKey.objects.exists()

    monkeypatch.undo()
    retry = pay(alice_api, invoice)

    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry
    assert Payment.objects.count() == 1


@pytest.mark.parametrize(("key", "status"), [("k" * 255, 201), ("k" * 256, 400), ("", 400)])
def test_key_length_is_limited_to_255(alice_api, invoice, key, status):
    response = pay(alice_api, invoice, key=key)

    assert response.status_code == status
    if status == 400:
        assert response.json()["code"] == "invalid_idempotency_key"
        assert not Payment.objects.exists()


def test_invoice_create_is_idempotent_with_its_lines(alice_api, alice_customer):
    body = {
        "customer": alice_customer.pk,
        "due_date": "2030-01-01",
        "lines": [LinePayloadFactory(quantity="2", unit_price="5.00")],
    }
    first = alice_api.post("/api/invoices/", body, HTTP_IDEMPOTENCY_KEY="inv-1")
    replay = alice_api.post("/api/invoices/", body, HTTP_IDEMPOTENCY_KEY="inv-1")

    assert first.status_code == replay.status_code == 201
    assert replay.json() == first.json()
    assert Invoice.objects.count() == 1
    assert Line.objects.count() == 1


def test_without_a_key_every_request_writes(alice_api, invoice):
    body = {"invoice": invoice.pk, "amount": "10.00", "method": "card"}
    alice_api.post("/api/payments/", body)
    alice_api.post("/api/payments/", body)

    assert Payment.objects.count() == 2


def test_purge_deletes_keys_older_than_the_retention(alice_api, invoice, capsys):
    pay(alice_api, invoice, key="old")
    pay(alice_api, invoice, key="new")
    IdempotencyKey.objects.filter(key="old").update(created_at=timezone.now() - datetime.timedelta(hours=25))

    call_command("purge_idempotency_keys")

    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]
    assert "1 idempotency key older than 24 h deleted" in capsys.readouterr().out


def test_schema_documents_the_header_and_422(api):
    schema = api.get("/api/schema/?format=json").json()

    for path in ("/api/payments/", "/api/invoices/"):
        operation = schema["paths"][path]["post"]
        assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in operation["parameters"])
        assert "422" in operation["responses"]


# --- the key's form -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "valid"), [("", False), (" k", False), ("k\x7f", False), ("k k", True)])
def test_idempotency_key_schema_is_what_the_server_accepts(alice_api, alice_customer, key, valid):
    schema = jsonschema.Draft7Validator(parameter("/api/invoices/", "post", "Idempotency-Key")["schema"])
    body = {"customer": alice_customer.pk, "due_date": "2030-01-31"}

    response = alice_api.post("/api/invoices/", body, HTTP_IDEMPOTENCY_KEY=key)

    assert schema.is_valid(key) is valid
    assert response.status_code == (201 if valid else 400)
