"""The cross-app models: the base of every owned table, and the stored outcomes of idempotent requests.

Model-side only: nothing here imports DRF (the API-side tenancy pieces are in `billing.tenancy`).
"""

import datetime
import json

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

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
        now = now or timezone.now()
        lease = datetime.timedelta(seconds=getattr(settings, cls.LEASE_SECONDS))
        due = Q(status=cls.WAITING, next_attempt_at__lte=now) | Q(
            status=cls.WORKING, lease_expires_at__lt=now
        )
        taken = (
            cls.objects.filter(pk=pk)
            .filter(due)
            .update(
                status=cls.WORKING, lease_expires_at=now + lease, attempts=F("attempts") + 1, updated_at=now
            )
        )
        return taken == 1

    @classmethod
    def retry_delay(cls, attempts: int) -> datetime.timedelta | None:
        """How long after failed attempt number `attempts` the next one comes; None: no more."""
        schedule = getattr(settings, cls.RETRY_SCHEDULE)
        return datetime.timedelta(seconds=schedule[attempts - 1]) if attempts <= len(schedule) else None


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
