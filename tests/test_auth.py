from datetime import timedelta

import pytest
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.conftest import PASSWORD, client_for
from users.models import ThrottleCounter
from users.throttling import throttle_key

pytestmark = pytest.mark.django_db

INVALID = {"non_field_errors": ["Unable to log in with the provided credentials."]}


def test_login_returns_a_token_that_authenticates(api, alice):
    response = api.post("/api/login/", {"username": "alice", "password": PASSWORD})

    assert response.status_code == 200
    assert set(response.json()) == {"token", "expiry"}
    api.credentials(HTTP_AUTHORIZATION=f"Token {response.json()['token']}")
    me = api.get("/api/me/")
    assert me.status_code == 200
    assert me.json() == {"id": alice.id, "username": "alice", "email": "alice@example.com"}


def test_login_token_is_stored_hashed_and_expires_after_the_configured_ttl(api, alice, settings):
    response = api.post("/api/login/", {"username": "alice", "password": PASSWORD})
    token = response.json()["token"]

    stored = AuthToken.objects.get(user=alice)
    assert token not in (stored.digest, stored.token_key)
    assert len(stored.digest) == 128  # sha512 hex digest, not the token
    expected = timezone.now() + timedelta(hours=settings.TOKEN_TTL_HOURS)
    assert abs((stored.expiry - expected).total_seconds()) < 60


def test_wrong_password_and_unknown_user_get_the_same_answer(api, alice):
    wrong_password = api.post("/api/login/", {"username": "alice", "password": "nope"})
    unknown_user = api.post("/api/login/", {"username": "nobody", "password": PASSWORD})

    assert wrong_password.status_code == unknown_user.status_code == 400
    assert wrong_password.json() == unknown_user.json() == INVALID
    assert not AuthToken.objects.exists()


def test_login_rejects_missing_fields(api):
    response = api.post("/api/login/", {})

    assert response.status_code == 400
    assert set(response.json()) == {"username", "password"}


def test_login_is_throttled_per_client(api, alice, settings):
    settings.LOGIN_THROTTLE_RATE = "3/min"
    statuses = [
        api.post("/api/login/", {"username": "alice", "password": "bad"}).status_code for _ in range(4)
    ]

    assert statuses == [400, 400, 400, 429]
    # Throttled even with the right password: a brute-force run cannot slip the real one in.
    assert api.post("/api/login/", {"username": "alice", "password": PASSWORD}).status_code == 429


def test_the_login_throttle_counts_in_a_table_every_worker_shares(api, alice, settings):
    """The counts are rows of ThrottleCounter, so every worker process and every server sees them."""
    settings.LOGIN_THROTTLE_RATE = "2/min"
    statuses = [
        api.post("/api/login/", {"username": "alice", "password": "bad"}).status_code for _ in range(3)
    ]

    assert statuses == [400, 400, 429]
    counter = ThrottleCounter.objects.get()
    assert counter.key == throttle_key(scope="login", address="127.0.0.1")
    assert counter.count == 3


def test_logout_revokes_the_token(alice):
    client = client_for(alice)
    other_device = client_for(alice)

    assert client.post("/api/logout/").status_code == 204
    assert client.get("/api/me/").status_code == 401
    assert other_device.get("/api/me/").status_code == 200


def test_expired_token_is_refused_and_deleted(alice):
    client = client_for(alice)
    AuthToken.objects.filter(user=alice).update(expiry=timezone.now() - timedelta(seconds=1))

    response = client.get("/api/me/")

    assert response.status_code == 401
    assert not AuthToken.objects.filter(user=alice).exists()


@pytest.mark.parametrize(
    "header",
    [None, "Token", "Token nonsense", "Token a b", "Bearer abc", "Token " + "x" * 64, "Token \xff\xfe"],
)
def test_it_rejects_requests_without_a_valid_token(header):
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)

    response = client.get("/api/customers/")

    assert response.status_code == 401
    assert "detail" in response.json()


def test_inactive_user_token_is_refused(alice):
    client = client_for(alice)
    alice.is_active = False
    alice.save()

    assert client.get("/api/me/").status_code == 401


def test_register_creates_a_user_who_can_log_in(api):
    response = api.post(
        "/api/register/", {"username": "carol", "password": "a-long-and-unusual-pass", "email": "c@x.test"}
    )

    assert response.status_code == 201
    body = response.json()
    assert body == {"id": body["id"], "username": "carol", "email": "c@x.test"}
    login = api.post("/api/login/", {"username": "carol", "password": "a-long-and-unusual-pass"})
    assert login.status_code == 200


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"username": "dave", "password": "short"}, "password"),
        ({"username": "dave", "password": "12345678901"}, "password"),
        ({"username": "dave", "password": "password123"}, "password"),
        ({"username": "", "password": "a-long-and-unusual-pass"}, "username"),
        ({"username": "bad name!", "password": "a-long-and-unusual-pass"}, "username"),
        ({"username": "dave", "password": "a-long-and-unusual-pass", "email": "not-an-email"}, "email"),
        ({"password": "a-long-and-unusual-pass"}, "username"),
        ({"username": "dave"}, "password"),
    ],
)
def test_register_rejects_invalid_input(api, payload, field):
    response = api.post("/api/register/", payload)

    assert response.status_code == 400
    assert field in response.json()


def test_register_rejects_a_taken_username(api, alice):
    response = api.post("/api/register/", {"username": "alice", "password": "a-long-and-unusual-pass"})

    assert response.status_code == 400
    assert "username" in response.json()


def test_register_can_be_closed(api, settings):
    settings.REGISTRATION_OPEN = False

    response = api.post("/api/register/", {"username": "erin", "password": "a-long-and-unusual-pass"})

    assert response.status_code == 403
    assert response.json()["code"] == "registration_closed"


def test_register_password_validation_can_be_switched_off(api, settings):
    settings.AUTH_PASSWORD_VALIDATORS = []

    response = api.post("/api/register/", {"username": "frank", "password": "1"})

    assert response.status_code == 201


def test_register_is_throttled(api, settings):
    settings.LOGIN_THROTTLE_RATE = "2/min"
    statuses = [api.post("/api/register/", {"username": "", "password": ""}).status_code for _ in range(3)]

    assert statuses == [400, 400, 429]
