"""billing.db's prepared statements: on PostgreSQL (psycopg2) each statement kept compiled is
prepared once per connection and then sent as `EXECUTE name(values)`; the server runs the same
statement, the query log shows it as it is, a statement the server refuses to prepare is sent as it
is, and a transaction is never left worse for trying. Elsewhere nothing changes.
"""

import contextlib
import logging
from decimal import Decimal

import pytest
from django.db import (
    DatabaseError,
    DataError,
    InternalError,
    OperationalError,
    connection,
    connections,
    transaction,
)
from django.test.utils import CaptureQueriesContext

from billing import db
from customers.models import Customer
from invoices.locks import lock_invoice

pytestmark = pytest.mark.django_db

PREPARES = connection.vendor == "postgresql"
ODD = "100% 'sure' %s %(x)s \"q\" ; -- ünïcødé \\ \u2028 end"


class Sent:
    """What reaches the driver (a wrapper inside the prepared statements' one)."""

    def __init__(self):
        self.sql: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        self.sql.append(sql)
        return execute(sql, params, many, context)


def prepared_here() -> dict[str, str]:
    """This connection's prepared statements: name → statement text."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, statement FROM pg_prepared_statements")
        return dict(cursor.fetchall())


def wrapper():
    return next((w for w in connection.execute_wrappers if getattr(w, "billing_prepared", False)), None)


def new_customer(org, name) -> Customer:
    customer = Customer(organization=org, name=name)
    customer.save()  # an owned model's insert: kept (billing.db.insert_compiled)
    return customer


def test_a_kept_statement_is_prepared_once_and_executed_with_its_values(alice_org):
    connection.ensure_connection()
    if not PREPARES:
        assert wrapper() is None  # SQLite: statements go as they are
        new_customer(alice_org, ODD)
        assert Customer.objects.get(organization=alice_org).name == ODD
        return
    sent, prepares = Sent(), []
    real = db._Prepared._prepare

    def spy(self, kept):
        prepares.append(kept.name)
        return real(self, kept)

    wrapper().names.clear()  # as on a new connection (DEALLOCATE keeps the server in step)
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")
    with pytest.MonkeyPatch.context() as patch, connection.execute_wrapper(sent):
        patch.setattr(db._Prepared, "_prepare", spy)
        first = new_customer(alice_org, ODD)
        second = new_customer(alice_org, "Second")
    insert = next(sql for sql, kept in db._KEPT.items() if sql.startswith('INSERT INTO "customers_customer"'))
    kept = db._KEPT[insert]
    assert prepares == [kept.name]  # prepared once, for both
    assert sent.sql == [kept.execute, kept.execute]  # the PREPARE is not a statement of the log
    assert kept.name in prepared_here()
    assert kept.prepare in prepared_here()[kept.name]  # the server's text: the query that prepared it
    assert "$1" in kept.prepare
    assert "%s" not in kept.prepare
    assert list(Customer.objects.filter(organization=alice_org).order_by("pk").values_list("pk", "name")) == [
        (first.pk, ODD),
        (second.pk, "Second"),
    ]


def test_the_query_log_shows_the_statement_with_its_values_not_its_execute(alice_org):
    new_customer(alice_org, "Warm")  # prepared by now
    with CaptureQueriesContext(connection) as ctx:
        customer = new_customer(alice_org, ODD)
    (logged,) = [q["sql"] for q in ctx.captured_queries]
    assert logged.startswith('INSERT INTO "customers_customer"')
    assert "EXECUTE" not in logged
    if PREPARES:
        insert = next(sql for sql in db._KEPT if sql.startswith('INSERT INTO "customers_customer"'))
        assert "'100% ''sure'' %s %(x)s \"q\" ; -- ünïcødé \\ \u2028 end'" in logged
        assert db._KEPT[insert].execute not in logged
    assert customer.pk is not None


@pytest.mark.django_db(transaction=True)
def test_a_locking_read_runs_prepared_and_still_locks(alice, alice_customer, make_invoice):
    invoice = make_invoice(alice, alice_customer)  # committed: another connection sees it
    other = connections.create_connection("default")
    try:
        for _ in range(7):  # past the five runs after which the server may keep a generic plan
            with transaction.atomic():
                locked = lock_invoice(organization_id=invoice.organization_id, invoice_id=invoice.pk)
                assert (locked.pk, locked.total) == (invoice.pk, Decimal("100.00"))
                if PREPARES:  # SQLite has no row locks (its IMMEDIATE transactions lock the file)
                    sql = "SELECT id FROM invoices_invoice WHERE id = %s FOR UPDATE NOWAIT"
                    with (
                        other.cursor() as cursor,
                        pytest.raises(OperationalError, match="could not obtain lock"),
                    ):
                        cursor.execute(sql, [invoice.pk])
        if PREPARES:
            assert any("FOR UPDATE" in text and "$1" in text for text in prepared_here().values())
    finally:
        other.close()


def test_prepared_statements_outlive_a_rollback(alice_org):
    if not PREPARES:
        return
    new_customer(alice_org, "Warm")
    insert = next(sql for sql in db._KEPT if sql.startswith('INSERT INTO "customers_customer"'))
    name = db._KEPT[insert].name
    with contextlib.suppress(RuntimeError), transaction.atomic():
        new_customer(alice_org, "Rolled back")
        raise RuntimeError
    assert name in prepared_here()  # PREPARE is not transactional: it outlives the rollback
    sent = Sent()
    with connection.execute_wrapper(sent):
        new_customer(alice_org, "After")
    assert sent.sql == [db._KEPT[insert].execute]
    names = Customer.objects.filter(organization=alice_org).order_by("pk").values_list("name", flat=True)
    assert list(names) == ["Warm", "After"]


@contextlib.contextmanager
def kept_on_another_connection(sql: str):
    """`sql` kept for the test, and a connection of its own (autocommit) to send it on, so that
    closing it leaves the test's transaction alone; both forgotten at the end."""
    other = connections.create_connection("default")
    try:
        yield other, db.keep(sql)
    finally:
        other.close()
        db._KEPT.pop(sql, None)


def test_a_new_database_connection_prepares_them_again(alice_org):
    if not PREPARES:
        return
    with kept_on_another_connection(
        "SELECT count(*) FROM customers_customer WHERE organization_id = %s AND name <> %s"
    ) as (other, sql):
        for _ in range(3):
            with other.cursor() as cursor:
                cursor.execute(sql, [alice_org.pk, ODD])
                assert cursor.fetchone() == (0,)
                cursor.execute(sql, [alice_org.pk, "x"])  # the second time: EXECUTE, no PREPARE
                assert cursor.fetchone() == (0,)
                cursor.execute("SELECT name FROM pg_prepared_statements")
                assert [name for (name,) in cursor.fetchall()] == [db._KEPT[sql].name]
                assert (
                    other.connection.info.transaction_status
                    == other.Database.extensions.TRANSACTION_STATUS_IDLE
                )
            other.close()  # the next turn opens a new database connection, with nothing prepared
        wrappers = [w for w in other.execute_wrappers if getattr(w, "billing_prepared", False)]
        assert len(wrappers) == 1  # installed once, whatever the reconnects


def test_a_statement_the_server_will_not_prepare_is_sent_as_it_is_and_the_transaction_lives_on(
    alice_org, caplog
):
    sql = db.keep("SELECT %s + %s")  # the server cannot tell which + this is: PREPARE refuses it
    try:
        with transaction.atomic():
            customer = new_customer(alice_org, "In the transaction")
            with caplog.at_level(logging.WARNING, logger="billing.db"), connection.cursor() as cursor:
                cursor.execute(sql, [2, 3])
                assert cursor.fetchone() == (5,)
                cursor.execute(sql, [4, 5])  # not tried again
                assert cursor.fetchone() == (9,)
            # The transaction is as it was: what it wrote is there, and it goes on.
            assert Customer.objects.filter(pk=customer.pk).exists()
            new_customer(alice_org, "After")
        assert Customer.objects.filter(organization=alice_org).count() == 2
        if PREPARES:
            assert db._KEPT[sql].preparable is False
            assert [r.getMessage() for r in caplog.records].count(
                next(r.getMessage() for r in caplog.records if "not prepared" in r.getMessage())
            ) == 1
            assert db._KEPT[sql].name not in prepared_here()
    finally:
        db._KEPT.pop(sql, None)


def test_in_a_failed_transaction_the_statement_fails_as_it_would_have(alice_org):
    if not PREPARES:
        return
    sql = db.keep("SELECT count(*) FROM customers_customer WHERE name = %s")
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            with contextlib.suppress(DataError):
                cursor.execute("SELECT 1 / 0")  # the transaction is lost on the server
            with pytest.raises(InternalError, match="current transaction is aborted"):
                cursor.execute(sql, ["x"])
            transaction.set_rollback(True)
        assert db._KEPT[sql].preparable  # not the statement's fault
    finally:
        db._KEPT.pop(sql, None)


def test_a_held_kept_insert_rides_as_its_execute_with_the_next_statement(alice_org):
    sent = Sent()
    with db.held_writes(), connection.execute_wrapper(sent):
        customer = Customer(organization=alice_org, name=ODD)
        with db.holding():
            customer.save()
        before = list(sent.sql)
        seen = list(Customer.objects.filter(organization=alice_org).values_list("name", flat=True))
    assert seen == [ODD]
    if PREPARES:
        assert before == []
        (carrier,) = sent.sql
        held, read = carrier.split(";\n")
        (insert,) = [sql for sql, kept in db._KEPT.items() if held.startswith(f"EXECUTE {kept.name}(")]
        assert insert.startswith('INSERT INTO "customers_customer"')
        assert "RETURNING" not in insert
        assert "'100%% ''sure''" in held  # as the driver interpolates it: % doubled in a carried text
        assert read.startswith("SELECT")


def test_off_by_setting_no_statement_is_prepared(settings, alice_org):
    settings.DATABASE_PREPARED_STATEMENTS = False
    other = connections.create_connection("default")
    try:
        other.ensure_connection()
        assert not [w for w in other.execute_wrappers if getattr(w, "billing_prepared", False)]
    finally:
        other.close()


def test_a_request_sends_its_kept_statements_prepared_and_answers_the_same(alice_api, alice_customer):
    body = {
        "customer": alice_customer.pk,
        "due_date": "2030-01-31",
        "lines": [{"description": "Design", "quantity": "2", "unit_price": "150.00", "tax_rate": "20"}],
    }
    sent = Sent()
    with connection.execute_wrapper(sent):
        first = alice_api.post("/api/invoices/", body, format="json", HTTP_IDEMPOTENCY_KEY="p-1")
        second = alice_api.post("/api/invoices/", body, format="json", HTTP_IDEMPOTENCY_KEY="p-2")
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["total"] == second.json()["total"] == "360.00"
    if PREPARES:
        executed = [sql for sql in sent.sql if sql.startswith("EXECUTE billing_")]
        assert executed, sent.sql
        # Every prepared statement sent is a kept one, prepared on this connection from its text.
        here = prepared_here()
        for sql in executed:
            name = sql.split()[1].split("(")[0]
            assert name in here


def _probe(other, sql, key):
    with other.cursor() as cursor:
        cursor.execute(sql, [key])
        return cursor.fetchall()


@pytest.mark.django_db(transaction=True)  # the probe table is dropped by another connection
def test_a_connection_whose_statements_the_server_lost_or_cannot_run_is_retired_not_broken():
    if not PREPARES:
        return
    with kept_on_another_connection("SELECT name FROM billing_prepared_probe WHERE id = %s") as (
        other,
        sql,
    ):
        try:
            with other.cursor() as cursor:
                cursor.execute("DROP TABLE IF EXISTS billing_prepared_probe")
                cursor.execute("CREATE TABLE billing_prepared_probe (id int PRIMARY KEY, name varchar(10))")
                cursor.execute("INSERT INTO billing_prepared_probe VALUES (1, 'one'), (2, 'two')")
            (prepared,) = [w for w in other.execute_wrappers if getattr(w, "billing_prepared", False)]
            assert _probe(other, sql, 1) == [("one",)]
            assert db._KEPT[sql].name in prepared.names
            # A migration changes the type of a column the statement returns: the prepared one cannot run.
            with other.cursor() as cursor:
                cursor.execute("ALTER TABLE billing_prepared_probe ALTER COLUMN name TYPE text")
            assert _probe(other, sql, 2) == [("two",)]  # no transaction: sent again, as it is
            assert prepared.retired
            assert other.close_at == 0  # replaced at the end of the request
            assert _probe(other, sql, 1) == [("one",)]  # as it is, until then
            other.close_if_unusable_or_obsolete()
            assert other.connection is None
            # A new connection prepares again.
            assert _probe(other, sql, 1) == [("one",)]
            assert not prepared.retired
            assert db._KEPT[sql].name in prepared.names
            # A pooler (or DISCARD ALL) drops what a connection prepared, and it is found out in a
            # transaction: that statement fails as any would (the transaction is lost on the server), the
            # connection is retired and the next transaction sends the statement as it is.
            main, close_at = wrapper(), connection.close_at
            try:
                assert _probe(connection, sql, 1) == [("one",)]
                assert db._KEPT[sql].name in main.names
                with connection.cursor() as cursor:
                    cursor.execute("DEALLOCATE ALL")
                with pytest.raises(DatabaseError, match="does not exist"), transaction.atomic():
                    _probe(connection, sql, 1)
                assert main.retired
                assert connection.close_at == 0
                with transaction.atomic():
                    assert _probe(connection, sql, 2) == [("two",)]
            finally:  # the test's connection goes on as a new one would
                main.retired, main.names, connection.close_at = False, set(), close_at
            assert db._KEPT[sql].preparable  # not the statement's fault

        finally:
            with other.cursor() as cursor:
                cursor.execute("DROP TABLE IF EXISTS billing_prepared_probe")


def test_a_statement_refused_in_autocommit_is_sent_as_it_is():
    if not PREPARES:
        return
    with kept_on_another_connection("SELECT %s + %s AS refused_in_autocommit") as (other, sql):
        with other.cursor() as cursor:
            cursor.execute(sql, [2, 3])
            assert cursor.fetchone() == (5,)
        assert db._KEPT[sql].preparable is False
        assert other.connection.info.transaction_status == other.Database.extensions.TRANSACTION_STATUS_IDLE
