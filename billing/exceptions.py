"""Domain errors: what a model or service raises when a rule refuses a change.

Plain Python, no DRF, so models and services raise them whatever calls them (the API, the admin, a
management command, the worker). Each carries a stable `code` a client can branch on, the HTTP status
the API answers with, and, when the error is about one input, the `field` it concerns. The one place
that turns them into responses is `billing.errors.exception_handler`.
"""

from http import HTTPStatus


class BillingError(Exception):
    """Base of every domain error. Subclasses set `code` and `status_code`."""

    code = "billing_error"
    status_code = HTTPStatus.CONFLICT
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


class StaleWrite(BillingError):
    """A write based on a read that is no longer current (the row changed since); read again."""

    code = "stale_write"


class InUse(BillingError):
    """The object is referenced by others and cannot be deleted (a customer with invoices)."""

    code = "in_use"


class RequestInProgress(BillingError):
    """An idempotent request with the same key is still running; retry later."""

    code = "request_in_progress"


class BusinessRuleViolation(BillingError):
    """A well-formed request that a business limit refuses (overpayment, empty invoice)."""

    code = "business_rule_violation"
    status_code = HTTPStatus.BAD_REQUEST


class IdempotencyKeyReused(BillingError):
    """The same idempotency key was sent with another body or to another endpoint."""

    code = "idempotency_key_reused"
    status_code = HTTPStatus.UNPROCESSABLE_ENTITY
