"""Statements compiled once: the ORM's own SQL for an INSERT of a model's rows, kept per database
and row count, so a hot write (an event of every request) does not pay the ORM's compilation on
every request. The SQL is the ORM's (`InsertQuery` compiled by the connection's compiler, as
`bulk_create` compiles it) and the values are prepared by the model's fields
(`get_db_prep_save`), as `bulk_create` prepares them; tests/test_events.py pins the statement equal
to `bulk_create`'s on both databases.

Only for rows whose every value is given (no database defaults, no expressions, no RETURNING).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache

from django.db import connections, models
from django.db.models.sql import InsertQuery

CACHED_ROWS = 16  # statements of up to this many rows are kept; a bigger insert is compiled each time


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
                sql, columnar = self.sql(len(batch))
                cursor.execute(sql, self.params(batch, columnar=columnar))

    def sql(self, rows: int) -> tuple[str, bool]:
        """The statement for `rows` rows (compiled once for up to CACHED_ROWS), and whether it takes
        its values a column at a time (PostgreSQL's `INSERT ... SELECT * FROM UNNEST(...)`, Django's
        form for a bulk insert of plain fields) or a row at a time."""
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

    def _compile(self, rows: int) -> tuple[str, bool]:
        # Placeholder objects: the statement's text does not depend on the values of plain fields.
        objs = [self.model(**dict.fromkeys(self.attnames)) for _ in range(rows)]
        query = InsertQuery(self.model)
        query.insert_values(self.fields, objs, raw=False)
        [(sql, params)] = query.get_compiler(using=self.using).as_sql()
        columnar = rows > 1 and len(params) == len(self.fields)
        if not columnar and len(params) != rows * len(self.fields):
            raise NotImplementedError(
                f"an INSERT of {self.model.__name__} with parameters Django lays out otherwise"
            )
        return sql, columnar

    @cache  # noqa: B019 - one per CompiledInsert, which live as module constants
    def _cached_sql(self, vendor: str, rows: int) -> tuple[str, bool]:
        return self._compile(rows)
