"""The one place where every error becomes an HTTP response.

Services and models raise the domain errors of `billing.exceptions`; views never catch them. Each carries a stable
`code` a client can branch on and the HTTP status it maps to. Errors about one field of the request
(an overpayment names `amount`) come back in DRF's field-error shape; the others as
`{"detail": ..., "code": ...}`.
"""

import logging

from django.core.exceptions import ObjectDoesNotExist, SuspiciousOperation
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.db.models import ProtectedError, RestrictedError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from billing.exceptions import (  # noqa: F401 - re-exported: the handler's vocabulary
    BillingError,
    BusinessRuleViolation,
    IdempotencyKeyReused,
    InUse,
    InvalidTransition,
    NotEditable,
    RequestInProgress,
    StaleWrite,
)

logger = logging.getLogger(__name__)


def _body(exc: BillingError) -> dict:
    if exc.field:
        return {exc.field: [exc.message]}
    return {"detail": exc.message, "code": exc.code}


def exception_handler(exc, context):
    """DRF's handler, extended with the domain errors and database refusals."""
    if isinstance(exc, BillingError):
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return Response(_body(exc), status=exc.status_code, headers=headers)
    if isinstance(exc, (ProtectedError, RestrictedError)):
        return Response(
            {"detail": "This object is still referenced by other objects.", "code": InUse.code},
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, IntegrityError):
        return _integrity_response(exc)
    if isinstance(exc, SuspiciousOperation):
        # Raised while the view reads the request, e.g. more query parameters than
        # DATA_UPLOAD_MAX_NUMBER_FIELDS: Django would answer with its HTML 400 page.
        logger.warning("suspicious request refused with 400: %s", exc)
        return Response(
            {"detail": "The request is malformed or too large.", "code": "bad_request"},
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(detail=_django_validation_detail(exc))
    elif isinstance(exc, (Http404, ObjectDoesNotExist)):
        # Also a row that vanished under the request (deleted by a concurrent one): 404, not 500.
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        detail = exc.detail if isinstance(exc, exceptions.APIException) else None
        code = getattr(detail, "code", None)
        if code and "code" not in response.data:
            response.data["code"] = code
    return response


def _integrity_response(exc: IntegrityError) -> Response:
    """A refusal by the database. The models and services check every rule first, with a clear
    error, so reaching here means either a rule the code let through (a CHECK: 400, the request can
    never succeed as sent, so it is not worth retrying) or a race on a unique key or a reference that
    a concurrent request won (409 `conflict`: the same request may succeed when retried). Only the
    constraint's name is logged: the error text of some databases carries the row's values."""
    kind, constraint = integrity_violation(exc)
    logger.warning("database refused a write: %s %s", kind, constraint or "(unnamed)")
    if kind in ("check", "not_null"):
        return Response(
            {
                "detail": f"The request breaks the rule {constraint or 'of the data'}; it cannot be "
                "accepted as sent.",
                "code": "constraint_violation",
            },
            status=status.HTTP_400_BAD_REQUEST,
        )
    if kind == "restrict":  # the database refuses the change itself (deleting an issued invoice)
        return Response(
            {"detail": "The database refuses this change to the object.", "code": NotEditable.code},
            status=status.HTTP_409_CONFLICT,
        )
    return Response(
        {
            "detail": "The request conflicts with a concurrent change of the data; retry it.",
            "code": "conflict",
        },
        status=status.HTTP_409_CONFLICT,
    )


# PostgreSQL's SQLSTATEs of the integrity class (the invoice delete trigger raises restrict_violation
# with its name).
_PG_KINDS = {
    "23514": "check",
    "23505": "unique",
    "23503": "foreign_key",
    "23001": "restrict",
    "23502": "not_null",
}


def integrity_violation(exc: IntegrityError) -> tuple[str, str | None]:
    """(kind, constraint name) of a database refusal: kind is check, unique, foreign_key, restrict,
    not_null or unknown."""
    cause = exc.__cause__
    pgcode = getattr(cause, "pgcode", None)
    if pgcode is not None:
        return _PG_KINDS.get(pgcode, "unknown"), getattr(
            getattr(cause, "diag", None), "constraint_name", None
        )
    # SQLite: "CHECK constraint failed: name", "UNIQUE constraint failed: table.col, ...",
    # "FOREIGN KEY constraint failed", or one of our triggers' RAISE(ABORT, '<kind>: <name>').
    message = str(exc)
    for prefix, kind in (
        ("CHECK constraint failed: ", "check"),
        ("UNIQUE constraint failed: ", "unique"),
        ("NOT NULL constraint failed: ", "not_null"),
        ("FOREIGN KEY constraint failed", "foreign_key"),
        ("foreign_key: ", "foreign_key"),
    ):
        if message.startswith(prefix):
            name = message[len(prefix) :].strip()
            if prefix in ("UNIQUE constraint failed: ", "NOT NULL constraint failed: "):
                name = ""  # SQLite names the columns there, not the constraint
            return kind, name or None
    return "unknown", None


def _django_validation_detail(exc: DjangoValidationError):
    if hasattr(exc, "error_dict"):
        return {field: [m for e in errors for m in e.messages] for field, errors in exc.error_dict.items()}
    return {"non_field_errors": exc.messages}
