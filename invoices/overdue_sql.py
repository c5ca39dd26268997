"""mark_overdue's events in its own statement (PostgreSQL): the moved invoices' API representation
built by the database.

A bulk move records an `invoice.overdue` event for each invoice it moves, carrying the invoice as
the API shows it right after (`InvoiceDetailSerializer` with the events' context: lines, payments,
links on PUBLIC_URL). Built in Python that is a read of the invoices with their lines and payments
and two serializers per invoice: some 0.8 ms each, minutes for the 200,000 invoices a large
deployment moves at once, all inside the move's transaction. Here the same representation is one
expression of the move's statement (`jsonb_build_object` of the row the UPDATE returns, its customer
and creator read by id, its lines and payments aggregated), so the move, its history, its events,
their deliveries and their job are one statement per time zone, whatever the number of invoices:
about 6x faster than the Python path on the same data (bench/README.md, "mark_overdue and its
events"). The related rows are read by scalar subqueries, not joins: the filter on the payments
(below) makes the planner expect a handful of rows, and a join planned for a handful (a nested loop
over the customers) is quadratic over 60,000.

Every value is written as the serializers write it (tests/test_overdue_sql.py pins the two equal,
invoice by invoice, for every kind of value: currencies of 0, 2 and 3 places, unit prices of up to
4, payments by members and by API keys, timestamps with and without microseconds, text with quotes
and non-ASCII):

- an amount: with exactly its currency's places (`billing.money.format_amount`), a unit price with
  its currency's places or as many as it has up to 4 (`format_price`);
- a quantity and a tax rate: with the column's places (DRF's DecimalField);
- a date-time: ISO 8601 in the current time zone with its offset ("Z" for UTC), microseconds only
  when there are some (DRF's, as `datetime.isoformat` writes them) — so this path is taken only when
  the current time zone is an IANA zone PostgreSQL knows by the same name;
- `available_actions` and `previous_attributes`: what the model gives an overdue invoice with and
  without money received (the only state they depend on between sent and overdue), computed here
  from `Invoice.available_actions` once per statement.
"""

from __future__ import annotations

import datetime
import functools
import json
import zoneinfo

from django.conf import settings
from django.db import connection
from django.utils import timezone

from billing.currencies import DEFAULT_PLACES, RECORDED_MINOR_UNITS
from events.services import events_insert_ctes, previous_attributes
from invoices.models import Invoice, InvoiceStatus, Line
from users.models import ApiKey, User

OVERDUE = "invoice.overdue"


def overdue_with_events_sql(due, now: datetime.datetime) -> tuple[str, list] | None:
    """The statement that moves `due` (a queryset of invoices) to overdue and records an
    `invoice.overdue` event for each invoice moved, with their deliveries and job. It returns how
    many moved, and the ids of those whose event it could not write (None if none): an invoice paid
    in part while the statement waited for its lock, whose new payment the statement's snapshot
    does not show. Their events are the caller's to record (in Python, in the same transaction: the
    statement holds their locks, so what a read shows then is how they were moved).

    None where it cannot be one statement (not PostgreSQL, another task backend, a current time
    zone PostgreSQL does not know by its name): the caller then records the events in Python."""
    if connection.vendor != "postgresql":
        return None
    zone = _known_zone()
    if zone is None:
        return None
    events = events_insert_ctes(type=OVERDUE, source="represented", order="organization_id, object_id")
    if events is None:
        return None
    events_sql, events_params = events
    move_sql, move_params = due.overdue_ctes(now=now)  # the transition's check included
    represented_sql, represented_params = _represented(zone)
    # Without JIT compilation: for an expression this size PostgreSQL's JIT spends more compiling
    # than it saves (35 % of the statement's time with it on). SET LOCAL, in the same round trip:
    # until the transaction ends (the zone's own, or the caller's if it runs inside one).
    sql = (
        f"SET LOCAL jit = off; WITH {move_sql}, {represented_sql}, {events_sql} "  # noqa: S608
        "SELECT (SELECT count(*) FROM moved), "
        "(SELECT array_agg(id) FROM moved WHERE id NOT IN (SELECT object_id FROM inserted))"
    )
    return sql, [*move_params, *represented_params, *events_params]


_ZONES_KNOWN: dict[tuple[str, str], bool] = {}


def _known_zone() -> str | None:
    """The current time zone's IANA name if PostgreSQL has it too, by that name and not also as an
    abbreviation (asked once per zone and database; UTC is never asked), else None.

    `AT TIME ZONE 'CET'` takes CET as the abbreviation, a fixed +01:00, where Python's CET zone
    has summer time (and so do EET, MET and WET); which names are abbreviations depends on the
    server's `timezone_abbreviations`, so any name that is one takes the Python path. The rules
    are the database server's tzdata: a server whose tzdata is older or newer than the app's
    can differ for a zone whose rules changed between the two."""
    current = timezone.get_current_timezone()
    name = getattr(current, "key", None)
    if not isinstance(current, zoneinfo.ZoneInfo) or not name:
        return None
    if name == "UTC":
        return name
    key = (connection.alias, name)
    if key not in _ZONES_KNOWN:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = %s) "
                "AND NOT EXISTS (SELECT 1 FROM pg_timezone_abbrevs WHERE abbrev = %s)",
                [name, name],
            )
            _ZONES_KNOWN[key] = cursor.fetchone()[0]
    return name if _ZONES_KNOWN[key] else None


def _represented(zone: str) -> tuple[str, list]:
    """`represented`: for each moved invoice whose payments are those of the row moved, its
    organization, id, representation (`object`) and previous attributes (`previous`). (It is read
    once, by the events' insert, so PostgreSQL inlines it: no representation is kept in a temporary
    table.)"""
    actions = {}
    previous = {}
    for received in (False, True):  # what the model says with and without money received
        after = Invoice(status=InvoiceStatus.OVERDUE, amount_paid=1 if received else 0)
        before = Invoice(status=InvoiceStatus.SENT, amount_paid=after.amount_paid)
        actions[received] = after.available_actions
        previous[received] = previous_attributes(
            {"status": before.status, "available_actions": before.available_actions},
            {"status": after.status, "available_actions": after.available_actions},
        )
    from invoices.serializers import _ARGUMENT, _url_of  # the links as the serializers make them

    base = settings.PUBLIC_URL
    hosted = _url_of("hosted-invoice", _ARGUMENT).split(_ARGUMENT)
    pdf = _url_of("invoice-pdf", _ARGUMENT).split(_ARGUMENT)
    # As `billing.money` reads them (`minor_units`): the recorded places, withdrawn codes included.
    places = {code: n for code, n in RECORDED_MINOR_UNITS.items() if n != DEFAULT_PLACES}
    params = [  # in the order of the statement's text
        json.dumps(actions[False]),
        json.dumps(actions[True]),
        base + hosted[0],
        hosted[1],
        base + pdf[0],
        pdf[1],
        json.dumps(previous[False]),
        json.dumps(previous[True]),
        json.dumps(places),
        DEFAULT_PLACES,
        zone,
    ]
    return _represented_sql(), params


def _money(value: str, places: str) -> str:
    """`billing.money.format_amount`: the amount with exactly `places` places, or, if it does not fit
    them (no stored amount does: the database refuses it), with those it has."""
    return f"CASE WHEN round({value}, {places}) = {value} THEN round({value}, {places})::text ELSE trim_scale({value})::text END"


def _price(value: str, places: str) -> str:
    """`billing.money.format_price`: with the currency's places, or with as many as it has up to 4."""
    shown = f"least(greatest({places}, scale(trim_scale({value}))), 4)"
    return _money(value, shown)


def _decimal(value: str, places: int) -> str:
    """DRF's DecimalField: quantized to the field's places."""
    return f"round({value}, {int(places)})::text"


def _timestamp(value: str) -> str:
    """DRF's date-time: ISO 8601 in the current time zone (`m.zone`), microseconds only when there
    are some, its UTC offset as `datetime.isoformat` writes it (+05:30, -03:00, seconds only when
    there are some), "Z" for an offset of zero."""
    local = f"({value} AT TIME ZONE m.zone)"
    offset = f"extract(epoch FROM {local} - ({value} AT TIME ZONE 'UTC'))::int"
    size = f"abs({offset})"
    return (
        f"CASE WHEN {value} IS NULL THEN NULL ELSE to_char({local}, 'YYYY-MM-DD\"T\"HH24:MI:SS') "
        f"|| CASE WHEN mod(extract(microseconds FROM {value})::bigint, 1000000) = 0 THEN '' "
        f"ELSE to_char({local}, '.US') END "
        f"|| CASE WHEN {offset} = 0 THEN 'Z' ELSE CASE WHEN {offset} < 0 THEN '-' ELSE '+' END "
        f"|| lpad(({size} / 3600)::text, 2, '0') || ':' || lpad((mod({size}, 3600) / 60)::text, 2, '0') "
        f"|| CASE WHEN mod({size}, 60) = 0 THEN '' ELSE ':' || lpad(mod({size}, 60)::text, 2, '0') END END END"
    )


def _date(value: str) -> str:
    return f"to_char({value}, 'YYYY-MM-DD')"


def _created_by(row: str, user_table: str, api_key_table: str) -> str:
    """`CreatedByField`: the member (by username) or the API key (by name) that made the row."""
    return (
        f"CASE WHEN {row}.created_by_user_id IS NOT NULL THEN (SELECT jsonb_build_object("  # noqa: S608
        f"'type', 'user', 'id', u.id, 'name', u.username) FROM {user_table} u WHERE u.id = {row}.created_by_user_id) "
        f"WHEN {row}.created_by_api_key_id IS NOT NULL THEN (SELECT jsonb_build_object("
        f"'type', 'api_key', 'id', k.id, 'name', k.name) FROM {api_key_table} k WHERE k.id = {row}.created_by_api_key_id) END"
    )


@functools.cache
def _represented_sql() -> str:
    # Identifiers from the models' options; the parameters are, in order: the actions without and
    # with money received, the hosted link's and the PDF link's two parts, the previous attributes
    # without and with money received, the places of the currencies that have other than the
    # default, the default, and the current time zone.
    quote = connection.ops.quote_name
    table = {
        "customer": quote(Invoice._meta.get_field("customer").related_model._meta.db_table),
        "line": quote(Line._meta.db_table),
        "payment": quote(Invoice._meta.get_field("payments").related_model._meta.db_table),
        "user": quote(User._meta.db_table),
        "api_key": quote(ApiKey._meta.db_table),
    }
    p = "m.places"
    line = (
        "jsonb_build_object("
        "'id', l.id, 'description', l.description, "
        f"'quantity', {_decimal('l.quantity', Line._meta.get_field('quantity').decimal_places)}, "
        f"'unit_price', {_price('l.unit_price', p)}, "
        f"'tax_rate', {_decimal('l.tax_rate', Line._meta.get_field('tax_rate').decimal_places)}, "
        f"'amount', {_money('l.amount', p)}, 'tax_amount', {_money('l.tax_amount', p)})"
    )
    payment = (
        "jsonb_build_object("
        f"'id', y.id, 'amount', {_money('y.amount', p)}, 'method', y.method, 'reference', y.reference, "
        f"'paid_at', {_date('y.paid_at')}, 'created_by', {_created_by('y', table['user'], table['api_key'])}, "
        f"'created_at', {_timestamp('y.created_at')})"
    )
    lines = (
        f"(SELECT coalesce(jsonb_agg({line} ORDER BY l.position), '[]'::jsonb) "  # noqa: S608
        f"FROM {table['line']} l WHERE l.invoice_id = m.id)"
    )
    # The payments with their sum: a payment committed while the UPDATE waited for an invoice's
    # lock is in the row it returns (amount_paid) but not in this statement's snapshot, which these
    # read; such an invoice is left out here, and its event written after the statement (the caller).
    payments = (
        f"(SELECT coalesce(jsonb_agg({payment} ORDER BY y.paid_at, y.id), '[]'::jsonb) AS list, "  # noqa: S608
        f"coalesce(sum(y.amount), 0) AS paid "
        f"FROM {table['payment']} y WHERE y.invoice_id = m.id)"
    )
    # One jsonb_build_object (at most 100 arguments: 50 fields): nesting or concatenating jsonb
    # copies it again.
    fields = {
        "id": "m.id",
        "number": "m.number",
        "customer": "m.customer_id",
        "customer_name": f"(SELECT c.name FROM {table['customer']} c WHERE c.id = m.customer_id)",  # noqa: S608
        "status": "m.status",
        "currency": "m.currency",
        "issue_date": _date("m.issue_date"),
        "due_date": _date("m.due_date"),
        "notes": "m.notes",
        "subtotal": _money("m.subtotal", p),
        "tax_total": _money("m.tax_total", p),
        "total": _money("m.total", p),
        "amount_paid": _money("m.amount_paid", p),
        "balance_due": f"round(m.total - m.amount_paid, {p})::text",
        "available_actions": "CASE WHEN m.amount_paid = 0 THEN %s::jsonb ELSE %s::jsonb END",
        "hosted_url": "%s || m.public_token || %s",
        "pdf_url": "%s || m.id::text || %s",
        "created_by": _created_by("m", table["user"], table["api_key"]),
        "sent_at": _timestamp("m.sent_at"),
        "paid_at": _timestamp("m.paid_at"),
        "created_at": _timestamp("m.created_at"),
        "updated_at": _timestamp("m.updated_at"),
        "lines": lines,
        "payments": "received.list",
    }
    invoice = "jsonb_build_object(" + ", ".join(f"'{name}', {value}" for name, value in fields.items()) + ")"

    return (
        "represented AS (SELECT m.organization_id, m.id AS object_id, "  # noqa: S608
        f"{invoice} AS object, "
        "CASE WHEN m.amount_paid = 0 THEN %s::jsonb ELSE %s::jsonb END AS previous "
        f"FROM (SELECT *, coalesce((%s::jsonb ->> currency)::int, %s) AS places, %s::text AS zone FROM moved) AS m "
        f"CROSS JOIN LATERAL {payments} AS received WHERE received.paid = m.amount_paid)"
    )
