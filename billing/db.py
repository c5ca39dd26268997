"""Statements compiled once: the ORM's own SQL for an INSERT, kept per model, fields and database,
so a hot write does not pay the ORM's compilation on every request.

- `CompiledInsert`: the rows of a bulk insert (the events of every write), per row count; the
  statement `bulk_create` sends (tests/test_events.py pins it equal, text and values).
- `insert_compiled`: the one-row INSERT ... RETURNING of `Model.save()`, used by every owned model's
  `save()` (`billing.models.CompiledInsertModel._do_insert`); `update_compiled`: the UPDATE of the
  changed columns that `save()` of an owned row sends (`OwnedModel._do_update`, with its version
  check). The rest of `save()` — signals, defaults, `auto_now`, the state of the instance — is
  Django's own; only the statement's text is kept (tests/test_compiled_inserts.py pins both equal to
  the ORM's, text and values, for every insert and update of a day's work through the API).

The SQL is the ORM's (`InsertQuery` compiled by the connection's compiler) and the values are
prepared by the model's fields (`pre_save`, then `get_db_prep_save`), as the compiler prepares them.
A value that is an expression, a field whose placeholder depends on its value, or a returned column
that needs a converter falls back to the ORM's own path.

- `CompiledQuery`: a read of one fixed shape, compiled once and run with new values.
- `held_writes` / `holding`: INSERTs held and sent ahead of the next statement, in its round trip
  (PostgreSQL with psycopg2; tests/test_held_writes.py).
- `keep` / `install_prepared`: every statement kept here is, on PostgreSQL with psycopg2, a
  prepared statement of each connection (`PREPARE` once, then `EXECUTE` with the values): the
  server parses and plans it once per connection rather than on every request
  (`DATABASE_PREPARED_STATEMENTS`; tests/test_prepared.py).
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import decimal
import functools
import hashlib
import logging
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, partial

from django.db import DatabaseError, InterfaceError, OperationalError, connections, models, transaction
from django.db.models.sql import InsertQuery, UpdateQuery
from django.db.transaction import TransactionManagementError

logger = logging.getLogger(__name__)

CACHED_ROWS = 16  # statements of up to this many rows are kept; a bigger insert is compiled each time
ENABLED = True  # tests switch it off to capture what the ORM itself sends
PREPARED = True  # and this off to see the kept statements as they are, not as their EXECUTE


@dataclass(frozen=True)
class _OneRow:
    sql: str
    returning_params: tuple


@cache
def _one_row(
    model: type[models.Model], fields: tuple, returning: tuple, using: str, vendor: str
) -> _OneRow | None:
    """The ORM's INSERT of one `model` row into `fields` returning `returning`, or None where it
    cannot be kept (a value-dependent placeholder, a returned column with a converter)."""
    if any(hasattr(field, "get_placeholder") for field in fields):
        return None
    query = InsertQuery(model)
    query.insert_values(list(fields), [model()], raw=False)
    compiler = query.get_compiler(using=using)
    compiler.returning_fields = list(returning) or None
    statements = compiler.as_sql()
    if len(statements) != 1:
        return None
    if returning:
        connection = connections[using]
        if not connection.features.can_return_columns_from_insert:
            return None
        if compiler.get_converters([field.get_col(model._meta.db_table) for field in returning]):
            return None
    return _OneRow(keep(statements[0][0]), tuple(getattr(compiler, "returning_params", ())))


# Values prepared for the database that may be kept and sent again, on any connection: not one of
# the driver's adapters (a JSON value's keeps the connection that last quoted it).
PLAIN = (str, int, float, bool, type(None), datetime.datetime, datetime.date, decimal.Decimal, uuid.UUID)


PER_ROW = object()  # in `insert_compiled`'s `prepared`: a value the row prepares itself


def insert_compiled(
    obj: models.Model, using: str, fields, returning_fields, raw: bool, prepared: Sequence | None = None
) -> list | None:
    """`Model._do_insert` for one row with the kept statement: the returned values as the ORM
    returns them, or None for "use the ORM" (nothing was sent). `prepared`: for each field, its
    value as `get_db_prep_save` gave it for an earlier row, the same for every row of its kind (a
    plain value, `PLAIN`), or `PER_ROW` for one the row prepares (billing.tasks)."""
    model = obj._meta.concrete_model  # a proxy's rows are its concrete model's
    if raw or not ENABLED or model._meta.parents:
        return None
    connection = connections[using]
    statement = _one_row(model, tuple(fields), tuple(returning_fields or ()), using, connection.vendor)
    if statement is None:
        return None
    params = []
    for at, field in enumerate(fields):
        if prepared is not None and prepared[at] is not PER_ROW:
            params.append(prepared[at])
            continue
        value = field.pre_save(obj, True)
        if hasattr(value, "resolve_expression"):
            return None
        params.append(field.get_db_prep_save(value, connection))
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, params)
        if not returning_fields:
            return []
        return [connection.ops.fetch_returned_insert_columns(cursor, statement.returning_params)]


class CompiledInsert:
    """`INSERT INTO <model's table> (<fields>) VALUES (...), ...` for `model` and `fields`
    (their attribute names, in order), on the `using` database."""

    def __init__(self, model: type[models.Model], fields: Sequence[str], using: str = "default"):
        self.model = model
        self.fields = [model._meta.get_field(name) for name in fields]
        self.attnames = [field.attname for field in self.fields]
        self.using = using

    def execute(self, rows: Sequence[Sequence]) -> None:
        """Insert `rows` (each a value per field, in order) in as few statements as the database
        allows, in the caller's transaction."""
        connection = connections[self.using]
        size = self.batch_size(len(rows))
        with connection.cursor() as cursor:
            for start in range(0, len(rows), size):
                batch = rows[start : start + size]
                statement = self.sql(len(batch))
                if statement is None:  # a layout not kept: the ORM's bulk_create itself
                    objs = [self.model(**dict(zip(self.attnames, row, strict=True))) for row in batch]
                    self.model._base_manager.using(self.using).bulk_create(objs)
                    continue
                sql, columnar = statement
                cursor.execute(sql, self.params(batch, columnar=columnar))

    def sql(self, rows: int) -> tuple[str, bool] | None:
        """The statement for `rows` rows (compiled once for up to CACHED_ROWS), and whether it takes
        its values a column at a time (PostgreSQL's `INSERT ... SELECT * FROM UNNEST(...)`, Django's
        form for a bulk insert of plain fields) or a row at a time; None when Django lays the values
        out otherwise (then `execute` goes through `bulk_create`)."""
        if rows <= CACHED_ROWS:
            return self._cached_sql(connections[self.using].vendor, rows)
        return self._compile(rows)

    def batch_size(self, rows: int) -> int:
        """How many rows one statement may carry on this database (SQLite's variable limit)."""
        connection = connections[self.using]
        return connection.ops.bulk_batch_size(self.fields, [None] * rows) or rows

    def params(self, rows: Iterable[Sequence], *, columnar: bool = False) -> list:
        """The rows' values as the fields prepare them for the database: flattened row by row, or a
        list per column."""
        connection = connections[self.using]
        prepared = [
            [field.get_db_prep_save(value, connection) for field, value in zip(self.fields, row, strict=True)]
            for row in rows
        ]
        if columnar:
            return [list(column) for column in zip(*prepared, strict=True)]
        return [value for row in prepared for value in row]

    def _compile(self, rows: int) -> tuple[str, bool] | None:
        # Placeholder objects: the statement's text does not depend on the values of plain fields.
        objs = [self.model(**dict.fromkeys(self.attnames)) for _ in range(rows)]
        query = InsertQuery(self.model)
        query.insert_values(self.fields, objs, raw=False)
        [(sql, params)] = query.get_compiler(using=self.using).as_sql()
        columnar = rows > 1 and len(params) == len(self.fields)
        if not columnar and len(params) != rows * len(self.fields):
            return None
        return sql, columnar

    @cache  # noqa: B019 - one per CompiledInsert, which live as module constants
    def _cached_sql(self, vendor: str, rows: int) -> tuple[str, bool] | None:
        statement = self._compile(rows)
        if statement is None:
            return None
        sql, columnar = statement
        return keep(sql), columnar


_UPDATES: dict[tuple, str | None] = {}


def _update_sql(model: type[models.Model], values, nulls: tuple, versioned: bool, using: str) -> str | None:
    """The ORM's `UPDATE <table> SET <fields> WHERE pk = %s [AND version = %s]` for `model` and these
    (field, model, value) triples, or None where it cannot be kept. Its text depends on the fields
    and on which prepared values are None (`nulls`: the ORM writes `= NULL` for those), never on the
    other values: it is kept per fields and None-pattern."""
    key = (model, tuple(field for field, _, _ in values), nulls, versioned, using, connections[using].vendor)
    if key not in _UPDATES:
        _UPDATES[key] = _compile_update(model, values, nulls, versioned, using)
    return _UPDATES[key]


def _compile_update(
    model: type[models.Model], values, nulls: tuple, versioned: bool, using: str
) -> str | None:
    if any(hasattr(field, "get_placeholder") for field, _, _ in values):
        return None
    filters = {"pk": 0, "version": 0} if versioned else {"pk": 0}
    query = model._base_manager.using(using).filter(**filters).query.chain(UpdateQuery)
    query.add_update_fields(values)
    query.annotations = {}
    sql, params = query.get_compiler(using).as_sql()
    if len(params) != nulls.count(False) + len(filters) or query.get_related_updates():
        return None
    return keep(sql)


def update_compiled(
    obj: models.Model, using: str, pk_val, values, expected_version: int | None
) -> bool | None:
    """`Model._do_update` of `obj` (`values`: the (field, model, value) triples `save()` computed) with
    the kept statement, matching `expected_version` too when given: whether a row matched, or None
    for "use the ORM" (nothing was sent)."""
    meta = obj._meta
    if not ENABLED or not values or meta.parents or meta.select_on_save:
        return None
    if any(
        hasattr(value, "resolve_expression") or hasattr(value, "prepare_database_save")
        for _, _, value in values
    ):
        return None
    connection = connections[using]
    # Prepared as the ORM's UPDATE compiler prepares them; a value prepared to None is `= NULL`.
    prepared = [field.get_db_prep_save(value, connection) for field, _, value in values]
    if any(hasattr(value, "as_sql") for value in prepared):
        return None
    nulls = tuple(value is None for value in prepared)
    sql = _update_sql(type(obj), values, nulls, expected_version is not None, using)
    if sql is None:
        return None
    params = [value for value in prepared if value is not None]
    params.append(meta.pk.get_db_prep_value(pk_val, connection))
    if expected_version is not None:
        params.append(meta.get_field("version").get_db_prep_value(expected_version, connection))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount > 0


# --- reads ---------------------------------------------------------------------------------------

_SENTINEL_INT = 9_000_000_000_000_000_000  # beyond any id: a parameter's place in the compiled SQL


class CompiledQuery:
    """A read of one fixed shape (the same filters, joins and locks whatever the values), compiled by
    the ORM once per database and then run with new values: the SQL's text and the compiler's setup
    (the selected columns, the joined models, the converters) are kept; the rows become model
    instances, joined rows included, through the ORM's own iterable, as `list(queryset)` builds them.

    `build(**values)` returns the queryset; `kinds` name each value's type (int or str). A value's
    place in the SQL is found by compiling with a sentinel for it; a shape whose sentinels do not each
    come out as one parameter is run through the ORM every time instead. tests/test_compiled_queries.py
    pins the SQL and the instances equal to the ORM's."""

    def __init__(self, build, **kinds: type):
        self.build = build
        self.kinds = kinds
        self.model: type[models.Model] | None = None
        self._templates: dict[tuple[str, str], tuple | None] = {}

    def fetch(self, using: str = "default", **values) -> list[models.Model]:
        return self._fetch(using, values, None)

    def page(self, using: str = "default", *, offset: int, limit: int, **values) -> list[models.Model]:
        """The rows of `build(**values)[offset:offset + limit]`: the shape's SQL with the clause the
        ORM itself writes for that slice (`limit_offset_sql`, a text of its own per page, so not
        prepared). For a shape that is neither sliced nor locked (refused otherwise)."""
        offset, limit = int(offset), int(limit)
        if offset < 0 or limit < 1:
            raise ValueError(f"a page is offset >= 0 and limit >= 1, not {offset}, {limit}")
        return self._fetch(using, values, (offset, offset + limit))

    def _fetch(self, using: str, values: dict, window: tuple[int, int] | None) -> list[models.Model]:
        values = {name: self.kinds[name](value) for name, value in values.items()}
        connection = connections[using]
        template = self._template(using, connection.vendor) if ENABLED else None
        if template is None:
            queryset = self.build(**values).using(using)
            self.model = queryset.model
            return list(queryset if window is None else queryset[window[0] : window[1]])
        queryset, compiler, places, sql, params = template
        if window is not None:
            if queryset.query.is_sliced or queryset.query.select_for_update:
                raise TypeError("a page of a shape that is sliced or locked already")
            sql = f"{sql} {connection.ops.limit_offset_sql(*window)}"
        self.model = queryset.model
        if (
            queryset.query.select_for_update
            and connection.features.has_select_for_update
            and connection.get_autocommit()
            and connection.features.supports_transactions
        ):
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        bound = list(params)
        for index, name in places:
            bound[index] = values[name]
        run = copy.copy(compiler)
        run.connection = connection
        run.as_sql = lambda *args, **kwargs: (sql, tuple(bound))
        run.get_converters = partial(self._converters, compiler, connection)
        clone = queryset._chain()
        clone.query.get_compiler = lambda *args, **kwargs: run
        return list(clone)

    def get(self, using: str = "default", **values) -> models.Model:
        """The one row, as `QuerySet.get()`: DoesNotExist or MultipleObjectsReturned otherwise (the
        shape's queryset limits itself, as get() does)."""
        rows = self.fetch(using, **values)
        model = self.model
        if not rows:
            raise model.DoesNotExist(f"{model._meta.object_name} matching query does not exist.")
        if len(rows) > 1:
            raise model.MultipleObjectsReturned(f"get() returned more than one {model._meta.object_name}.")
        return rows[0]

    def _converters(self, compiler, connection, expressions):
        # The columns' converters, found once per database connection and kept on it (its backend's
        # converters are methods of its own `ops`, which refer to it: a cache outside it would keep
        # every connection alive); the selected columns are the shape's, whatever the values.
        cache = connection.__dict__.setdefault("_billing_converters", {})
        cached = cache.get(self)
        if cached is None:
            template = copy.copy(compiler)
            template.connection = connection
            cached = cache[self] = template.get_converters(expressions)
        return cached

    def _sentinel(self, name: str):
        k = list(self.kinds).index(name)
        return _SENTINEL_INT + k if self.kinds[name] is int else f"\x00{name}\x00"

    def _template(self, using: str, vendor: str):
        key = (using, vendor)
        if key not in self._templates:
            self._templates[key] = self._compile(using)
        return self._templates[key]

    def _compile(self, using: str):
        # Compiled on the first read, in the caller's transaction (a FOR UPDATE read needs one).
        queryset = self.build(**{name: self._sentinel(name) for name in self.kinds}).using(using)
        compiler = queryset.query.get_compiler(using=using)
        sql, params = compiler.as_sql()
        places = []
        for name in self.kinds:
            found = [i for i, value in enumerate(params) if value == self._sentinel(name)]
            if len(found) != 1:
                return None
            places.append((found[0], name))
        return queryset, compiler, places, keep(sql), tuple(params)


# --- held writes ---------------------------------------------------------------------------------


class _Held:
    """The statements a `held_writes` block holds, as literal SQL, in the order they were made."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.holding = 0
        self.hold_next = False


def _held(connection) -> _Held | None:
    return getattr(connection, "_billing_held", None)


def _carries(connection) -> bool:
    # One query of several statements, its result the last one's: psycopg2's simple protocol (the
    # values are interpolated on the client), which is how Django's PostgreSQL backend talks with it.
    return ENABLED and connection.vendor == "postgresql" and connection.Database.__name__ == "psycopg2"


@contextlib.contextmanager
def held_writes(using: str = "default"):
    """An atomic block (`transaction.atomic(savepoint=False)`: inside the caller's transaction, or
    its own) in which the INSERTs made under `holding()`, and the statements given to `hold()`, are
    not sent on their own: each is held, as the literal SQL the driver would send, and goes ahead of
    the next statement of this connection, in the same round trip (one query of several statements,
    whose result is the last one's), or at the end of the block. An outbox row and its job then cost
    the request no round trip of their own.

    Order and atomicity are unchanged: a held INSERT runs before every statement made after it (a
    read sees it, a savepoint covers it), and an exception leaving the block discards what it holds
    and rolls back the transaction it was made in (as any error in a `savepoint=False` block does).
    What changes is where an error would show: a held INSERT that fails makes the statement carrying
    it fail. So hold only rows that no constraint can refuse (new outbox rows, their jobs), never a
    row whose conflict a caller handles. A held row has no id (nothing is returned before the row is
    sent). On another database, or another driver, every statement is sent as it comes."""
    connection = connections[using]
    with transaction.atomic(using=using, savepoint=False):
        if not _carries(connection) or _held(connection) is not None:
            yield
            return
        held = _Held()
        connection._billing_held = held
        try:
            with connection.execute_wrapper(functools.partial(_carry, held, connection)):
                yield
                if not connection.needs_rollback:  # else the transaction is rolled back: nothing to send
                    _flush(connection, held)
        finally:
            connection._billing_held = None


@contextlib.contextmanager
def holding(using: str = "default"):
    """Inside `held_writes`: the plain INSERTs made here (no RETURNING; `Model.save()` of a new row
    of an owned model sends none here, so it gets no id) are held; elsewhere a no-op."""
    held = _held(connections[using])
    if held is None:
        yield
        return
    held.holding += 1
    try:
        yield
    finally:
        held.holding -= 1


def hold(sql: str, params: Sequence, using: str = "default") -> None:
    """Send `sql` (a statement whose result nobody reads) with the next statement of a `held_writes`
    block, as an INSERT made under `holding()` is; without a block, now."""
    connection = connections[using]
    held = _held(connection)
    with connection.cursor() as cursor:
        if held is None:
            cursor.execute(sql, params)
            return
        held.hold_next = True  # through the wrapper, so that query logs show it as they show the others
        try:
            cursor.execute(sql, params)
        finally:
            held.hold_next = False


def is_holding(using: str) -> bool:
    held = _held(connections[using])
    return held is not None and held.holding > 0


def _plain_insert(sql: str) -> bool:
    sql = _EXECUTED.get(sql, sql)  # a kept statement sent prepared (the wrapper outside this one)
    return sql.lstrip()[:6].upper() == "INSERT" and "RETURNING" not in sql.upper()


def _carry(held: _Held, connection, execute, sql, params, many, context):
    if not many and (held.hold_next or (held.holding and _plain_insert(sql))):
        held.statements.append(
            context["cursor"].cursor.mogrify(sql, params).decode(connection.connection.encoding)
        )
        return None
    if not held.statements:
        return execute(sql, params, many, context)
    if many or context["cursor"].cursor.name is not None:
        # executemany, or a server-side cursor (DECLARE ... FOR one query): the held ones go first.
        _flush(connection, held)
        return execute(sql, params, many, context)
    statements, held.statements = held.statements, []
    carried = "".join(f"{statement};\n" for statement in statements)
    if params is not None:  # the driver interpolates this query: a literal % is written %%
        carried = carried.replace("%", "%%")
    return execute(carried + sql, params, many, context)


def _flush(connection, held: _Held) -> None:
    if held.statements:
        statements, held.statements = held.statements, []
        with connection.cursor() as cursor:
            cursor.execute(";\n".join(statements))


# --- prepared statements -------------------------------------------------------------------------


@dataclass
class _Kept:
    """A kept statement as a prepared statement: its name, its `PREPARE`, its `EXECUTE` (the values
    as `%s`, interpolated by the driver as the statement's own were) and how many values it takes."""

    name: str
    prepare: str
    execute: str
    params: int
    preparable: bool = True  # False once the server refused to prepare it: then it is sent as it is


_KEPT: dict[str, _Kept] = {}
_EXECUTED: dict[str, str] = {}  # each EXECUTE's statement
_PLACEHOLDER = re.compile(r"%[s%]")


def keep(sql: str) -> str:
    """Mark `sql`, a statement compiled once and sent many times (its values as `%s`, a literal % as
    `%%`), as one to prepare; returns it. Cheap to call again with the same text."""
    if sql not in _KEPT:
        count = 0

        def number(match: re.Match) -> str:
            nonlocal count
            if match.group() == "%%":
                return "%"
            count += 1
            return f"${count}"

        body = _PLACEHOLDER.sub(number, sql)
        name = "billing_" + hashlib.sha1(sql.encode(), usedforsecurity=False).hexdigest()[:24]
        values = f"({', '.join(['%s'] * count)})" if count else ""
        kept = _Kept(name, f"PREPARE {name} AS {body}", f"EXECUTE {name}{values}", count)
        _EXECUTED[kept.execute] = sql  # first: a thread that finds it kept finds its EXECUTE too
        _KEPT[sql] = kept
    return sql


def _pgcode(exc: BaseException) -> str | None:
    return getattr(exc.__cause__, "pgcode", None) or getattr(exc, "pgcode", None)


# The server cannot prepare the statement itself (its text, its values' types): never tried again.
_UNPREPARABLE = {"42601", "42P08", "42P18", "42725", "42804", "42883"}


class _Prepared:
    """The execute wrapper that sends the kept statements of one connection (a `DatabaseWrapper`)
    as prepared statements: the first time a kept statement is sent on a database connection, it
    is prepared there (`PREPARE`, one round trip of its own, not in the query log), and from then on
    it is sent as `EXECUTE name(values)`. The server keeps what it parsed and, after a few runs, a
    plan that does not depend on the values (its `plan_cache_mode`); a prepared statement lives
    as long as its database connection (across transactions, rolled back or not), so the names
    prepared are kept per connection and forgotten when it is replaced.

    The outermost wrapper: the query log (above every wrapper) and every wrapper inside this one
    (a `held_writes` block's) see the statement as its caller made it, or its EXECUTE. A
    statement the server refuses to prepare (it cannot infer a value's type, say) is logged once
    and sent as it is from then on; inside a transaction the PREPARE runs in a savepoint, so a
    refusal leaves the transaction as it was.

    A connection whose prepared statements the server no longer has (`DEALLOCATE`/`DISCARD ALL`
    from elsewhere, a pooler that moved it) or can no longer run as prepared (a migration changed
    the type of a column one returns: "cached plan must not change result type") is retired: from
    then on it sends every statement as it is, and Django replaces it at the end of the request
    (`close_at`). The statement that found out is sent again as it is when nothing was lost (no
    transaction); in a transaction, the transaction is lost on the server and its error goes up, as
    any statement's would (the request fails and is rolled back; a retry runs on a new connection)."""

    billing_prepared = True

    def __init__(self, connection) -> None:
        self.connection = connection
        self.raw = None  # the database connection the names below were prepared on
        self.names: set[str] = set()
        self.retired = False
        # With the query log on (DEBUG, CaptureQueriesContext): each EXECUTE sent, as the driver
        # wrote it, and the statement it stands for, so that the log shows the statement.
        self.shown: dict[str, str] = {}
        self.last_executed_query = connection.ops.last_executed_query
        connection.ops.last_executed_query = self.logged_query

    def __call__(self, execute, sql, params, many, context):
        raw = self.connection.connection
        if self.raw is not raw:
            self.raw, self.names, self.retired = raw, set(), False
        try:
            return self._execute(execute, sql, params, many, context)
        except DatabaseError as exc:
            if self.retired or not self.names or not _gone(exc):
                raise
            # The statement that failed, or one a held_writes block carried before it, was an EXECUTE.
            self.retired = True
            self.connection.close_at = 0  # replaced at the end of the request (close_old_connections)
            logger.warning("prepared statements lost on this connection, sent as they are: %s", exc)
            if not raw.autocommit:
                raise
            return execute(sql, params, many, context)

    def _execute(self, execute, sql, params, many, context):
        kept = _KEPT.get(sql) if not many and ENABLED and PREPARED and not self.retired else None
        if kept is None or not kept.preparable or params is None or len(params) != kept.params:
            return execute(sql, params, many, context)
        if context["cursor"].cursor.name is not None:
            return execute(
                sql, params, many, context
            )  # a server-side cursor declares a query, not an EXECUTE
        if kept.name not in self.names:
            if not self._prepare(kept):
                return execute(sql, params, many, context)
            self.names.add(kept.name)
        if self.connection.queries_logged:
            mogrify = context["cursor"].cursor.mogrify
            if len(self.shown) > 256:  # a held one never sent (rolled back): not kept forever
                self.shown.clear()
            self.shown[mogrify(kept.execute, params).decode()] = mogrify(sql, params).decode()
        return execute(kept.execute, params, many, context)

    def logged_query(self, cursor, sql, params):
        """`ops.last_executed_query`: what the query log shows, each EXECUTE in it (its own or one
        a `held_writes` block carried) as the statement it stands for."""
        query = self.last_executed_query(cursor, sql, params)
        if query and self.shown and "EXECUTE billing_" in query:
            for executed in [executed for executed in self.shown if executed in query]:
                query = query.replace(executed, self.shown.pop(executed))
        return query

    def _prepare(self, kept: _Kept) -> bool:
        raw = self.raw
        status = raw.info.transaction_status
        extensions = self.connection.Database.extensions
        if status == extensions.TRANSACTION_STATUS_INERROR:
            return False  # the statement fails as it would have: the transaction is already lost
        # psycopg2 begins the transaction with the next statement when autocommit is off.
        in_transaction = not raw.autocommit
        try:
            with self.connection.wrap_database_errors, raw.cursor() as cursor:
                if in_transaction:
                    cursor.execute(
                        f"SAVEPOINT billing_prepare; {kept.prepare}; RELEASE SAVEPOINT billing_prepare"
                    )
                else:
                    cursor.execute(kept.prepare)
        except (OperationalError, InterfaceError):
            raise  # the connection, not the statement: as the statement itself would have failed
        except DatabaseError as exc:
            if in_transaction:
                with self.connection.wrap_database_errors, raw.cursor() as cursor:
                    cursor.execute("ROLLBACK TO SAVEPOINT billing_prepare; RELEASE SAVEPOINT billing_prepare")
            code = _pgcode(exc)
            if code == "42P05":  # already prepared on this connection (by this process: the same text)
                return True
            if code in _UNPREPARABLE:
                kept.preparable = False
                logger.warning("statement not prepared, sent as it is: %s: %s", exc, kept.prepare[:200])
            return False  # anything else (a table not there yet, say): sent as it is, this time
        return True


def _gone(exc: DatabaseError) -> bool:
    """The server no longer has a prepared statement, or can no longer run it as prepared."""
    code = _pgcode(exc)
    return code == "26000" or (code == "0A000" and "cached plan must not change result type" in str(exc))


def install_prepared(sender, connection, **kwargs) -> None:
    """`connection_created`: on PostgreSQL with psycopg2 (whose statements Django sends with the
    values interpolated, so each is parsed and planned anew), unless `DATABASE_PREPARED_STATEMENTS`
    is off (a pooler in transaction mode, which moves a client between server connections), send
    the kept statements as prepared statements (`_Prepared`)."""
    from django.conf import settings

    if not getattr(settings, "DATABASE_PREPARED_STATEMENTS", True):
        return
    if connection.vendor != "postgresql" or connection.Database.__name__ != "psycopg2":
        return
    if not any(getattr(wrapper, "billing_prepared", False) for wrapper in connection.execute_wrappers):
        connection.execute_wrappers.insert(0, _Prepared(connection))
