"""billing.db.held_writes: INSERTs held and sent with the next statement, in one round trip.

On PostgreSQL (psycopg2) a held INSERT costs no round trip of its own and keeps its place: every
statement made after it sees it, a savepoint covers it, an error leaving the block discards it with
the transaction. Elsewhere every statement is sent as it comes. Round trips are counted by a wrapper
inside the hold's (what reaches the driver).
"""

import contextlib

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from billing import db
from customers.models import Customer

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def as_they_are(monkeypatch):
    """The kept statements as they are, not as the EXECUTE of their prepared statement (that they
    are prepared, and run the same so, is tests/test_prepared.py's)."""
    monkeypatch.setattr(db, "PREPARED", False)


HOLDS = connection.vendor == "postgresql"
# A name that the driver's interpolation would trip over if the carried text were not escaped, and
# that a quoting slip would break.
ODD = "100% 'sure' %s %(x)s \"q\" ; -- ünïcødé \\ \u2028 end"


class RoundTrips:
    """What reaches the driver from inside a `held_writes` block (its wrapper is the outer one)."""

    def __init__(self):
        self.sent: list[str] = []

    def __call__(self, execute, sql, params, many, context):
        self.sent.append(sql)
        return execute(sql, params, many, context)


def held_customer(org, name="Held") -> Customer:
    customer = Customer(organization=org, name=name)
    with db.holding():
        customer.save()
    return customer


def names(org) -> list[str]:
    return list(Customer.objects.filter(organization=org).order_by("pk").values_list("name", flat=True))


def test_a_held_insert_goes_with_the_next_statement_which_sees_it(alice_org):
    trips = RoundTrips()
    with db.held_writes(), connection.execute_wrapper(trips):
        first = held_customer(alice_org, "First")
        second = held_customer(alice_org, ODD)
        before_the_read = list(trips.sent)
        seen = names(alice_org)  # the read carries both inserts, ahead of it
    assert seen == ["First", ODD]
    if HOLDS:
        assert before_the_read == []
        assert (first.pk, second.pk) == (None, None)  # nothing comes back before the row is sent
        (carrier,) = trips.sent
        assert carrier.startswith('INSERT INTO "customers_customer"')
        assert carrier.count("INSERT") == 2
    else:
        assert None not in (first.pk, second.pk)
        assert len(trips.sent) == 3
    assert names(alice_org) == ["First", ODD]


def sent_alone(captured) -> list[str]:
    # As tests/test_query_counts.py counts round trips: a held statement is logged without text.
    return [q["sql"] for q in captured.captured_queries if q["sql"] is not None]


def test_what_no_statement_carried_is_sent_at_the_end_of_the_block(alice_org):
    with CaptureQueriesContext(connection) as captured, db.held_writes():
        held_customer(alice_org, ODD)
        held_customer(alice_org, "Second")
    assert len(captured) == (3 if HOLDS else 2)  # held: two logged without text, then the one sent
    assert len(sent_alone(captured)) == (1 if HOLDS else 2)
    assert names(alice_org) == [ODD, "Second"]


@pytest.mark.parametrize("with_params", [True, False])
def test_the_carried_text_survives_the_carrying_statements_interpolation(alice_org, with_params):
    with db.held_writes():
        held_customer(alice_org, ODD)
        with connection.cursor() as cursor:
            if with_params:  # the driver interpolates the whole query: the carried % are doubled
                cursor.execute("SELECT count(*) FROM customers_customer WHERE name = %s", [ODD])
            else:  # nothing is interpolated: the carried text goes as it is
                literal = ODD.replace("'", "''")
                cursor.execute(f"SELECT count(*) FROM customers_customer WHERE name = '{literal}'")  # noqa: S608
            (found,) = cursor.fetchone()
    assert found == 1
    assert names(alice_org) == [ODD]


class Refused(Exception):
    pass


def hold_then_fail(org, *, before: bool = False) -> None:
    with transaction.atomic():
        if before:
            Customer.objects.create(organization=org, name="Before")
        with db.held_writes():
            held_customer(org)
            raise Refused


def test_an_error_leaving_the_block_discards_what_it_holds(alice_org):
    with pytest.raises(Refused):
        hold_then_fail(alice_org)
    assert names(alice_org) == []
    # A block inside a transaction that the error leaves too: nothing of it either.
    with pytest.raises(Refused):
        hold_then_fail(alice_org, before=True)
    assert names(alice_org) == []


def test_an_error_caught_inside_the_transaction_still_rolls_it_back(alice_org):
    # The transaction enclosing a block its error left is rolled back whole, "Before" included.
    # savepoint=False: the block's error marks the enclosing transaction for rollback, so the held
    # rows cannot be lost while the rest commits.
    with transaction.atomic():
        Customer.objects.create(organization=alice_org, name="Before")
        with contextlib.suppress(Refused), db.held_writes():
            held_customer(alice_org)
            raise Refused
        assert transaction.get_rollback()
        with pytest.raises(transaction.TransactionManagementError):
            names(alice_org)
    assert names(alice_org) == []


def hold_in_a_refused_savepoint(org) -> None:
    with transaction.atomic():
        held_customer(org, "Rolled back")
        Customer.objects.create(organization=org, name="")  # refused by a CHECK


def test_a_savepoint_covers_the_held_inserts_made_inside_it(alice_org):
    with db.held_writes():
        held_customer(alice_org, "Kept")
        with pytest.raises(IntegrityError):
            hold_in_a_refused_savepoint(alice_org)
        held_customer(alice_org, "After")
    assert names(alice_org) == ["Kept", "After"]


def test_a_failing_held_insert_fails_the_statement_that_carries_it(alice_org):
    # Hold only rows no constraint refuses: here one is, and the read carrying it fails.
    def hold_a_refused_row_then_read():
        with transaction.atomic(), db.held_writes():
            held_customer(alice_org, "")
            names(alice_org)

    with pytest.raises(IntegrityError):
        hold_a_refused_row_then_read()
    assert names(alice_org) == []


def test_a_server_side_cursor_and_executemany_get_the_held_ones_first(alice_org):
    trips = RoundTrips()
    with db.held_writes(), connection.execute_wrapper(trips):
        held_customer(alice_org, "A")
        streamed = [c.name for c in Customer.objects.filter(organization=alice_org).iterator(chunk_size=10)]
        held_customer(alice_org, "B")
        with connection.cursor() as cursor:
            cursor.executemany(
                "UPDATE customers_customer SET phone = %s WHERE name = %s", [("1", "A"), ("2", "B")]
            )
    assert streamed == ["A"]
    assert list(
        Customer.objects.filter(organization=alice_org).order_by("pk").values_list("name", "phone")
    ) == [("A", "1"), ("B", "2")]
    if HOLDS:  # each held insert sent on its own, right before the statement that cannot carry it
        assert [sql.split()[0] for sql in trips.sent] == ["INSERT", "SELECT", "INSERT", "UPDATE"]


def test_outside_holding_and_outside_a_block_every_insert_is_sent_and_returns_its_id(alice_org):
    trips = RoundTrips()
    with db.held_writes(), connection.execute_wrapper(trips):
        plain = Customer.objects.create(organization=alice_org, name="Plain")
    assert plain.pk is not None
    assert len(trips.sent) == 1
    with db.holding():  # no block: a no-op
        alone = Customer.objects.create(organization=alice_org, name="Alone")
    assert alone.pk is not None
    assert names(alice_org) == ["Plain", "Alone"]


def test_nested_blocks_hold_into_the_outer_one(alice_org):
    with CaptureQueriesContext(connection) as captured, db.held_writes():
        with db.held_writes():
            held_customer(alice_org, "Inner")
        held_customer(alice_org, "Outer")
    assert len(sent_alone(captured)) == (1 if HOLDS else 2)
    assert names(alice_org) == ["Inner", "Outer"]


def test_a_block_whose_transaction_must_roll_back_sends_nothing_at_its_end(alice_org):
    # Leaving the block raises nothing: it sends nothing into a transaction that is rolled back.
    with transaction.atomic(), db.held_writes():
        held_customer(alice_org, "Held")
        with contextlib.suppress(Refused), transaction.atomic(savepoint=False):
            raise Refused
        assert connection.needs_rollback
    assert names(alice_org) == []
