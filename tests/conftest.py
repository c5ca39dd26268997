import pytest
from django.contrib.auth import get_user_model
from django.core.cache import caches
from knox.models import AuthToken
from rest_framework.test import APIClient

from customers.models import Customer

User = get_user_model()

PASSWORD = "correct-horse-battery-staple"


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
    return User.objects.create_user(username=username, password=PASSWORD, email=f"{username}@example.com")


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
    def make(owner: User, **fields) -> Customer:
        fields.setdefault("name", "Acme Corp")
        fields.setdefault("email", "billing@acme.test")
        return Customer.objects.create(owner=owner, **fields)

    return make


@pytest.fixture
def alice_customer(alice, make_customer):
    return make_customer(alice, name="Acme Corp")


@pytest.fixture
def make_invoice(make_customer):
    """An invoice of `owner` with one line of `amount`, sent unless `send=False`."""
    import datetime
    from decimal import Decimal

    from invoices.services import invoice_create, invoice_send

    def make(
        owner: User, customer: Customer | None = None, *, amount: str = "100.00", send: bool = True, **fields
    ):
        customer = customer or make_customer(owner)
        fields.setdefault("due_date", datetime.date(2030, 1, 31))
        lines = [{"description": "Services", "quantity": Decimal("1"), "unit_price": Decimal(amount)}]
        invoice = invoice_create(owner=owner, customer_id=customer.pk, lines=lines, **fields)
        if send:
            invoice = invoice_send(owner=owner, invoice_id=invoice.pk)
        return invoice

    return make


@pytest.fixture
def other_customer(alice, make_customer):
    return make_customer(alice, name="Globex", email="ap@globex.test")
