"""The one-row INSERTs and the UPDATEs `save()` sends from a statement compiled once
(billing.db.insert_compiled and update_compiled, billing.models) are the ORM's own: for every insert
and update of a day's work through the API, the statement sent is the one the ORM compiles for that
very object, text and values, on both databases."""

import datetime
import functools
from decimal import Decimal

import pytest
from django.db import connection, connections
from django.db.models.sql import InsertQuery, UpdateQuery
from django.utils import timezone

from billing import db
from billing.models import CompiledInsertModel

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True, params=[False, True], ids=["as-they-are", "prepared"])
def prepared(request, monkeypatch):
    """Each test twice: the kept statements sent as they are, and (on PostgreSQL) as the EXECUTE of
    their prepared statement (billing.db), which the capture below reads back as the statement."""
    monkeypatch.setattr(db, "PREPARED", request.param)
    return request.param and connection.vendor == "postgresql"


FROZEN = datetime.datetime(2026, 12, 3, 9, 30, 0, 123456, tzinfo=datetime.UTC)


def _orm_statement(obj, using, fields, returning_fields, *, adapted=True):
    """What `Model._do_insert` would send for `obj`, compiled now by the ORM."""
    query = InsertQuery(type(obj))
    query.insert_values(fields, [obj], raw=False)
    compiler = query.get_compiler(using=using)
    compiler.returning_fields = returning_fields
    [(sql, params)] = compiler.as_sql()
    return sql, _values(params) if adapted else params


def _values(params) -> list:
    # PostgreSQL's JSON parameters are adapter objects (equal by what they wrap, not by identity).
    return [getattr(value, "adapted", value) for value in params]


def _orm_update(obj, using, pk_val, values, expected_version):
    """What `Model._do_update` (with OwnedModel's version check) would send, compiled now by the ORM."""
    base = type(obj)._base_manager.using(using).filter(pk=pk_val)
    if expected_version is not None:
        base = base.filter(version=expected_version)
    query = base.query.chain(UpdateQuery)
    query.add_update_fields(values)
    query.annotations = {}
    sql, params = query.get_compiler(using).as_sql()
    return sql, _values(params)


def _sending(call, *args):
    """`call(*args)`'s result and the statements it sent (text, values)."""
    sent: list[tuple[str, list]] = []

    def capture(execute, sql, params, many, context):
        sent.append((db._EXECUTED.get(sql, sql), _values(params)))  # an EXECUTE: the statement it runs
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        return call(*args), sent


@pytest.fixture
def checked(monkeypatch, prepared):
    """Every compiled insert and update, checked against the ORM's statement for the same object;
    returns what was seen ("Model", "update Model")."""
    seen: list[str] = []
    real_insert, real_update = db.insert_compiled, db.update_compiled
    monkeypatch.setattr(timezone, "now", lambda: FROZEN)  # auto_now(_add) the same in both

    def check_insert(obj, using, fields, returning_fields, raw, **kwargs):
        held = db._held(connections[using])
        before = len(held.statements) if held is not None else 0
        returned, sent = _sending(
            functools.partial(real_insert, **kwargs), obj, using, fields, returning_fields, raw
        )
        if returned is not None:
            expected = _orm_statement(obj, using, fields, returning_fields)
            if held is not None and held.holding:  # held (billing.db.held_writes): nothing sent yet
                assert (sent, returned, returning_fields) == ([], [], []), type(obj).__name__
                with connections[using].cursor() as cursor:
                    sql, params = _orm_statement(obj, using, fields, returning_fields, adapted=False)
                    if prepared:  # held as its EXECUTE (the statement, prepared: tests/test_prepared.py)
                        sql = db._KEPT[sql].execute
                    literal = cursor.cursor.mogrify(sql, params).decode()
                assert held.statements[before:] == [literal], type(obj).__name__
                seen.append(f"held {type(obj).__name__}")
                return returned
            assert sent == [expected], type(obj).__name__
            assert returned == [] if not returning_fields else returned[0][0] is not None
            seen.append(type(obj).__name__)
        return returned

    def check_update(obj, using, pk_val, values, expected_version):
        updated, sent = _sending(real_update, obj, using, pk_val, values, expected_version)
        if updated is not None:
            assert sent == [_orm_update(obj, using, pk_val, values, expected_version)], type(obj).__name__
            assert updated is True
            seen.append(f"update {type(obj).__name__}")
        return updated

    monkeypatch.setattr(db, "insert_compiled", check_insert)
    monkeypatch.setattr(db, "update_compiled", check_update)
    return seen


def test_every_insert_of_a_days_work_sends_the_orms_own_statement(checked, alice, alice_api, settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    hook = alice_api.post(
        "/api/webhook-endpoints/", {"url": "https://hooks.example.com/in", "events": ["*"]}, format="json"
    )
    assert hook.status_code == 201, hook.content
    customer = alice_api.post(
        "/api/customers/", {"name": 'Zoë "O\'Brien" <b>', "email": "ap@zoe.example"}, format="json"
    )
    assert customer.status_code == 201, customer.content
    body = {
        "customer": customer.json()["id"],
        "due_date": "2030-01-31",
        "notes": "Merci — à bientôt",
        "lines": [{"description": "Design", "quantity": "2", "unit_price": "150.00", "tax_rate": "20"}],
    }
    invoice = alice_api.post("/api/invoices/", body, format="json", HTTP_IDEMPOTENCY_KEY="c-1")
    assert invoice.status_code == 201, invoice.content
    invoice_id = invoice.json()["id"]
    assert alice_api.post(f"/api/invoices/{invoice_id}/send/", {}, format="json").status_code == 200
    payment = {"invoice": invoice_id, "amount": "100.00", "method": "card"}
    response = alice_api.post("/api/payments/", payment, format="json", HTTP_IDEMPOTENCY_KEY="p-1")
    assert response.status_code == 201, response.content
    assert alice_api.post(f"/api/invoices/{invoice_id}/remind/", {}, format="json").status_code in (
        200,
        201,
        202,
    )
    patched = alice_api.patch(
        f"/api/invoices/{invoice_id}/", {"notes": "Paid in part — merci"}, format="json"
    )
    assert patched.status_code == 200, patched.content
    changed = alice_api.patch(f"/api/customers/{customer.json()['id']}/", {"name": "Zoë O."}, format="json")
    assert changed.status_code == 200, changed.content
    endpoint = alice_api.patch(
        f"/api/webhook-endpoints/{hook.json()['id']}/", {"description": "ERP"}, format="json"
    )
    assert endpoint.status_code == 200, endpoint.content
    assert {
        "WebhookEndpoint",
        "Customer",
        "IdempotencyKey",
        "Invoice",
        "InvoiceStatusChange",
        "Document",
        "OutboundEmail",
        "Job",
        "Payment",
        "update Invoice",
        "update Customer",
        "update WebhookEndpoint",
    } <= set(checked)


def test_a_value_that_is_an_expression_goes_through_the_orm(alice_org):
    from django.db.models.functions import Now

    from customers.models import Customer

    customer = Customer(organization=alice_org, name="Acme")
    fields = [f for f in Customer._meta.local_concrete_fields if not f.primary_key]
    (pk,) = Customer._meta.db_returning_fields
    [(first,)] = db.insert_compiled(customer, "default", fields, [pk], False)  # plain values: kept
    assert Customer.objects.filter(pk=first, name="Acme").exists()
    customer.name = Now()
    assert db.insert_compiled(customer, "default", fields, [pk], False) is None  # nothing sent


def test_the_models_every_request_writes_keep_their_insert():
    from billing.models import IdempotencyKey, OwnedModel
    from invoices.models import InvoiceStatusChange

    for model in (OwnedModel, IdempotencyKey, InvoiceStatusChange):
        assert issubclass(model, CompiledInsertModel)


def test_money_keeps_its_places_through_the_kept_statement(alice_org, make_invoice, alice):
    from payments.models import Payment
    from payments.services import payment_record

    invoice = make_invoice(alice, amount="10.00")
    payment = payment_record(
        organization=alice_org, invoice_id=invoice.pk, amount=Decimal("2.5"), method="card"
    )
    assert payment.pk is not None
    assert Payment.objects.get(pk=payment.pk).amount == Decimal("2.50")
