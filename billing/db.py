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
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from django.db import connections, models, transaction
from django.db.models.sql import InsertQuery, UpdateQuery
from django.db.transaction import TransactionManagementError

CACHED_ROWS = 16  # statements of up to this many rows are kept; a bigger insert is compiled each time
ENABLED = True  # tests switch it off to capture what the ORM itself sends


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
    return _OneRow(statements[0][0], tuple(getattr(compiler, "returning_params", ())))


def insert_compiled(obj: models.Model, using: str, fields, returning_fields, raw: bool) -> list | None:
    """`Model._do_insert` for one row with the kept statement: the returned values as the ORM
    returns them, or None for "use the ORM" (nothing was sent)."""
    model = obj._meta.concrete_model  # a proxy's rows are its concrete model's
    if raw or not ENABLED or model._meta.parents:
        return None
    connection = connections[using]
    statement = _one_row(model, tuple(fields), tuple(returning_fields or ()), using, connection.vendor)
    if statement is None:
        return None
    params = []
    for field in fields:
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
        return self._compile(rows)


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
    return sql


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
        values = {name: self.kinds[name](value) for name, value in values.items()}
        connection = connections[using]
        template = self._template(using, connection.vendor) if ENABLED else None
        if template is None:
            queryset = self.build(**values).using(using)
            self.model = queryset.model
            return list(queryset)
        queryset, compiler, places, sql, params = template
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
        return queryset, compiler, places, sql, tuple(params)


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
