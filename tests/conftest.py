import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from knox.models import AuthToken
from rest_framework.test import APIClient

from customers.models import Customer

User = get_user_model()

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def _fast_hashing_and_fresh_throttles(settings):
    # A cheap hasher keeps the suite fast; the production hasher is Django's default (PBKDF2).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()
    yield
    cache.clear()


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
