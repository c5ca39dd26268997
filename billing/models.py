"""The cross-app models: the base of every owned table, and the stored outcomes of idempotent requests.

Model-side only: nothing here imports DRF (the API-side tenancy pieces are in `billing.tenancy`).
"""

import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import RegexValidator
from django.db import connections, models, router
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from billing import db
from billing.exceptions import NotEditable, StaleWrite

# A name printed on one line — in an email's headers (the subject), a document's title: no line
# break or other control character, so no header can be smuggled in with it.
ONE_LINE = RegexValidator(
    r"\A[^\x00-\x1f\x7f]*\Z", message="A name is one line: no line breaks or control characters."
)


class CompiledInsertModel(models.Model):
    """A model whose `save()` of a new row sends the ORM's INSERT compiled once (billing.db), not
    compiled again on every insert: the tables every request writes."""

    class Meta:
        abstract = True

    def _do_insert(self, manager, using, fields, returning_fields, raw):
        if db.is_holding(using):  # held (billing.db.held_writes): sent later, so nothing comes back
            returning_fields = []
        returned = db.insert_compiled(self, using, fields, returning_fields, raw)
        if returned is None:
            return super()._do_insert(manager, using, fields, returning_fields, raw)
        return returned


class OwnedModel(CompiledInsertModel):
    """An owned row, written only from what was read.

    `save()` of a row already in the database writes only the columns that differ from what was
    read (`_loaded`, recorded by `from_db`), never falls back to an INSERT (a row deleted meanwhile
    is `DoesNotExist`, which the API answers with 404, instead of coming back to life), and never
    moves a row to another organization. A model with a `version` column is also compare-and-set: the
    UPDATE matches only the version that was read and bumps it, so a write based on a stale read
    (an admin form opened before a payment landed) is refused with `StaleWrite` instead of
    overwriting what happened since. The services read with `select_for_update()`, so under their
    lock the version cannot move and their writes always match.
    """

    # No index of its own: every table's indexes lead with organization_id (Meta.indexes), which
    # serve the lookups by organization, and a redundant index would only slow every write.
    # PROTECT: an organization's books are never deleted by deleting it (the admin shows what
    # stands in the way).
    organization = models.ForeignKey(
        "users.Organization", on_delete=models.PROTECT, related_name="+", db_index=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    def save(self, *args, **kwargs) -> None:
        if self._state.adding:
            # A new object is inserted, never matched against an existing row by its pk.
            kwargs.setdefault("force_insert", True)
            super().save(*args, **kwargs)
        else:
            self._save_existing(*args, **kwargs)
        self._loaded = {
            f.attname: self.__dict__[f.attname]
            for f in self._meta.concrete_fields
            if f.attname in self.__dict__
        }

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance._loaded = {
            name: value
            for name, value in zip(field_names, values, strict=True)
            if value is not models.DEFERRED
        }
        return instance

    def refresh_from_db(self, *args, **kwargs) -> None:
        super().refresh_from_db(*args, **kwargs)
        loaded = getattr(self, "_loaded", None) or {}
        fresh = kwargs.get("fields") or (args[1] if len(args) > 1 else None)
        names = {self._meta.get_field(n).attname for n in fresh} if fresh else None
        for field in self._meta.concrete_fields:
            if field.attname in self.__dict__ and (names is None or field.attname in names):
                loaded[field.attname] = self.__dict__[field.attname]
        self._loaded = loaded

    def changed_fields(self) -> set[str]:
        """The attnames whose value differs from what was read (nothing read: nothing known)."""
        loaded = getattr(self, "_loaded", None) or {}
        return {name for name, value in loaded.items() if getattr(self, name) != value}

    def _save_existing(self, *args, update_fields=None, **kwargs) -> None:
        changed = self.changed_fields()
        if "organization_id" in changed:
            raise NotEditable(f"A {self._meta.verbose_name} never moves to another organization.")
        fields = set(update_fields) if update_fields is not None else changed
        fields -= {"updated_at", "version", self._meta.pk.attname}
        if not fields:
            return  # nothing changed: nothing to write
        fields.add("updated_at")
        has_version = any(f.name == "version" for f in self._meta.concrete_fields)
        if has_version:
            self._expected_version = self._loaded["version"]
            self.version = self._expected_version + 1
            fields.add("version")
        try:
            super().save(*args, update_fields=sorted(fields), **kwargs)
        except BaseException:
            if has_version:
                self.version = self._expected_version
            raise
        finally:
            self._expected_version = None

    def _do_update(self, base_qs, using, pk_val, values, update_fields, forced_update):
        expected = getattr(self, "_expected_version", None)
        # The ORM's statement, compiled once per model and columns (billing.db), or the ORM itself.
        updated = db.update_compiled(self, using, pk_val, values, expected)
        if updated is None:
            if expected is not None:
                base_qs = base_qs.filter(version=expected)
            updated = super()._do_update(base_qs, using, pk_val, values, update_fields, forced_update)
        if updated:
            return True
        name = self._meta.verbose_name
        if type(self)._base_manager.using(using).filter(pk=pk_val).exists():
            raise StaleWrite(f"This {name} was changed since it was read; read it again and retry.")
        raise self.DoesNotExist(f"This {name} no longer exists.")


class OutboxRow(OwnedModel):
    """A row of work for the worker (a PDF to render, an email or a webhook to send), written in
    the transaction of the change that needs it, with its job: what it needs to be claimed, leased,
    retried and given up on. The worker claims it (one conditional UPDATE, committed before any slow
    work), works it outside any transaction, and records the outcome; a worker that dies leaves its
    lease to expire, and a sweeper puts the row back with a new job (the task backend never re-runs
    a task whose worker died). A failure is retried on the schedule `RETRY_SCHEDULE` names (a
    setting), each retry a new job with `run_after`."""

    # The statuses of a subclass: waiting for a worker, worked on (leased), done, given up.
    WAITING: str
    WORKING: str
    DONE: str
    FAILED: str
    RETRY_SCHEDULE = "DELIVERY_RETRY_SCHEDULE"  # the setting: seconds after each failed attempt
    LEASE_SECONDS = "DELIVERY_LEASE_SECONDS"  # the setting: how long a claim holds

    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        abstract = True

    @classmethod
    def claim(cls, pk, *, now: datetime.datetime | None = None) -> bool:
        """Take row `pk` for one attempt, if it is due and no live lease holds it: one statement, so
        two workers never both take it. Returns whether this caller has it."""
        connection = connections[router.db_for_write(cls)]
        statement = _claim_statement(cls, (), connection.alias)
        with connection.cursor() as cursor:
            cursor.execute(statement.update_sql, statement.params(connection, pk, now))
            return cursor.rowcount == 1

    @classmethod
    def claim_and_get(cls, pk, *, related: Sequence[str] = (), now: datetime.datetime | None = None):
        """`claim`, and the row as the claim left it (its attempt counted, its lease taken) with the
        rows its foreign keys `related` name ("invoice", "invoice__organization") joined, as
        `select_related` gives them; None if not taken. One statement on PostgreSQL (the claim's
        RETURNING joined in a WITH), the claim then one SELECT elsewhere."""
        connection = connections[router.db_for_write(cls)]
        statement = _claim_statement(cls, tuple(related), connection.alias)
        params = statement.params(connection, pk, now)
        with connection.cursor() as cursor:
            if statement.claiming_select:
                cursor.execute(statement.select_sql, params)
            else:
                cursor.execute(statement.update_sql, params)
                if cursor.rowcount != 1:
                    return None
                cursor.execute(statement.select_sql, [pk])
            row = cursor.fetchone()
        return statement.instance(row, connection) if row is not None else None

    @classmethod
    def retry_delay(cls, attempts: int) -> datetime.timedelta | None:
        """How long after failed attempt number `attempts` the next one comes; None: no more."""
        schedule = getattr(settings, cls.RETRY_SCHEDULE)
        return datetime.timedelta(seconds=schedule[attempts - 1]) if attempts <= len(schedule) else None


# --- the claim's statements ----------------------------------------------------------------------
# Written once per model (and joined rows) and database, not compiled by the ORM on every claim: the
# worker claims a row for every job it runs. tests/test_worker_statements.py pins what they do
# against the ORM's own UPDATE and select_related.


@dataclass(frozen=True)
class _ClaimStatement:
    update_sql: str  # the claim alone
    select_sql: str  # the row and its joined rows: claiming them too when `claiming_select`
    claiming_select: bool
    model: type
    # (model, fields, converters of each field, the relation it is set on: (parent position, field))
    parts: tuple

    def params(self, connection, pk, now: datetime.datetime | None) -> list:
        model = self.model
        now = now or timezone.now()
        lease = now + datetime.timedelta(seconds=getattr(settings, model.LEASE_SECONDS))
        at = connection.ops.adapt_datetimefield_value
        return [model.WORKING, at(lease), at(now), pk, model.WAITING, at(now), model.WORKING, at(now)]

    def instance(self, row: Sequence, connection):
        """The claimed row and its joined rows, as the ORM would have built them."""
        instances: list = []
        start = 0
        for model, fields, converters, parent in self.parts:
            values = list(row[start : start + len(fields)])
            start += len(fields)
            for k, field_converters in enumerate(converters):
                for convert in field_converters:
                    values[k] = convert(values[k], fields[k].get_col(model._meta.db_table), connection)
            obj = model.from_db(connection.alias, [f.attname for f in fields], values)
            if parent is not None:
                position, relation = parent
                relation.set_cached_value(instances[position], obj)
            instances.append(obj)
        return instances[0]


_claim_statements: dict = {}


def _claim_statement(model: type, related: tuple[str, ...], using: str) -> _ClaimStatement:
    key = (model, related, using)
    if key not in _claim_statements:
        _claim_statements[key] = _write_claim_statement(model, related, connections[using])
    return _claim_statements[key]


def _write_claim_statement(model: type, related: tuple[str, ...], connection) -> _ClaimStatement:
    """The claim as `OutboxRow.claim` sent it with the ORM (`filter(pk=..).filter(due).update(...)`),
    and the read of the claimed row with `related` joined as `select_related` reads them."""
    q = connection.ops.quote_name
    table, meta = q(model._meta.db_table), model._meta
    pk = q(meta.pk.column)
    status, attempts, next_at, lease, updated = (
        q(meta.get_field(name).column)
        for name in ("status", "attempts", "next_attempt_at", "lease_expires_at", "updated_at")
    )
    update_sql = (
        f"UPDATE {table} SET {status} = %s, {lease} = %s, {attempts} = ({table}.{attempts} + 1), "  # noqa: S608
        f"{updated} = %s WHERE ({table}.{pk} = %s AND (({table}.{status} = %s AND "
        f"{table}.{next_at} <= %s) OR ({table}.{status} = %s AND {table}.{lease} < %s)))"
    )
    # The claimed row is "c"; the joined ones "r1", "r2", ... in the order `related` names them.
    tables = [(model, None, "c")]
    joins = []
    for name in related:
        *above, last = name.split("__")
        position = related.index("__".join(above)) + 1 if above else 0
        owner, _, alias = tables[position]
        relation = owner._meta.get_field(last)
        target, this = relation.related_model, f"r{len(tables)}"
        joins.append(
            f"{'LEFT OUTER JOIN' if relation.null else 'INNER JOIN'} {q(target._meta.db_table)} {this} "
            f"ON ({this}.{q(relation.target_field.column)} = {alias}.{q(relation.column)})"
        )
        tables.append((target, (position, relation), this))
    columns, parts = [], []
    for owner, parent, alias in tables:
        fields = tuple(owner._meta.concrete_fields)
        columns += [f"{alias}.{q(f.column)}" for f in fields]
        converters = tuple(
            tuple(
                connection.ops.get_db_converters(f.get_col(owner._meta.db_table))
                + f.get_db_converters(connection)
            )
            for f in fields
        )
        parts.append((owner, fields, converters, parent))
    selected, joined = ", ".join(columns), " ".join(joins)
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        select_sql = f"WITH c AS ({update_sql} RETURNING *) SELECT {selected} FROM c {joined}"  # noqa: S608
    else:
        select_sql = f"SELECT {selected} FROM {table} c {joined} WHERE c.{pk} = %s"  # noqa: S608
    return _ClaimStatement(
        update_sql=update_sql,
        select_sql=select_sql,
        claiming_select=postgresql,
        model=model,
        parts=tuple(parts),
    )


class IdempotencyKey(CompiledInsertModel):
    """The outcome of the first completed request made with an `Idempotency-Key`.

    Written in the same transaction as the request's own writes, so a key exists exactly when its
    request took effect (or was refused with a 4xx); a crash leaves neither behind. `operation` names
    what the request did (`invoice_create`, `payment_record`): the same key used for another
    operation is refused, whatever URL it came through.
    """

    # Scoped per organization: its members and API keys share one key space. No index of its own:
    # the unique (organization, key) serves every lookup.
    organization = models.ForeignKey(
        "users.Organization", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    key = models.CharField(max_length=255)
    operation = models.CharField(max_length=100)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the canonical request body.")
    response_status = models.PositiveSmallIntegerField()
    # The response as JSON text, not jsonb: a 4xx body may echo a client's string with a NUL
    # character, which JSON text escapes ("\\u0000") and PostgreSQL's jsonb cannot hold.
    response_body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "key"], name="idempotency_org_key_unique")
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self) -> str:
        return f"{self.key} ({self.operation})"

    @staticmethod
    def encode_body(data) -> str:
        return json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=True, separators=(",", ":"))

    @property
    def body(self):
        return json.loads(self.response_body)


class Job(CompiledInsertModel, DBTaskResult):
    """django-tasks-db's job row, inserted with the kept statement (`billing.tasks.DatabaseBackend`):
    every send, payment and webhook-bearing write enqueues one. Nothing else differs: same table,
    same fields, read and run by the library as its own rows."""

    class Meta:
        proxy = True

    def __str__(self) -> str:
        return f"{self.task_path} {self.id} ({self.status})"
