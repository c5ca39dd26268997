"""Transactions of the services.

Each public service runs in one transaction (`@service_transaction`). Called inside another service
transaction it would normally take a savepoint, two extra round trips, so that its failure could be
undone alone. Inside `all_or_nothing()` (the idempotency layer's transaction, which is rolled back
whole on any error) there is nothing to undo alone, so services join it without a savepoint.
"""

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.db import transaction

_all_or_nothing: ContextVar[bool] = ContextVar("all_or_nothing", default=False)


def service_transaction(func: Callable) -> Callable:
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with transaction.atomic(savepoint=not _all_or_nothing.get()):
            return func(*args, **kwargs)

    return wrapper


@contextmanager
def all_or_nothing() -> Iterator[None]:
    """A transaction that any error rolls back whole; services join it without savepoints."""
    token = _all_or_nothing.set(True)
    try:
        with transaction.atomic():
            yield
    finally:
        _all_or_nothing.reset(token)
