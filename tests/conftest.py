import os
from decimal import Decimal
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.test import override_settings
from rest_framework.test import APIClient

from billing.models import OwnedModel
from customers.models import Customer
from invoices.models import Invoice
from tests.factories import PASSWORD as PASSWORD  # re-exported: the tests import it from here
from tests.factories import CustomerFactory, InvoiceFactory, LineFactory, UserFactory, org
from users.models import ApiKey, Membership, MemberToken, Organization
from users.services import api_key_create

User = get_user_model()


@pytest.fixture(scope="session", autouse=True)
def _media_root_per_xdist_worker():
    """Under pytest-xdist (`-n N`), each worker stores its PDFs under a MEDIA_ROOT of its own
    (`<MEDIA_ROOT>-gw0`, ...): each worker has its own test database, so two workers' invoices can
    share an id, and their stored files a name. The processes a test starts (workers, `manage.py`)
    inherit it through the environment. Without xdist, nothing changes."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        yield
        return
    previous = os.environ.get("MEDIA_ROOT")
    root = f"{django_settings.MEDIA_ROOT}-{worker}"
    os.environ["MEDIA_ROOT"] = root
    try:
        with override_settings(MEDIA_ROOT=Path(root)):
            yield
    finally:
        if previous is None:
            os.environ.pop("MEDIA_ROOT", None)
        else:
            os.environ["MEDIA_ROOT"] = previous


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
    """A user who logs in with PASSWORD, whose email is `username@example.com`, owner of an
    organization of the same name (`org(user)`), as registration makes them."""
    return UserFactory(username=username)


def client_for(user: User, organization: Organization | None = None) -> APIClient:
    """A client with a token of `user`'s membership of `organization` (default: their own)."""
    membership = Membership.objects.get(user=user, organization=organization or org(user))
    _, token = MemberToken.objects.create(user=user, membership=membership)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def member_of(organization: Organization, username: str, role: str) -> User:
    """A new user who is a member of `organization` with `role` (and owner of their own one)."""
    user = make_user(username)
    Membership.objects.create(organization=organization, user=user, role=role)
    return user


def key_client(organization: Organization, role: str = "admin", **fields) -> tuple[APIClient, ApiKey]:
    """A client with a new API key of `organization`."""
    api_key, key = api_key_create(organization_id=organization.pk, name=f"{role} key", role=role, **fields)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client, api_key


@pytest.fixture
def alice(db):
    return make_user("alice")


@pytest.fixture
def bob(db):
    return make_user("bob")


@pytest.fixture
def alice_org(alice):
    return org(alice)


@pytest.fixture
def bob_org(bob):
    return org(bob)


@pytest.fixture
def alice_api(alice):
    return client_for(alice)


@pytest.fixture
def bob_api(bob):
    return client_for(bob)


@pytest.fixture
def make_customer():
    """`make_customer(organization, **fields)`: a customer of `organization` (or of a user's own;
    CustomerFactory: "Acme Corp")."""

    def make(organization, **fields) -> Customer:
        return CustomerFactory(organization=organization, **fields)

    return make


@pytest.fixture
def alice_customer(alice, make_customer):
    return make_customer(alice, name="Acme Corp")


@pytest.fixture
def make_invoice():
    """An invoice of `organization` (or of a user's own) with one line of `amount`, sent unless
    `send=False` (InvoiceFactory: through invoice_create and invoice_send); a new customer of the
    organization unless one is given."""

    def make(
        organization, customer: Customer | None = None, *, amount: str = "100.00", send: bool = True, **fields
    ) -> Invoice:
        organization = org(organization)
        lines = [LineFactory(description="Services", quantity=Decimal("1"), unit_price=Decimal(amount))]
        return InvoiceFactory(
            organization=organization,
            customer=customer or CustomerFactory(organization=organization),
            lines=lines,
            sent=send,
            **fields,
        )

    return make


@pytest.fixture
def other_customer(alice, make_customer):
    return make_customer(alice, name="Globex", email="ap@globex.test")


def row_counts() -> dict[str, int]:
    """How many rows each organization-owned table (and the lines) holds: to show that a refused write wrote nothing."""
    models = [m for m in apps.get_models() if issubclass(m, OwnedModel)] + [
        apps.get_model("invoices", "Line")
    ]
    return {m._meta.label: m.objects.count() for m in models}
