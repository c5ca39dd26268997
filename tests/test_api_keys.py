"""An organization's API keys: made by an admin (the key shown once, only its prefix and a hash
kept), sent as a token is (`Bearer` or `Token`), acting for their organization with their role,
recording what they make, refused at once when revoked or expired, `last_used_at` written at most
once a minute, and authenticated in one query."""

import datetime
import hashlib

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient, APIRequestFactory

from invoices.models import Invoice
from payments.models import Payment
from tests.conftest import client_for, key_client, member_of
from tests.invoice_helpers import INVOICES, create_invoice, invoice_payload, invoice_url
from tests.schema_helpers import assert_matches, response_schema
from users.auth import ApiKeyAuthentication
from users.models import ApiKey
from users.services import api_key_create

pytestmark = pytest.mark.django_db

KEYS = "/api/api-keys/"
KEY_FIELDS = {"id", "name", "prefix", "role", "created_at", "last_used_at", "expires_at", "revoked_at"}
INVALID = {"detail": "Invalid token.", "code": "authentication_failed"}


def iso(value: datetime.datetime | None) -> str | None:
    return value and value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def with_header(header: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    return client


def new_key(organization, role: str = "admin") -> tuple[ApiKey, str]:
    """A key of `organization` made by the service: (the row, the key)."""
    return api_key_create(organization_id=organization.pk, name=f"{role} key", role=role)


def create_key(client, **fields) -> dict:
    response = client.post(KEYS, {"name": "Shop", "role": "member", **fields}, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def denied(response) -> bool:
    return response.status_code == 403 and response.json()["code"] == "permission_denied"


def key_table_queries(queries) -> list[str]:
    return [q["sql"] for q in queries.captured_queries if '"users_apikey"' in q["sql"]]


# --- create, list -------------------------------------------------------------------------------


def test_a_new_key_is_shown_once_and_only_its_prefix_and_hash_are_stored(alice_api, alice, alice_org):
    body = create_key(alice_api, name="Shop integration", role="member")

    api_key = ApiKey.objects.get()
    key = body.pop("key")
    assert body == {
        "id": api_key.pk,
        "name": "Shop integration",
        "prefix": api_key.prefix,
        "role": "member",
        "created_at": iso(api_key.created_at),
        "last_used_at": None,
        "expires_at": None,
        "revoked_at": None,
    }
    assert api_key.prefix.startswith("sk_")
    assert len(api_key.prefix) == 15
    assert key.startswith(f"{api_key.prefix}_")
    assert len(key) > len(api_key.prefix) + 40  # a secret of 256 bits follows the prefix
    assert api_key.digest == hashlib.sha256(key.encode()).hexdigest()
    row = ApiKey.objects.values().get()
    assert not any(isinstance(value, str) and key in value for value in row.values())
    assert (api_key.organization, api_key.created_by) == (alice_org, alice)


def test_the_list_never_shows_a_key(alice_api):
    key = create_key(alice_api)["key"]
    create_key(alice_api, name="Second", role="viewer")

    response = alice_api.get(KEYS)

    assert response.status_code == 200
    assert key not in response.content.decode()
    assert [row["name"] for row in response.json()["results"]] == ["Second", "Shop"]  # newest first
    assert all(set(row) == KEY_FIELDS for row in response.json()["results"])
    assert_matches(response_schema(KEYS, "get", 200), response.json())


def test_every_key_is_different(alice_api):
    keys = [create_key(alice_api, name=f"k{i}") for i in range(5)]

    assert len({k["key"] for k in keys}) == len({k["prefix"] for k in keys}) == 5


def test_the_list_shows_only_the_organizations_own_keys(alice_api, bob_api):
    create_key(alice_api, name="Alice's")
    create_key(bob_api, name="Bob's")

    assert [row["name"] for row in bob_api.get(KEYS).json()["results"]] == ["Bob's"]


def test_a_key_may_expire(alice_api):
    expires_at = timezone.now() + datetime.timedelta(days=90)

    body = create_key(alice_api, expires_at=expires_at.isoformat())

    assert body["expires_at"] == iso(expires_at)
    assert with_header(f"Bearer {body['key']}").get("/api/me/").status_code == 200


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "Shop", "role": "owner"}, "role"),
        ({"name": "Shop", "role": "superuser"}, "role"),
        ({"name": "Shop", "role": None}, "role"),
        ({"name": "Shop"}, "role"),
        ({"role": "member"}, "name"),
        ({"name": "", "role": "member"}, "name"),
        ({"name": "   ", "role": "member"}, "name"),
        ({"name": "x" * 101, "role": "member"}, "name"),
        ({"name": 5, "role": "member"}, "name"),
        ({"name": "Shop", "role": "member", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "Shop", "role": "member", "expires_at": "tomorrow"}, "expires_at"),
        ({"name": "Shop", "role": "member", "expires_at": "0001-01-01T00:00:00+05:00"}, "expires_at"),
        ({"name": "Shop", "role": "member", "expires_at": 4102444800}, "expires_at"),
    ],
)
def test_it_rejects_a_bad_key_request_with_an_error_on_the_field(alice_api, payload, field):
    response = alice_api.post(KEYS, payload, format="json")

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert not ApiKey.objects.exists()


def test_an_expiry_now_is_already_past(alice_api):
    response = alice_api.post(
        KEYS, {"name": "Shop", "role": "member", "expires_at": timezone.now().isoformat()}, format="json"
    )

    assert response.status_code == 400
    assert response.json() == {"expires_at": ["An expiry must be in the future."]}


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_only_admins_and_owners_manage_keys(alice_org, role):
    client = client_for(member_of(alice_org, "staff", role), alice_org)
    _, existing = key_client(alice_org)

    assert denied(client.get(KEYS))
    assert denied(client.post(KEYS, {"name": "Mine", "role": "viewer"}, format="json"))
    assert denied(client.delete(f"{KEYS}{existing.pk}/"))
    assert ApiKey.objects.get().revoked_at is None
    assert ApiKey.objects.count() == 1


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_a_member_or_viewer_key_cannot_manage_keys(alice_org, role):
    client, _ = key_client(alice_org, role=role)

    assert denied(client.get(KEYS))
    assert denied(client.post(KEYS, {"name": "More", "role": "viewer"}, format="json"))


def test_an_admin_member_manages_keys(alice_org):
    client = client_for(member_of(alice_org, "ops", "admin"), alice_org)

    body = create_key(client, role="admin")

    assert client.get(KEYS).json()["count"] == 1
    assert client.delete(f"{KEYS}{body['id']}/").status_code == 204


def test_an_admin_key_makes_keys_that_no_user_created(alice_org):
    client, _ = key_client(alice_org, role="admin")

    body = create_key(client, name="Made by a key")

    assert ApiKey.objects.get(pk=body["id"]).created_by is None


# --- using a key ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer", "Token", "bearer", "TOKEN"])
def test_a_key_authenticates_with_either_scheme(alice_api, alice_org, scheme):
    key = create_key(alice_api, role="viewer")["key"]

    response = with_header(f"{scheme} {key}").get("/api/customers/")

    assert response.status_code == 200


def test_me_with_a_key_is_the_keys_organization_and_role(alice_api, alice_org):
    body = create_key(alice_api, name="Shop", role="member")

    response = with_header(f"Bearer {body['key']}").get("/api/me/")

    assert response.status_code == 200
    assert response.json() == {
        "id": None,
        "username": None,
        "email": None,
        "organization": {"id": alice_org.pk, "name": "alice"},
        "role": "member",
        "organizations": [{"id": alice_org.pk, "name": "alice", "role": "member"}],
        "api_key": {"id": body["id"], "name": "Shop", "prefix": body["prefix"]},
    }
    assert_matches(response_schema("/api/me/", "get", 200), response.json())


def test_a_key_acts_only_for_its_organization(alice_org, bob, make_customer, make_invoice):
    bobs_customer = make_customer(bob, name="Bob's client")
    bobs_invoice = make_invoice(bob, bobs_customer)
    alices_customer = make_customer(alice_org, name="Alice's client")
    client, _ = key_client(alice_org, role="member")

    assert client.get(invoice_url(bobs_invoice.pk)).status_code == 404
    assert client.get(f"/api/customers/{bobs_customer.pk}/").status_code == 404
    assert client.post(invoice_url(bobs_invoice.pk, "void")).status_code == 404
    assert [c["id"] for c in client.get("/api/customers/").json()["results"]] == [alices_customer.pk]
    assert client.get(INVOICES).json()["count"] == 0
    response = client.post(INVOICES, invoice_payload(bobs_customer), format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["customer"]
    bobs_invoice.refresh_from_db()
    assert bobs_invoice.status == "sent"


def test_the_keys_role_limits_it(alice_org, alice_customer):
    viewer, _ = key_client(alice_org, role="viewer")
    member, _ = key_client(alice_org, role="member")

    assert viewer.get("/api/customers/").status_code == 200
    assert denied(viewer.post("/api/customers/", {"name": "New"}, format="json"))
    assert denied(viewer.post(INVOICES, invoice_payload(alice_customer), format="json"))
    assert not Invoice.objects.exists()
    assert member.post("/api/customers/", {"name": "New"}, format="json").status_code == 201
    assert denied(member.patch("/api/organization/", {"name": "Renamed"}, format="json"))


def test_an_admin_key_cannot_touch_owners(alice, alice_org):
    client, _ = key_client(alice_org, role="admin")
    owner = alice.memberships.get(organization=alice_org)
    member_of(alice_org, "dave", "member")

    assert denied(client.patch(f"/api/members/{owner.pk}/", {"role": "viewer"}, format="json"))
    assert denied(client.post("/api/members/", {"username": "alice", "role": "owner"}, format="json"))
    assert client.patch("/api/organization/", {"legal_name": "Alice Ltd"}, format="json").status_code == 200


def test_what_a_key_creates_is_created_by_the_key(alice_org, alice_customer, alice_api):
    client, api_key = key_client(alice_org, role="member")

    invoice_id = create_invoice(client, alice_customer)["id"]
    client.post(invoice_url(invoice_id, "send"))
    payment = client.post("/api/payments/", {"invoice": invoice_id, "amount": "10.00", "method": "card"})

    assert payment.status_code == 201, payment.json()
    invoice = Invoice.objects.get(pk=invoice_id)
    assert (invoice.created_by_api_key_id, invoice.created_by_user_id) == (api_key.pk, None)
    assert invoice.created_by == api_key
    recorded = Payment.objects.get(pk=payment.json()["id"])
    assert (recorded.created_by_api_key_id, recorded.created_by_user_id) == (api_key.pk, None)
    by_member = Invoice.objects.get(pk=create_invoice(alice_api, alice_customer)["id"])
    assert (by_member.created_by_api_key_id, by_member.created_by_user.username) == (None, "alice")


def test_a_key_does_not_log_out(alice_org):
    client, _ = key_client(alice_org)

    response = client.post("/api/logout/")

    assert response.status_code == 400
    assert client.get("/api/me/").status_code == 200


# --- revoke, expire ----------------------------------------------------------------------------


def test_a_revoked_key_stops_working_at_once_and_its_row_stays(alice_api):
    body = create_key(alice_api)
    client = with_header(f"Bearer {body['key']}")
    assert client.get("/api/customers/").status_code == 200

    response = alice_api.delete(f"{KEYS}{body['id']}/")

    assert response.status_code == 204
    refused = client.get("/api/customers/")
    assert refused.status_code == 401
    assert refused.json() == {"detail": "This API key has been revoked.", "code": "authentication_failed"}
    api_key = ApiKey.objects.get(pk=body["id"])
    assert api_key.revoked_at is not None
    listed = alice_api.get(KEYS).json()["results"]
    assert [(row["id"], row["revoked_at"]) for row in listed] == [(api_key.pk, iso(api_key.revoked_at))]


def test_revoking_again_changes_nothing(alice_api):
    body = create_key(alice_api)
    alice_api.delete(f"{KEYS}{body['id']}/")
    revoked_at = ApiKey.objects.get().revoked_at

    assert alice_api.delete(f"{KEYS}{body['id']}/").status_code == 204
    assert ApiKey.objects.get().revoked_at == revoked_at


def test_a_key_may_revoke_itself(alice_org):
    client, api_key = key_client(alice_org, role="admin")

    assert client.delete(f"{KEYS}{api_key.pk}/").status_code == 204
    assert client.get("/api/me/").status_code == 401


@pytest.mark.parametrize("key_id", ["other", "999999999", "abc", "99999999999999999999"])
def test_another_organizations_key_is_a_404(alice_api, bob_org, key_id):
    _, bobs = key_client(bob_org)
    url = f"{KEYS}{bobs.pk if key_id == 'other' else key_id}/"

    assert alice_api.delete(url).status_code == 404
    assert ApiKey.objects.get().revoked_at is None


def test_another_organizations_key_is_a_404_even_for_a_viewer(alice_org, bob_org):
    _, bobs = key_client(bob_org)
    viewer = client_for(member_of(alice_org, "vera", "viewer"), alice_org)

    assert viewer.delete(f"{KEYS}{bobs.pk}/").status_code == 404


def test_an_expired_key_is_refused(alice_org):
    client, api_key = key_client(alice_org, expires_at=timezone.now() + datetime.timedelta(hours=1))
    assert client.get("/api/me/").status_code == 200

    ApiKey.objects.filter(pk=api_key.pk).update(expires_at=timezone.now() - datetime.timedelta(seconds=1))

    response = client.get("/api/me/")
    assert response.status_code == 401
    assert response.json() == {"detail": "This API key has expired.", "code": "authentication_failed"}
    assert ApiKey.objects.filter(pk=api_key.pk).exists()


def test_a_key_without_expiry_does_not_expire(alice_org):
    client, api_key = key_client(alice_org)
    ApiKey.objects.filter(pk=api_key.pk).update(created_at=timezone.now() - datetime.timedelta(days=3650))

    assert client.get("/api/me/").status_code == 200


# --- last_used_at --------------------------------------------------------------------------------


def updates_of_the_key(queries) -> list[str]:
    return [sql for sql in key_table_queries(queries) if sql.lstrip().upper().startswith("UPDATE")]


def test_last_used_at_is_written_on_first_use_and_at_most_once_a_minute(alice_org):
    client, api_key = key_client(alice_org, role="viewer")
    assert api_key.last_used_at is None

    with CaptureQueriesContext(connection) as first:
        assert client.get("/api/customers/").status_code == 200
    api_key.refresh_from_db()
    first_use = api_key.last_used_at
    assert first_use is not None
    assert abs((timezone.now() - first_use).total_seconds()) < 60
    assert len(updates_of_the_key(first)) == 1

    with CaptureQueriesContext(connection) as second:
        assert client.get("/api/customers/").status_code == 200
    assert updates_of_the_key(second) == []
    api_key.refresh_from_db()
    assert api_key.last_used_at == first_use

    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=first_use - datetime.timedelta(seconds=59))
    with CaptureQueriesContext(connection) as within_a_minute:
        client.get("/api/customers/")
    assert updates_of_the_key(within_a_minute) == []

    moved_back = first_use - datetime.timedelta(seconds=61)
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=moved_back)
    with CaptureQueriesContext(connection) as after_a_minute:
        assert client.get("/api/customers/").status_code == 200
    assert len(updates_of_the_key(after_a_minute)) == 1
    api_key.refresh_from_db()
    assert api_key.last_used_at > moved_back + datetime.timedelta(seconds=60)


def test_a_refused_key_writes_no_last_used_at(alice_org):
    _, api_key = key_client(alice_org)
    ApiKey.objects.filter(pk=api_key.pk).update(revoked_at=timezone.now())
    tampered = with_header(f"Bearer {api_key.prefix}_{'A' * 43}")

    assert tampered.get("/api/me/").status_code == 401
    api_key.refresh_from_db()
    assert api_key.last_used_at is None


def test_the_list_shows_when_a_key_was_last_used(alice_api, alice_org):
    body = create_key(alice_api, role="viewer")
    with_header(f"Token {body['key']}").get("/api/me/")

    listed = alice_api.get(KEYS).json()["results"][0]

    assert listed["last_used_at"] == iso(ApiKey.objects.get().last_used_at)


# --- one query to authenticate --------------------------------------------------------------------


def test_a_key_authenticates_in_one_query(alice_org):
    api_key, key = new_key(alice_org, role="member")
    with_header(f"Bearer {key}").get("/api/me/")  # the first use writes last_used_at
    request = APIRequestFactory().get("/api/me/", HTTP_AUTHORIZATION=f"Bearer {key}")

    with CaptureQueriesContext(connection) as queries:
        user, auth = ApiKeyAuthentication().authenticate(request)
        # What the permission class and every view read of the credential comes with it.
        bound = (auth.organization.name, auth.role, auth.actor.pk, auth.organization_id)

    assert user is auth
    assert auth.pk == api_key.pk
    assert bound == ("alice", "member", api_key.pk, alice_org.pk)
    assert len(queries) == 1


def test_a_request_with_a_key_reads_the_key_table_once(alice_org):
    client, _ = key_client(alice_org, role="member")
    client.get("/api/me/")

    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/me/").status_code == 200
        assert client.get("/api/customers/").status_code == 200

    assert len(key_table_queries(queries)) == 2  # one per request


def test_a_request_with_a_token_reads_the_token_table_once(alice):
    client = client_for(alice)

    with CaptureQueriesContext(connection) as queries:
        assert client.get("/api/me/").status_code == 200
        assert client.get("/api/customers/").status_code == 200

    token_queries = [q for q in queries.captured_queries if '"users_membertoken"' in q["sql"]]
    assert len(token_queries) == 2  # one per request
    assert key_table_queries(queries) == []  # a token is not looked up as a key


# --- what is not a key -----------------------------------------------------------------------------


def test_a_tampered_key_is_refused(alice_org):
    api_key, key = new_key(alice_org)
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")

    response = with_header(f"Bearer {tampered}").get("/api/me/")

    assert response.status_code == 401
    assert response.json() == INVALID
    assert with_header(f"Bearer {api_key.prefix}_").get("/api/me/").status_code == 401


def test_a_key_with_another_keys_secret_is_refused(alice_org):
    first, _ = new_key(alice_org)
    second, second_key = new_key(alice_org)
    secret = second_key.removeprefix(f"{second.prefix}_")

    response = with_header(f"Bearer {first.prefix}_{secret}").get("/api/me/")

    assert response.status_code == 401
    assert response.json() == INVALID


@pytest.mark.parametrize(
    "key",
    [
        "sk_",
        "sk_x",
        "sk_abcdefghijkl",
        "sk_abcdefghijkl_",
        "sk_abcdefghijkl_" + "x" * 5000,
        "sk_ABCDEFGHIJKL_secret",
        "sk_éééééééééééé_secret",
        "sk_%%%%%%%%%%%%_secret",
        "sk_abc\x00defghijk_secret",
        "sk_abcdefghijkl_sec\x00ret",
        "sk_\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f\x7f_x",
        "sk______________________",
        "SK_abcdefghijkl_secret",
    ],
)
def test_garbage_after_the_scheme_is_a_401_not_a_500(alice_org, key):
    key_client(alice_org)  # a real key exists, so the lookup has a row to miss

    response = with_header(f"Bearer {key}").get("/api/me/")

    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"
