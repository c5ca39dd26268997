"""The token credential travels as `Authorization: Token <key>` or `Authorization: Bearer <key>`; a
header in any other form is a 401 that says what is wrong."""

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient, APIRequestFactory

from tests.factories import org
from users.auth import ExpiringTokenAuthentication
from users.models import Membership, MemberToken

pytestmark = pytest.mark.django_db

MALFORMED = 'Authorization header must be "Token <key>" or "Bearer <key>"'


@pytest.fixture
def alice_key(alice) -> str:
    membership = Membership.objects.get(user=alice, organization=org(alice))
    return MemberToken.objects.create(user=alice, membership=membership)[1]


def me(header: str | None):
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    return client.get("/api/me/")


@pytest.mark.parametrize("prefix", ["Token", "Bearer", "bearer", "BEARER", "token"])
def test_it_accepts_the_key_with_either_prefix(alice, alice_key, prefix):
    response = me(f"{prefix} {alice_key}")

    assert response.status_code == 200
    assert response.json()["username"] == "alice"


def test_bearer_authenticates_in_one_query(alice, alice_key):
    request = APIRequestFactory().get("/api/me/", HTTP_AUTHORIZATION=f"Bearer {alice_key}")

    with CaptureQueriesContext(connection) as queries:
        user, token = ExpiringTokenAuthentication().authenticate(request)
        # What the permission class and every view read of the credential comes with it.
        bound = (token.organization.name, token.role, token.actor.username, user.is_active)

    assert user == alice
    assert token.user_id == alice.pk
    assert bound == ("alice", "owner", "alice", True)
    assert len(queries) == 1


@pytest.mark.parametrize(
    ("header", "what"),
    [
        ("{key}", 'the "Token" or "Bearer" prefix is missing'),
        ("Bearer", "the key is missing"),
        ("Token", "the key is missing"),
        ("Bearer   ", "the key is missing"),
        ("Bearer {key} extra", "a key has no spaces"),
        ("Token {key} {key}", "a key has no spaces"),
        ("Basic YWxpY2U6cHc=", 'the scheme is not "Token" or "Bearer"'),
        ("Bearer: {key}", 'the scheme is not "Token" or "Bearer"'),
    ],
)
def test_a_malformed_header_is_a_401_that_says_what_is_wrong(alice_key, header, what):
    response = me(header.format(key=alice_key))

    assert response.status_code == 401
    assert response.json() == {"detail": f"{MALFORMED}: {what}.", "code": "authentication_failed"}
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("header", [None, ""])
def test_no_header_is_still_credentials_not_provided(header):
    response = me(header)

    assert response.status_code == 401
    assert response.json() == {
        "detail": "Authentication credentials were not provided.",
        "code": "not_authenticated",
    }


@pytest.mark.parametrize("prefix", ["Token", "Bearer"])
def test_a_wrong_key_with_either_prefix_is_invalid(alice_key, prefix):
    response = me(f"{prefix} {alice_key[:-1]}x")

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token.", "code": "authentication_failed"}


def test_a_key_revoked_by_logout_stops_working_with_bearer(alice_key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {alice_key}")

    assert client.post("/api/logout/").status_code == 204
    assert client.get("/api/me/").status_code == 401


def test_the_schema_says_both_prefixes_work_and_takes_the_raw_key(api):
    schema = api.get("/api/schema/?format=json").json()
    scheme = schema["components"]["securitySchemes"]["tokenAuth"]

    # An http bearer scheme: Swagger UI's Authorize takes the key alone and sends "Bearer <key>".
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for text in (
        scheme["description"],
        schema["info"]["description"],
        settings.SPECTACULAR_SETTINGS["DESCRIPTION"],
    ):
        assert "Bearer <key>" in text
        assert "Token <key>" in text


@pytest.mark.parametrize(
    "header",
    ["Token {key}\x00", "Bearer \x00{key}", "Token {key}\x7f", "Bearer é{key}", "Token {key}\x01", "Token €"],
)
def test_a_key_with_a_character_no_key_has_is_invalid_not_a_crash(alice_key, header):
    # PostgreSQL refuses a NUL in a query's string parameter: looked up, it was a 500.
    response = me(header.format(key=alice_key))

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token.", "code": "authentication_failed"}
