"""Idempotency keys for the operations that create something (`invoice_create`, `payment_record`).

A request with an `Idempotency-Key` header runs at most once per organization and key:

- the same key, operation and body again returns the stored status and body, with no second write
  (and an `Idempotent-Replayed: true` header);
- the same key with another body or for another operation is 422;
- while the first request with a key is still running, a duplicate is 409 and may retry;
- 5xx outcomes are not stored, so the request can be retried with the same key.

The key row is inserted in the same transaction as the request's writes. On PostgreSQL a
transaction-scoped advisory lock on (organization, key) tells a duplicate, without waiting, that the first
is still running; on SQLite every write transaction is already serialized (BEGIN IMMEDIATE), so a
duplicate waits and then finds the stored outcome. The unique (organization, key) constraint is the last line.

The transaction is this module's own: the claim, the view's writes and the stored outcome commit
together or not at all. The services the view calls open their own `transaction.atomic()` inside
it, which is a savepoint there; that costs two statements on an idempotent request and keeps every
service's transaction the plain, documented Django one whoever calls it.
"""

import functools
import hashlib
import json

from django.db import IntegrityError, connection, transaction
from rest_framework import status
from rest_framework.response import Response

from billing import db
from billing.errors import exception_handler
from billing.exceptions import BusinessRuleViolation, IdempotencyKeyReused, RequestInProgress
from billing.models import IdempotencyKey
from billing.tenancy import organization_of

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


class InvalidIdempotencyKey(BusinessRuleViolation):
    code = "invalid_idempotency_key"


def idempotent(operation: str):
    """Decorate a DRF view method that creates something; `operation` names what it does (the
    service it calls, e.g. "payment_record"), and a key is bound to that operation."""

    def decorator(view_method):
        @functools.wraps(view_method)
        def wrapper(view, request, *args, **kwargs):
            key = request.headers.get(HEADER)
            if key is None:
                return view_method(view, request, *args, **kwargs)
            # As the schema says (billing.schema.IDEMPOTENCY_KEY); HTTP itself strips outer spaces.
            if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or key != key.strip(" "):
                raise InvalidIdempotencyKey(
                    f"The {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable characters, "
                    "without a space at either end."
                )
            organization = organization_of(request)
            fingerprint = _fingerprint(request.data)
            context = {"view": view, "request": request}
            try:
                # Held writes (billing.db.held_writes): the write's outbox rows (its events) ride
                # with its next statement rather than cost a round trip of their own.
                with transaction.atomic(), db.held_writes():
                    stored = _claim(
                        organization=organization, key=key, operation=operation, fingerprint=fingerprint
                    )
                    if stored is not None:
                        return stored
                    response = view_method(view, request, *args, **kwargs)
                    _store(organization, key, operation, fingerprint, response)
                    return response
            except (RequestInProgress, IdempotencyKeyReused):
                raise
            except IntegrityError as exc:
                if not _key_exists(organization, key):
                    raise
                # A duplicate slipped past the lock and committed first: answer with its outcome.
                with transaction.atomic():
                    stored = _claim(
                        organization=organization, key=key, operation=operation, fingerprint=fingerprint
                    )
                if stored is None:
                    raise exc
                return stored
            except Exception as exc:
                # The request was refused and its writes rolled back; a 4xx outcome is stored so a
                # retry gets the same answer, a 5xx is not.
                response = exception_handler(exc, context)
                if response is None or response.status_code >= 500:
                    raise
                with transaction.atomic():
                    stored = _claim(
                        organization=organization, key=key, operation=operation, fingerprint=fingerprint
                    )
                    if stored is not None:
                        return stored
                    _store(organization, key, operation, fingerprint, response)
                return response

        wrapper.idempotent = True
        return wrapper

    return decorator


def _fingerprint(data) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _advisory_lock_id(organization_id: int, key: str) -> int:
    digest = hashlib.sha256(f"idempotency:{organization_id}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _claim(*, organization, key: str, operation: str, fingerprint: str) -> Response | None:
    """Inside a transaction: lock the key, then return the stored outcome, or None to proceed."""
    if connection.vendor == "postgresql":
        locked, stored = _lock_and_read(organization.pk, key)
        if not locked:
            raise RequestInProgress(f"A request with this {HEADER} is still running; retry shortly.")
    else:
        stored = IdempotencyKey.objects.filter(organization=organization, key=key).first()
    if stored is None:
        return None
    if stored.operation != operation or stored.fingerprint != fingerprint:
        raise IdempotencyKeyReused(
            f"This {HEADER} was already used for another request "
            f"({stored.operation}); use a new key for a new request."
        )
    response = Response(stored.body, status=stored.response_status)
    response["Idempotent-Replayed"] = "true"
    return response


def _lock_and_read(organization_id: int, key: str) -> tuple[bool, IdempotencyKey | None]:
    """One round trip: try the key's advisory lock (never waiting) and read its stored outcome.

    The read's snapshot is taken as the statement starts, so a first request that commits between
    that and the lock is not seen here; this one then proceeds, and its key insert is refused by
    the unique constraint, which `idempotent` answers with the stored outcome after all.
    """
    with connection.cursor() as cursor:
        cursor.execute(_lock_and_read_sql(), [_advisory_lock_id(organization_id, key), organization_id, key])
        acquired, stored_operation, fingerprint, response_status, body = cursor.fetchone()
    if stored_operation is None:
        return acquired, None
    stored = IdempotencyKey(
        organization_id=organization_id,
        key=key,
        operation=stored_operation,
        fingerprint=fingerprint,
        response_status=response_status,
        response_body=body,
    )
    return acquired, stored


@functools.cache
def _lock_and_read_sql() -> str:
    # The table is the model's own, quoted; every value is a bound parameter. Kept (billing.db.keep):
    # prepared once per connection on PostgreSQL.
    table = connection.ops.quote_name(IdempotencyKey._meta.db_table)
    return db.keep(
        "SELECT lock.acquired, key.operation, key.fingerprint, key.response_status, key.response_body "  # noqa: S608
        "FROM (SELECT pg_try_advisory_xact_lock(%s) AS acquired) AS lock "
        f"LEFT JOIN {table} AS key ON key.organization_id = %s AND key.key = %s"
    )


def _store(organization, key: str, operation: str, fingerprint: str, response: Response) -> None:
    if response.status_code >= status.HTTP_500_INTERNAL_SERVER_ERROR:
        return
    IdempotencyKey.objects.create(
        organization=organization,
        key=key,
        operation=operation,
        fingerprint=fingerprint,
        response_status=response.status_code,
        response_body=IdempotencyKey.encode_body(response.data),
    )


def _key_exists(organization, key: str) -> bool:
    return IdempotencyKey.objects.filter(organization=organization, key=key).exists()
