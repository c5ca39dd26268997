"""Domain errors, and the one place where every error becomes an HTTP response.

Services and models raise `BillingError` subclasses; views never catch them. Each carries a stable
`code` a client can branch on and the HTTP status it maps to. Errors about one field of the request
(an overpayment names `amount`) come back in DRF's field-error shape; the others as
`{"detail": ..., "code": ...}`.
"""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError
from django.db.models import ProtectedError, RestrictedError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


class BillingError(Exception):
    """Base of every domain error. Subclasses set `code` and `status_code`."""

    code = "billing_error"
    status_code = status.HTTP_409_CONFLICT
    field: str | None = None

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        if field is not None:
            self.field = field


class InvalidTransition(BillingError):
    """The object's state forbids the action (send a sent invoice, pay a draft, ...)."""

    code = "invalid_transition"


class NotEditable(BillingError):
    """The object is locked against this change (a paid invoice, a sent invoice's lines)."""

    code = "not_editable"


class InUse(BillingError):
    """The object is referenced by others and cannot be deleted (a customer with invoices)."""

    code = "in_use"


class RequestInProgress(BillingError):
    """An idempotent request with the same key is still running; retry later."""

    code = "request_in_progress"


class BusinessRuleViolation(BillingError):
    """A well-formed request that a business limit refuses (overpayment, empty invoice)."""

    code = "business_rule_violation"
    status_code = status.HTTP_400_BAD_REQUEST


class IdempotencyKeyReused(BillingError):
    """The same idempotency key was sent with another body or to another endpoint."""

    code = "idempotency_key_reused"
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY


def _body(exc: BillingError) -> dict:
    if exc.field:
        return {exc.field: [exc.message]}
    return {"detail": exc.message, "code": exc.code}


def exception_handler(exc, context):
    """DRF's handler, extended with the domain errors and database refusals."""
    if isinstance(exc, BillingError):
        return Response(_body(exc), status=exc.status_code)
    if isinstance(exc, (ProtectedError, RestrictedError)):
        return Response(
            {"detail": "This object is still referenced by other objects.", "code": InUse.code},
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, IntegrityError):
        # The constraints are the last line of defence; the services turn the expected ones
        # into field errors. Reaching here means a concurrent change won a race.
        logger.warning("integrity error turned into 409: %s", exc)
        return Response(
            {
                "detail": "The request conflicts with the current state of the data; retry it.",
                "code": "conflict",
            },
            status=status.HTTP_409_CONFLICT,
        )
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
    elif isinstance(exc, Http404):
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


def _django_validation_detail(exc: DjangoValidationError):
    if hasattr(exc, "error_dict"):
        return {field: [m for e in errors for m in e.messages] for field, errors in exc.error_dict.items()}
    return {"non_field_errors": exc.messages}
