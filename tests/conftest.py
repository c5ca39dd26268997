from decimal import Decimal

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.cache import caches
from knox.models import AuthToken
from rest_framework.test import APIClient

from billing.models import OwnedModel
from customers.models import Customer
from invoices.models import Invoice
from tests.factories import PASSWORD as PASSWORD  # re-exported: the tests import it from here
from tests.factories import CustomerFactory, InvoiceFactory, LineFactory, UserFactory

User = get_user_model()


@pytest.fixture(autouse=True)
def _fast_hashing_and_fresh_throttles(settings, monkeypatch):
    import time

    from users.throttling import LoginRateThrottle

    # A cheap hasher keeps the suite fast; the production hasher is Django's default (PBKDF2).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Throttle counts are rows of users.ThrottleCounter, emptied by each test's rollback (or flush, for
    # transactional tests). Their windows are fixed, aligned to the clock: the throttle's clock stands
    # still, so that a test's requests never fall on both sides of a window's end (a test of windows
    # moves it itself). The default cache is per process: fresh for each test.
    now = time.time()
    monkeypatch.setattr(LoginRateThrottle, "timer", staticmethod(lambda: now))
    caches["default"].clear()
    yield
    caches["default"].clear()


@pytest.fixture
def api():
    return APIClient()


def make_user(username: str) -> User:
    """A user who logs in with PASSWORD, whose email is `username@example.com`."""
    return UserFactory(username=username)


def client_for(user: User) -> APIClient:
    _, token = AuthToken.objects.create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def alice(db):
    return make_user("alice")


@pytest.fixture
def bob(db):
    return make_user("bob")


@pytest.fixture
def alice_api(alice):
    return client_for(alice)


@pytest.fixture
def bob_api(bob):
    return client_for(bob)


@pytest.fixture
def make_customer():
    """`make_customer(owner, **fields)`: a customer of `owner` (CustomerFactory: "Acme Corp")."""

    def make(owner: User, **fields) -> Customer:
        return CustomerFactory(owner=owner, **fields)

    return make


@pytest.fixture
def alice_customer(alice, make_customer):
    return make_customer(alice, name="Acme Corp")


@pytest.fixture
def make_invoice():
    """An invoice of `owner` with one line of `amount`, sent unless `send=False` (InvoiceFactory:
    through invoice_create and invoice_send); a new customer of `owner` unless one is given."""

    def make(
        owner: User, customer: Customer | None = None, *, amount: str = "100.00", send: bool = True, **fields
    ) -> Invoice:
        lines = [LineFactory(description="Services", quantity=Decimal("1"), unit_price=Decimal(amount))]
        return InvoiceFactory(
            owner=owner, customer=customer or CustomerFactory(owner=owner), lines=lines, sent=send, **fields
        )

    return make


@pytest.fixture
def other_customer(alice, make_customer):
    return make_customer(alice, name="Globex", email="ap@globex.test")


def row_counts() -> dict[str, int]:
    """How many rows each owned table (and the lines) holds: to show that a refused write wrote nothing."""
    models = [m for m in apps.get_models() if issubclass(m, OwnedModel)] + [
        apps.get_model("invoices", "Line")
    ]
    return {m._meta.label: m.objects.count() for m in models}
