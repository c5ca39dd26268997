"""Recording events: called by the services that change customers, invoices and payments, in their
transaction, with the objects' representations (this app imports none of theirs). Each call writes
its events in one INSERT, reads the organization's enabled webhook endpoints once, and writes a
delivery per (event, subscribed endpoint) in one INSERT with one job for them: the outbox, committed
or rolled back with the change itself. On PostgreSQL with the database task backend all of it is one
statement, held to ride with the write's next one (`_insert_queueing_deliveries`)."""

from __future__ import annotations

import datetime
import functools
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, models, transaction
from django.utils import timezone

from billing import context, db
from billing.db import CompiledInsert
from billing.models import Job
from billing.tasks import DatabaseBackend
from events import ids, tasks
from events.models import Event, WebhookDelivery, WebhookEndpoint
from users.models import Actor, ApiKey


@dataclass(frozen=True)
class Change:
    """One event to record: its type, the object as the API shows it after the change, and the
    values its changed attributes had before (None for a creation or a deletion)."""

    type: str
    object: dict
    previous: dict | None = None

    @property
    def object_type(self) -> str:
        return self.type.partition(".")[0]


def actor_json(actor: Actor | None) -> dict:
    """Who made a change: a member (a user), an API key, or the system (a command, the worker)."""
    if actor is None:
        return {"type": "system", "id": None, "name": "system"}
    if isinstance(actor, ApiKey):
        return {"type": "api_key", "id": actor.pk, "name": actor.name}
    return {"type": "user", "id": actor.pk, "name": actor.get_username()}


def previous_attributes(before: dict, after: dict) -> dict:
    """The top-level attributes of `before` whose value differs in `after` (Stripe's
    `previous_attributes`: what they were)."""
    return {name: value for name, value in before.items() if after.get(name, value) != value}


def _ordered_ids(count: int) -> list[str]:
    """`count` event ids in the order given: one millisecond, consecutive random parts."""
    ms = time.time_ns() // 1_000_000
    first = secrets.randbits(79)  # room to count up without carrying into the time
    return [f"evt_{ids._base32(ms, 10)}{ids._base32(first + k, 16)}" for k in range(count)]


def events_record(
    *, organization_id: int, changes: Sequence[Change], actor: Actor | None = None
) -> list[Event]:
    """Write `changes` as events of the organization, and their webhook deliveries, in the caller's
    transaction (which must be atomic). `actor` None is the system (a command, the worker)."""
    return events_record_many([(organization_id, change) for change in changes], actor=actor)


EVENT_FIELDS = (
    "id",
    "organization_id",
    "type",
    "created_at",
    "object_type",
    "object_id",
    "data",
    "previous_attributes",
    "actor",
    "request_id",
)
# Every write records events: their INSERT is the ORM's, compiled once per row count (billing.db).
_insert_events = CompiledInsert(Event, EVENT_FIELDS)


def events_record_many(changes: Sequence[tuple[int, Change]], *, actor: Actor | None = None) -> list[Event]:
    """`events_record` for changes of any organizations ((organization id, change) pairs): one
    INSERT of the events, one read of their organizations' endpoints (on PostgreSQL in the INSERT's
    own statement), one INSERT of the deliveries and one job, however many (a bulk `mark_overdue`)."""
    if not changes:
        return []
    assert transaction.get_connection().in_atomic_block, "events are recorded in the change's transaction"
    now = timezone.now()
    who = actor_json(actor)
    request_id = context.request_id.get()
    events = [
        Event(
            id=event_id,
            organization_id=organization_id,
            type=change.type,
            created_at=now,
            object_type=change.object_type,
            object_id=change.object.get("id"),
            data={"object": change.object},
            previous_attributes=change.previous,
            actor=who,
            request_id=request_id,
        )
        for event_id, (organization_id, change) in zip(_ordered_ids(len(changes)), changes, strict=True)
    ]
    rows = [[getattr(event, name) for name in EVENT_FIELDS] for event in events]
    for event in events:  # as bulk_create leaves them: saved
        event._state.adding = False
        event._state.db = connection.alias
    statement = _insert_events.sql(len(rows)) if connection.vendor == "postgresql" else None
    if statement is not None and len(rows) <= _insert_events.batch_size(len(rows)):
        backend = tasks.send_webhooks.get_backend()
        if db.ENABLED and isinstance(backend, DatabaseBackend):
            _insert_queueing_deliveries(rows, statement, events, backend, now)
            return events
        endpoints = _insert_reading_endpoints(rows, statement)
    else:
        _insert_events.execute(rows)
        endpoints = _enabled_endpoints({event.organization_id for event in events})
    deliveries_queue(events, endpoints=endpoints)
    return events


def _insert_queueing_deliveries(
    rows: list[list], statement: tuple[str, bool], events: list[Event], backend, now: datetime.datetime
) -> None:
    """PostgreSQL, with the database task backend: the events' INSERT (`statement`), a delivery of
    each to each enabled endpoint of its organization that subscribes to its type, and, if there is
    one, the job that sends them (`send_webhooks`, its argument the deliveries' ids, which the
    database gives them in that statement), all in one statement whose result nobody reads — so it is held
    (`billing.db.hold`) and rides with the write's next statement: the events cost the write no
    round trip. The rows are those `deliveries_queue` and `enqueue` write (tests/test_events_sql.py
    pins them equal)."""
    insert_sql, columnar = statement
    _queued, queue_params = _queue_ctes(backend, now)
    db.hold(_queueing_sql(insert_sql), [*_insert_events.params(rows, columnar=columnar), *queue_params])


@functools.cache
def _queueing_sql(insert_sql: str) -> str:
    """The statement of `_insert_queueing_deliveries` for the events' INSERT `insert_sql`: kept
    (`billing.db.keep`), so that the server parses and plans its four kilobytes once per connection."""
    event = _event_columns()
    queued, _ = _queue_sql()
    return db.keep(
        f"WITH inserted AS ({insert_sql} RETURNING {event['id']}, {event['organization']}, {event['type']}), "
        f"{queued} SELECT 1"
    )


def events_insert_ctes(
    *, type: str, source: str, order: str, actor: Actor | None = None
) -> tuple[str, list] | None:
    """An event of `type` for each row of `source`, with its deliveries and their job, as common
    table expressions to follow the caller's own in one statement (a data-modifying WITH), and their
    parameters: `inserted` (returning each event's id, organization, type and object_id),
    `queued` (the deliveries) and `queued_job`; None where this cannot be one statement (not PostgreSQL, or another task backend):
    the caller then records its events with `events_record_many`.

    `source` is a CTE of the caller's that has, for each event, `organization_id`, `object_id`,
    `object` (the object's API representation, jsonb) and `previous` (its previous attributes,
    jsonb or NULL); `order` orders its rows as the events' ids are (time-ordered: one millisecond,
    consecutive random parts, as `_ordered_ids` makes them). The events are the rows
    `events_record_many` writes for the same changes, and the deliveries and job those
    `deliveries_queue` writes (tests/test_overdue_sql.py pins them equal): a bulk change of any size
    (mark_overdue) records its events in the statement that makes it."""
    backend = tasks.send_webhooks.get_backend()
    if connection.vendor != "postgresql" or not isinstance(backend, DatabaseBackend):
        return None
    now = timezone.now()
    quote = connection.ops.quote_name
    event = _event_columns()
    columns = ", ".join(quote(Event._meta.get_field(name).column) for name in EVENT_FIELDS)
    ms, first = time.time_ns() // 1_000_000, secrets.randbits(79)
    # The 80 random bits: the first 40 the same for every event, the last 40 counted up from a
    # random start below 2^39 (room for 2^39 events: no carry into the first part).
    high, low = first >> 39, first & (2**39 - 1)
    prefix = f"evt_{ids._base32(ms, 10)}{ids._base32(high, 8)}"
    digits = " || ".join(
        f"substr('{ids._ALPHABET}', (((%s::bigint + source.event_n) >> {5 * k}) & 31)::int + 1, 1)"
        for k in reversed(range(8))
    )
    values = {
        "id": f"%s || {digits}",
        "organization_id": "source.organization_id",
        "type": "%s",
        "created_at": "%s",
        "object_type": "%s",
        "object_id": "source.object_id",
        "data": "jsonb_build_object('object', source.object)",
        "previous_attributes": "source.previous",
        "actor": "%s::jsonb",
        "request_id": "%s",
    }
    change = Change(type, {})
    value_params = {
        "id": [prefix, *[low] * 8],
        "type": [type],
        "created_at": [now],
        "object_type": [change.object_type],
        "actor": [json.dumps(actor_json(actor))],
        "request_id": [context.request_id.get()],
    }
    queued, queue_params = _queue_ctes(backend, now)
    sql = (
        f"inserted AS (INSERT INTO {quote(Event._meta.db_table)} ({columns}) "  # noqa: S608
        f"SELECT {', '.join(values[name] for name in EVENT_FIELDS)} "
        f"FROM (SELECT *, row_number() OVER (ORDER BY {order}) - 1 AS event_n FROM {source}) AS source "
        f"RETURNING {event['id']}, {event['organization']}, {event['type']}, {event['object_id']}), {queued}"
    )
    params = [param for name in EVENT_FIELDS for param in value_params.get(name, [])]
    return sql, [*params, *queue_params]


@functools.cache
def _event_columns() -> dict[str, str]:
    quote = connection.ops.quote_name
    return {
        name: quote(Event._meta.get_field(name).column)
        for name in ("id", "organization", "type", "object_id")
    }


def _queue_ctes(backend, now: datetime.datetime) -> tuple[str, list]:
    """`queued`: a delivery of each event of the CTE `inserted` (its id, organization and type) to
    each enabled endpoint of its organization that subscribes to its type; `queued_job`: if there is
    one, the job that sends them. With their parameters: the deliveries' columns that are not joined
    from a template delivery (its defaults), the job's from the job the backend builds; the values
    that are the time of the write (created, updated, due, enqueued) are `now`, the job's id a new one
    (`_queue_params`)."""
    sql, _ = _queue_sql()
    template = _queue_params(backend, connection.vendor)
    params = list(template.values)
    if template.now_at:
        now_value = template.now_field.get_db_prep_save(now, connection)
        for at in template.now_at:
            params[at] = now_value
    params[template.id_at] = Job._meta.pk.get_db_prep_save(backend._get_id(), connection)
    for at, field, value in template.adapted:
        params[at] = field.get_db_prep_save(value, connection)
    return sql, params


class _QueueParams(NamedTuple):
    values: tuple  # every parameter as the template delivery and job give it, prepared if plain
    now_at: tuple[int, ...]  # the places of the write's time (created, updated, due, enqueued)
    now_field: models.Field | None  # one of those columns: it prepares the time
    id_at: int  # the place of the job's id (a new one a write)
    # (place, field, value) of the values the driver adapts with an object of its own (JSON): an
    # adapter keeps the connection that last quoted it, so each write prepares its own.
    adapted: tuple[tuple[int, models.Field, object], ...]


def _is_write_time(field: models.Field) -> bool:
    """A column whose value, for a new row, is the time it is written: auto_now(_add), or a default
    that is a function (here always `timezone.now`: a delivery is due when written)."""
    return isinstance(field, models.DateTimeField) and (
        field.auto_now or field.auto_now_add or (field.has_default() and callable(field.default))
    )


@functools.lru_cache(maxsize=16)
def _queue_params(backend, vendor: str) -> _QueueParams:
    """The parameters of `_queue_sql`'s columns as a template delivery and the backend's job for
    `send_webhooks` give them, prepared once per backend and database (every write that records
    events sends them). The rest of them is the same for every write (statuses, counts, the task's
    path, queue, priority and backend; tests/test_events_sql.py pins them to the rows the ORM path
    writes)."""
    _, (delivery_fields, job_fields) = _queue_sql()
    template = WebhookDelivery(organization_id=0, event_id="", endpoint_id=0)
    job = backend.job(tasks.send_webhooks, ([],), {})
    raw = (
        *((field, getattr(template, field.attname)) for field in delivery_fields),
        *((field, field.pre_save(job, True)) for field in job_fields),
    )
    values, now_at, adapted, made = [], [], [], []
    id_at = None
    for at, (field, value) in enumerate(raw):
        prepared = field.get_db_prep_save(value, connection)
        values.append(prepared)
        if field is Job._meta.pk:
            id_at = at
        elif _is_write_time(field):
            now_at.append(at)
        elif field.has_default() and callable(field.default) and field.default not in (list, dict):
            # Made anew for each row (a token, a random value): preparing it once would freeze it.
            made.append(f"{field.model.__name__}.{field.name}")
        elif not isinstance(prepared, db.PLAIN):
            adapted.append((at, field, value))
    if made:
        raise ImproperlyConfigured(f"The events' statement cannot prepare once the defaults of {made}.")
    now_field = raw[now_at[0]][0] if now_at else None
    return _QueueParams(tuple(values), tuple(now_at), now_field, id_at, tuple(adapted))


@functools.cache
def _queue_sql() -> tuple[str, tuple]:
    # Identifiers from the models' options, quoted; every value is a parameter: the deliveries take
    # their organization and event from the events they join, their endpoint from the endpoint, and
    # every other column from a template delivery (its defaults), one parameter each.
    quote = connection.ops.quote_name
    event = _event_columns()
    endpoint = {
        name: quote(WebhookEndpoint._meta.get_field(name).column)
        for name in ("id", "organization", "events", "enabled")
    }
    joined = {
        "organization_id": f"inserted.{event['organization']}",
        "event_id": f"inserted.{event['id']}",
        "endpoint_id": f'"endpoint".{endpoint["id"]}',
    }
    columns, values, parameters = [], [], []
    for field in WebhookDelivery._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(quote(field.column))
        if field.attname in joined:
            values.append(joined[field.attname])
        else:
            values.append("%s")
            parameters.append(field)
    job_fields = list(Job._meta.concrete_fields)
    # The job's arguments as the library writes them ({"args": [[ids]], "kwargs": {}}), the ids the
    # deliveries' own, in the order they were written.
    pk = quote(WebhookDelivery._meta.pk.column)
    arguments = (
        f"jsonb_build_object('args', jsonb_build_array((SELECT jsonb_agg({pk} ORDER BY {pk}) FROM queued)), "  # noqa: S608
        "'kwargs', '{}'::jsonb)"
    )
    job_values = [arguments if f.attname == "args_kwargs" else "%s" for f in job_fields]
    sql = (
        f"queued AS (INSERT INTO {quote(WebhookDelivery._meta.db_table)} ({', '.join(columns)}) "  # noqa: S608
        f'SELECT {", ".join(values)} FROM inserted JOIN {quote(WebhookEndpoint._meta.db_table)} AS "endpoint" '
        f'ON "endpoint".{endpoint["organization"]} = inserted.{event["organization"]} '
        f'AND "endpoint".{endpoint["enabled"]} '
        f'AND ("endpoint".{endpoint["events"]} ? \'*\' OR "endpoint".{endpoint["events"]} ? inserted.{event["type"]}) '
        f"RETURNING {pk}), "
        f"queued_job AS (INSERT INTO {quote(Job._meta.db_table)} ({', '.join(quote(f.column) for f in job_fields)}) "
        f"SELECT {', '.join(job_values)} WHERE EXISTS (SELECT 1 FROM queued) RETURNING 1)"
    )
    return sql, (tuple(parameters), tuple(f for f in job_fields if f.attname != "args_kwargs"))


def _insert_reading_endpoints(rows: list[list], statement: tuple[str, bool]) -> list[tuple]:
    """PostgreSQL: the events' INSERT (`statement`, kept by `_insert_events`) and the read of their
    organizations' enabled endpoints in one statement (a data-modifying WITH): one round trip for
    what every write records."""
    insert_sql, columnar = statement
    with connection.cursor() as cursor:
        cursor.execute(_with_endpoints_sql(insert_sql), _insert_events.params(rows, columnar=columnar))
        return _endpoint_values(cursor.fetchall())


@functools.cache
def _with_endpoints_sql(insert_sql: str) -> str:
    # Identifiers from the models' options, quoted; every value is a parameter of the INSERT.
    quote = connection.ops.quote_name
    meta = WebhookEndpoint._meta
    column = {
        name: quote(meta.get_field(name).column) for name in ("id", "organization", "events", "enabled")
    }
    organization = quote(Event._meta.get_field("organization").column)
    return (
        f"WITH inserted AS ({insert_sql} RETURNING {organization}) "  # noqa: S608
        f"SELECT {column['id']}, {column['organization']}, {column['events']} FROM {quote(meta.db_table)} "
        f"WHERE {column['enabled']} AND {column['organization']} IN (SELECT {organization} FROM inserted)"
    )


def _endpoint_values(rows: list[tuple]) -> list[tuple]:
    events_field = WebhookEndpoint._meta.get_field("events")
    return [
        (endpoint_id, organization_id, events_field.from_db_value(types, None, connection))
        for endpoint_id, organization_id, types in rows
    ]


def _enabled_endpoints(organization_ids: set[int]) -> list[tuple]:
    """The enabled endpoints of these organizations, as plain values (id, organization, types): no
    model instance is built for a read most writes find empty."""
    if len(organization_ids) == 1:
        scope = {"organization_id": next(iter(organization_ids))}
    else:
        scope = {"organization_id__in": organization_ids}
    return list(
        WebhookEndpoint.objects.filter(**scope, enabled=True).values_list("id", "organization_id", "events")
    )


def deliveries_queue(
    events: Sequence[Event], *, endpoints: list[tuple] | None = None
) -> list[WebhookDelivery]:
    """A delivery of each event to each enabled endpoint of its organization that subscribes to its
    type, and one job that sends them. `endpoints`: (id, organization id, types) of the enabled
    endpoints of the events' organizations, when the caller has read them already."""
    if endpoints is None:
        endpoints = _enabled_endpoints({event.organization_id for event in events})
    if not endpoints:
        return []
    deliveries = [
        WebhookDelivery(organization_id=event.organization_id, event=event, endpoint_id=endpoint_id)
        for event in events
        for endpoint_id, organization_id, types in endpoints
        if organization_id == event.organization_id and ("*" in types or event.type in types)
    ]
    if deliveries:
        WebhookDelivery.objects.bulk_create(deliveries)
        tasks.send_webhooks.enqueue([delivery.pk for delivery in deliveries])
    return deliveries


def events_purge(*, now: datetime.datetime | None = None, batch: int = 5000) -> int:
    """Delete the events older than EVENT_RETENTION_DAYS (with their deliveries), in batches; returns
    how many."""
    now = now or timezone.now()
    cutoff = now - datetime.timedelta(days=settings.EVENT_RETENTION_DAYS)
    deleted = 0
    while True:
        with transaction.atomic():
            chunk = list(
                Event.objects.filter(created_at__lt=cutoff)
                .order_by("id")
                .values_list("pk", flat=True)[:batch]
            )
            if not chunk:
                return deleted
            WebhookDelivery.objects.filter(event_id__in=chunk).delete()
            Event.objects.filter(pk__in=chunk).delete()
            deleted += len(chunk)
