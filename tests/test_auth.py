from datetime import timedelta

import jsonschema_rs
import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework.test import APIClient

from tests.conftest import PASSWORD, client_for
from tests.schema_helpers import assert_matches, openapi, response_schema
from users.models import Membership, Organization, ThrottleCounter
from users.models import MemberToken as AuthToken
from users.throttling import throttle_key

pytestmark = pytest.mark.django_db

User = get_user_model()

INVALID = {"non_field_errors": ["Unable to log in with the provided credentials."]}


def test_login_returns_a_token_that_authenticates(api, alice, alice_org):
    response = api.post("/api/login/", {"username": "alice", "password": PASSWORD})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "expiry", "organization", "role"}
    assert body["organization"] == {"id": alice_org.pk, "name": "alice"}
    assert body["role"] == "owner"
    stored = AuthToken.objects.get(user=alice)
    assert stored.membership == Membership.objects.get(user=alice, organization=alice_org)
    assert parse_datetime(body["expiry"]) == stored.expiry
    assert_matches(response_schema("/api/login/", "post", 200), body)
    api.credentials(HTTP_AUTHORIZATION=f"Token {body['token']}")
    me = api.get("/api/me/")
    assert me.status_code == 200
    assert me.json() == {
        "id": alice.id,
        "username": "alice",
        "email": "alice@example.com",
        "organization": {"id": alice_org.pk, "name": "alice"},
        "role": "owner",
        "organizations": [{"id": alice_org.pk, "name": "alice", "role": "owner"}],
        "api_key": None,
    }


def test_login_binds_the_token_to_the_organization_named(api, alice, bob_org):
    Membership.objects.create(organization=bob_org, user=alice, role="viewer")

    response = api.post(
        "/api/login/", {"username": "alice", "password": PASSWORD, "organization": bob_org.pk}
    )

    assert response.status_code == 200
    assert response.json()["organization"] == {"id": bob_org.pk, "name": "bob"}
    assert response.json()["role"] == "viewer"
    assert AuthToken.objects.get(user=alice).membership.organization == bob_org
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
    me = api.get("/api/me/").json()
    assert (me["organization"], me["role"]) == ({"id": bob_org.pk, "name": "bob"}, "viewer")


def test_login_without_an_organization_takes_the_oldest_membership(api, alice, alice_org, bob_org):
    Membership.objects.create(organization=bob_org, user=alice, role="admin")

    response = api.post("/api/login/", {"username": "alice", "password": PASSWORD})

    assert response.status_code == 200
    assert response.json()["organization"] == {"id": alice_org.pk, "name": "alice"}
    assert response.json()["role"] == "owner"


@pytest.mark.parametrize("which", ["another", "missing"])
def test_login_to_an_organization_the_user_is_not_a_member_of_is_a_400(api, alice, bob_org, which):
    organization_id = bob_org.pk if which == "another" else bob_org.pk + 1000

    response = api.post(
        "/api/login/", {"username": "alice", "password": PASSWORD, "organization": organization_id}
    )

    assert response.status_code == 400
    assert response.json() == {"organization": ["You are not a member of this organization."]}
    assert not AuthToken.objects.exists()


def test_login_with_bad_credentials_says_nothing_of_the_organization(api, alice, alice_org):
    response = api.post(
        "/api/login/", {"username": "alice", "password": "nope", "organization": alice_org.pk}
    )

    assert response.status_code == 400
    assert response.json() == INVALID


@pytest.mark.parametrize("organization", ["1", "x", 0, -1, 2**63, 1.5, True, None, [1], {"id": 1}])
def test_login_rejects_an_organization_that_is_not_an_id(api, alice, organization):
    response = api.post(
        "/api/login/",
        {"username": "alice", "password": PASSWORD, "organization": organization},
        format="json",
    )

    assert response.status_code == 400
    assert list(response.json()) == ["organization"]
    assert not AuthToken.objects.exists()


def test_a_user_with_no_membership_cannot_log_in(api, alice):
    Membership.objects.filter(user=alice).delete()

    response = api.post("/api/login/", {"username": "alice", "password": PASSWORD})

    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["This user is not a member of any organization."]}
    assert not AuthToken.objects.exists()


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
    carol = User.objects.get(username="carol")
    organization = Organization.objects.get()
    assert body == {
        "id": carol.pk,
        "username": "carol",
        "email": "c@x.test",
        "organization": {"id": organization.pk, "name": "carol"},
    }
    assert list(Membership.objects.values_list("organization", "user", "role")) == [
        (organization.pk, carol.pk, "owner")
    ]
    login = api.post("/api/login/", {"username": "carol", "password": "a-long-and-unusual-pass"})
    assert login.status_code == 200
    assert login.json()["organization"] == {"id": organization.pk, "name": "carol"}
    assert login.json()["role"] == "owner"


def test_register_names_the_organization_as_asked(api):
    response = api.post(
        "/api/register/",
        {"username": "carol", "password": "a-long-and-unusual-pass", "organization_name": "Carol & Co"},
    )

    assert response.status_code == 201
    organization = Organization.objects.get()
    assert organization.name == "Carol & Co"
    assert response.json()["organization"] == {"id": organization.pk, "name": "Carol & Co"}
    # The new organization starts with the defaults API.md gives.
    assert (organization.invoice_prefix, organization.payment_terms_days) == ("INV-", 30)
    assert organization.reminder_days == [-3, 1, 7, 14]


@pytest.mark.parametrize(
    "name", ["", "   ", "x" * 201, 42, None, ["Carol"], "Carol\r\nBcc: x@example.com", "Carol\x7f"]
)
def test_register_rejects_a_bad_organization_name(api, name):
    response = api.post(
        "/api/register/",
        {"username": "carol", "password": "a-long-and-unusual-pass", "organization_name": name},
        format="json",
    )

    assert response.status_code == 400
    assert list(response.json()) == ["organization_name"]
    assert not User.objects.exists()
    assert not Organization.objects.exists()


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
    assert Organization.objects.count() == 1  # alice's own: no organization without its owner


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


# --- what the schema says of register and /me is what the server does ---------------------------------


def test_a_user_without_email_matches_the_user_schema(api):
    # Finding: register (and /me) answered `email: ""`, which the User schema refused.
    response = api.post("/api/register/", {"username": "sr", "password": "a-long-and-unusual-pass"})

    assert response.status_code == 201
    assert response.json()["email"] == ""
    assert_matches(response_schema("/api/register/", "post", 201), response.json())
    token = api.post("/api/login/", {"username": "sr", "password": "a-long-and-unusual-pass"}).json()["token"]
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    me = api.get("/api/me/")
    assert me.json()["email"] == ""
    assert_matches(response_schema("/api/me/", "get", 200), me.json())


def test_register_password_length_is_in_the_schema(api):
    password = openapi()["components"]["schemas"]["RegisterRequest"]["properties"]["password"]

    assert password["minLength"] == 8
    response = api.post("/api/register/", {"username": "newbie", "password": "short"})
    assert response.status_code == 400
    assert list(response.json()) == ["password"]


def test_a_registered_password_is_kept_as_sent(api):
    # Register trimmed the password and login does not: " secret… " could never log in.
    password = "  a-long-and-unusual-pass  "

    assert api.post("/api/register/", {"username": "newbie", "password": password}).status_code == 201
    assert api.post("/api/login/", {"username": "newbie", "password": password}).status_code == 200


@pytest.mark.parametrize(
    ("username", "valid"), [("ñÒ", True), ("Zoë.van-Dijk", True), ("٣x", True), ("a b", False)]
)
def test_usernames_of_any_script_are_in_the_schema(api, username, valid):
    # Finding: "ñÒ" was refused by the schema (`\w` is ASCII-only in JSON Schema's ECMA dialect) and
    # accepted by the server (Django's validator is Unicode-aware). JSON Schema's reading, as
    # schemathesis and JavaScript clients apply it, needs jsonschema_rs (Python's re has no \p{L}).
    schema = openapi()["components"]["schemas"]["RegisterRequest"]["properties"]["username"]

    response = api.post("/api/register/", {"username": username, "password": "a-long-and-unusual-pass"})

    assert jsonschema_rs.validator_for(schema).is_valid(username) is valid
    assert response.status_code == (201 if valid else 400)


# --- one username rule for register and login (NFKC, as create_user stores it) ------------------------


def fullwidth(text: str) -> str:
    """ASCII letters as their fullwidth compatibility forms ("a" U+0061 -> U+FF41), which NFKC undoes."""
    return "".join(chr(ord(char) + 0xFEE0) for char in text)


FULLWIDTH_NAME = fullwidth("nfvhahp")
NEW_USER_PASSWORD = "a-long-and-unusual-pass"


def register(api, username: str):
    return api.post("/api/register/", {"username": username, "password": NEW_USER_PASSWORD})


def login(api, username: str):
    return api.post("/api/login/", {"username": username, "password": NEW_USER_PASSWORD})


def test_a_username_registered_in_a_compatibility_form_logs_in_as_sent(api):
    # The finding: a fullwidth "nfvhahp" registered (stored as "nfvhahp") and could not log in.
    response = register(api, FULLWIDTH_NAME)

    assert response.status_code == 201
    assert response.json()["username"] == "nfvhahp"  # as it is stored, and said so
    assert User.objects.get().username == "nfvhahp"
    assert login(api, FULLWIDTH_NAME).status_code == 200
    assert login(api, "nfvhahp").status_code == 200


def test_a_plain_username_logs_in_in_its_compatibility_form(api):
    assert register(api, "Zoe").status_code == 201

    assert login(api, fullwidth("Zoe")).status_code == 200
    assert login(api, "zoe").status_code == 400  # normalization is not case folding


@pytest.mark.parametrize(("first", "second"), [("nfvhahp", FULLWIDTH_NAME), (FULLWIDTH_NAME, "nfvhahp")])
def test_two_spellings_of_one_username_are_one_account(api, first, second):
    assert register(api, first).status_code == 201

    response = register(api, second)

    assert response.status_code == 400
    assert response.json() == {"username": ["A user with that username already exists."]}
    assert User.objects.count() == 1


def test_a_username_too_long_once_normalized_is_a_400(api):
    # U+FDFA is one letter that NFKC writes as 18: ten of them would not fit the column (150).
    response = register(api, "\ufdfa" * 10)

    assert response.status_code == 400
    assert response.json() == {
        "username": ["Ensure this field has no more than 150 characters once normalized (NFKC)."]
    }
    assert not User.objects.exists()


def test_a_username_is_still_not_trimmed(api):
    assert register(api, " alice").status_code == 400
    assert register(api, "alice").status_code == 201
    assert login(api, " alice").status_code == 400
