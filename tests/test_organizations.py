"""The organization is the tenant: its settings (GET, PATCH /api/organization/), which the next
invoice follows; its members and their roles (/api/members/), with the owner protected; and the
token of a user who belongs to two organizations, which acts for the one it was issued for."""

import datetime
import time
import zoneinfo

import pytest
from django.utils import timezone

from customers.models import Customer
from invoices.models import Invoice
from tests.concurrency import run_concurrently
from tests.conftest import PASSWORD, client_for, make_user, member_of
from tests.factories import LinePayloadFactory
from tests.invoice_helpers import INVOICES, create_invoice, invoice_url, send_invoice
from tests.schema_helpers import assert_matches, response_schema
from users import services
from users.models import Membership, MemberToken, Organization

pytestmark = pytest.mark.django_db

ORGANIZATION = "/api/organization/"
MEMBERS = "/api/members/"


def iso(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def member_url(membership) -> str:
    return f"{MEMBERS}{membership.pk}/"


def membership(organization, user) -> Membership:
    return Membership.objects.get(organization=organization, user=user)


def denied(response) -> bool:
    return response.status_code == 403 and response.json()["code"] == "permission_denied"


@pytest.fixture
def team(alice_org):
    """alice_org's members, one of each role below owner (alice), each with a client."""
    users = {role: member_of(alice_org, f"{role}-of-alice", role) for role in ("admin", "member", "viewer")}
    return {role: (user, client_for(user, alice_org)) for role, user in users.items()}


# --- the organization's settings ---------------------------------------------------------------


def test_it_shows_every_field_of_the_organization(alice_api, alice_org):
    response = alice_api.get(ORGANIZATION)

    assert response.status_code == 200
    assert response.json() == {
        "id": alice_org.pk,
        "name": "alice",
        "legal_name": "",
        "email": "alice@example.com",
        "phone": "",
        "address": "",
        "tax_id": "",
        "time_zone": "UTC",
        "default_currency": "USD",
        "invoice_prefix": "INV-",
        "payment_terms_days": 30,
        "invoice_footer": "",
        "reminder_days": [-3, 1, 7, 14],
        "created_at": iso(alice_org.created_at),
    }
    assert_matches(response_schema(ORGANIZATION, "get", 200), response.json())


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_every_role_reads_the_organization(team, alice_org, role):
    response = team[role][1].get(ORGANIZATION)

    assert response.status_code == 200
    assert response.json()["id"] == alice_org.pk


CHANGES = {
    "name": "Alice Ltd",
    "legal_name": "Alice Consulting Limited",
    "email": "accounts@alice.example",
    "phone": "+44 20 7946 0000",
    "address": "1 High Street\nLondon",
    "tax_id": "GB123456789",
    "time_zone": "Pacific/Auckland",
    "default_currency": "EUR",
    "invoice_prefix": "AC/2026.",
    "payment_terms_days": 14,
    "invoice_footer": "IBAN GB00 0000 0000 0000",
    "reminder_days": [-7, 0, 30],
}


def test_an_admin_changes_every_setting(team, alice_org):
    response = team["admin"][1].patch(ORGANIZATION, CHANGES, format="json")

    assert response.status_code == 200, response.json()
    alice_org.refresh_from_db()
    assert response.json() == {**CHANGES, "id": alice_org.pk, "created_at": iso(alice_org.created_at)}
    assert {name: getattr(alice_org, name) for name in CHANGES} == CHANGES
    assert_matches(response_schema(ORGANIZATION, "patch", 200), response.json())


def test_a_patch_changes_only_what_it_is_given(alice_api, alice_org):
    response = alice_api.patch(ORGANIZATION, {"legal_name": "Alice Ltd"}, format="json")

    assert response.status_code == 200
    alice_org.refresh_from_db()
    assert (alice_org.name, alice_org.legal_name, alice_org.invoice_prefix) == ("alice", "Alice Ltd", "INV-")


def test_an_empty_invoice_prefix_is_allowed(alice_api, alice_org):
    assert alice_api.patch(ORGANIZATION, {"invoice_prefix": ""}, format="json").status_code == 200
    alice_org.refresh_from_db()
    assert alice_org.invoice_prefix == ""


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_a_member_or_viewer_cannot_change_the_organization(team, alice_org, role):
    response = team[role][1].patch(ORGANIZATION, {"name": "Hijacked"}, format="json")

    assert denied(response)
    alice_org.refresh_from_db()
    assert alice_org.name == "alice"


@pytest.mark.parametrize("url", [ORGANIZATION, MEMBERS])
def test_a_viewer_may_head_and_options_what_it_may_get(team, url):
    viewer = team["viewer"][1]

    assert viewer.head(url).status_code == 200
    assert viewer.options(url).status_code == 200


def test_head_of_what_a_role_may_not_get_is_refused_too(team):
    assert team["member"][1].head("/api/api-keys/").status_code == 403


@pytest.mark.parametrize("method", ["put", "post", "delete"])
def test_the_organization_is_only_read_and_patched(alice_api, alice_org, method):
    response = getattr(alice_api, method)(ORGANIZATION, {**CHANGES}, format="json")

    assert response.status_code == 405
    alice_org.refresh_from_db()
    assert alice_org.name == "alice"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", ""),
        ("name", "   "),
        ("name", "x" * 201),
        ("email", "not-an-email"),
        ("time_zone", "Mars/Olympus_Mons"),
        ("time_zone", "utc"),
        ("time_zone", ""),
        ("time_zone", 42),
        ("time_zone", "x" * 65),
        ("time_zone", " UTC"),
        ("time_zone", "Europe/Paris\n"),
        ("default_currency", "ABC"),
        ("default_currency", "usd"),
        ("default_currency", "HRK"),  # withdrawn
        ("default_currency", "XAU"),  # no minor unit
        ("default_currency", 840),
        ("invoice_prefix", "INV 2026-"),
        ("invoice_prefix", "A" * 21),
        ("invoice_prefix", "INV#"),
        ("invoice_prefix", "ÍNV-"),
        ("invoice_prefix", None),
        ("invoice_prefix", " INV-"),
        ("invoice_prefix", "INV- "),
        ("invoice_prefix", "INV-\n"),
        ("payment_terms_days", -1),
        ("payment_terms_days", 3651),
        ("payment_terms_days", "30"),
        ("payment_terms_days", 1.5),
        ("payment_terms_days", True),
        ("payment_terms_days", None),
        ("reminder_days", "1,7"),
        ("reminder_days", 7),
        ("reminder_days", None),
        ("reminder_days", {"7": 7}),
        ("reminder_days", [1, "7"]),
        ("reminder_days", [1, 7.5]),
        ("reminder_days", [True]),
        ("reminder_days", [None]),
        ("reminder_days", [1, 1]),
        ("reminder_days", [7, 1, 7]),
        ("reminder_days", list(range(11))),
        ("reminder_days", [366]),
        ("reminder_days", [-366]),
    ],
)
def test_it_rejects_a_bad_setting_with_an_error_on_the_field(alice_api, alice_org, field, value):
    before = Organization.objects.values().get(pk=alice_org.pk)

    response = alice_api.patch(ORGANIZATION, {field: value}, format="json")

    assert response.status_code == 400, response.json()
    assert list(response.json()) == [field]
    assert Organization.objects.values().get(pk=alice_org.pk) == before


def test_a_bad_setting_among_good_ones_changes_nothing(alice_api, alice_org):
    response = alice_api.patch(ORGANIZATION, {"name": "Alice Ltd", "reminder_days": [3, 3]}, format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["reminder_days"]
    alice_org.refresh_from_db()
    assert alice_org.name == "alice"


def test_read_only_fields_are_ignored(alice_api, alice_org):
    response = alice_api.patch(
        ORGANIZATION, {"id": alice_org.pk + 1, "created_at": "2000-01-01T00:00:00Z"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["id"] == alice_org.pk
    assert response.json()["created_at"] == iso(alice_org.created_at)


@pytest.mark.parametrize("reminder_days", [[], [0], [-365, 365], list(range(10))])
def test_it_takes_any_valid_reminder_schedule(alice_api, alice_org, reminder_days):
    response = alice_api.patch(ORGANIZATION, {"reminder_days": reminder_days}, format="json")

    assert response.status_code == 200
    alice_org.refresh_from_db()
    assert alice_org.reminder_days == reminder_days


# --- the next invoice follows the settings -------------------------------------------------------


def test_a_new_prefix_numbers_the_next_issued_invoice_and_keeps_the_sequence(
    alice_api, alice_org, alice_customer
):
    first = create_invoice(alice_api, alice_customer)
    second = create_invoice(alice_api, alice_customer)
    assert send_invoice(alice_api, first["id"])["number"] == "INV-000001"

    assert alice_api.patch(ORGANIZATION, {"invoice_prefix": "AC/2026-"}, format="json").status_code == 200

    assert send_invoice(alice_api, second["id"])["number"] == "AC/2026-000002"
    assert Invoice.objects.get(pk=first["id"]).number == "INV-000001"  # issued numbers never change


def test_the_payment_terms_give_a_missing_due_date(alice_api, alice_customer):
    assert alice_api.patch(ORGANIZATION, {"payment_terms_days": 45}, format="json").status_code == 200

    response = alice_api.post(
        INVOICES,
        {"customer": alice_customer.pk, "issue_date": "2026-11-20", "lines": [LinePayloadFactory()]},
        format="json",
    )

    assert response.status_code == 201, response.json()
    assert response.json()["due_date"] == "2027-01-04"
    given = create_invoice(alice_api, alice_customer, issue_date="2026-11-20", due_date="2026-11-25")
    assert given["due_date"] == "2026-11-25"  # a due date given is kept


def test_the_default_currency_gives_a_missing_currency(alice_api, alice_customer):
    assert alice_api.patch(ORGANIZATION, {"default_currency": "JPY"}, format="json").status_code == 200

    invoice = create_invoice(alice_api, alice_customer, lines=[LinePayloadFactory(unit_price="1250")])

    assert invoice["currency"] == "JPY"
    assert Invoice.objects.get(pk=invoice["id"]).currency == "JPY"
    assert create_invoice(alice_api, alice_customer, currency="EUR")["currency"] == "EUR"


def far_zone() -> str:
    """A time zone whose date differs from UTC's now: UTC+14 when it is 10:00 UTC or later (where
    it is already tomorrow), else UTC-11 (where it is still yesterday)."""
    return "Pacific/Kiritimati" if timezone.now().hour >= 10 else "Pacific/Pago_Pago"


def test_the_default_issue_date_is_today_in_the_organizations_time_zone(alice_api, alice_customer):
    zone = far_zone()
    assert alice_api.patch(ORGANIZATION, {"time_zone": zone}, format="json").status_code == 200

    before = datetime.datetime.now(zoneinfo.ZoneInfo(zone)).date()
    invoice = create_invoice(alice_api, alice_customer, due_date="2099-12-31")
    after = datetime.datetime.now(zoneinfo.ZoneInfo(zone)).date()

    issue_date = datetime.date.fromisoformat(invoice["issue_date"])
    assert issue_date in {before, after}
    assert issue_date != datetime.datetime.now(datetime.UTC).date()  # not the server's today
    assert Invoice.objects.get(pk=invoice["id"]).issue_date == issue_date


def test_the_default_due_date_counts_from_the_organizations_today(alice_api, alice_customer):
    zone = far_zone()
    assert alice_api.patch(ORGANIZATION, {"time_zone": zone}, format="json").status_code == 200

    response = alice_api.post(
        INVOICES, {"customer": alice_customer.pk, "lines": [LinePayloadFactory()]}, format="json"
    )

    assert response.status_code == 201, response.json()
    issue_date = datetime.date.fromisoformat(response.json()["issue_date"])
    assert response.json()["due_date"] == (issue_date + datetime.timedelta(days=30)).isoformat()


# --- members ---------------------------------------------------------------------------------------


def test_it_lists_the_members_with_their_roles(team, alice, alice_org):
    response = team["viewer"][1].get(MEMBERS)

    assert response.status_code == 200
    expected = [alice] + [team[role][0] for role in ("admin", "member", "viewer")]
    roles = ["owner", "admin", "member", "viewer"]
    assert response.json() == {
        "count": 4,
        "next": None,
        "previous": None,
        "results": [
            {
                "id": membership(alice_org, user).pk,
                "user": {"id": user.pk, "username": user.username, "email": user.email},
                "role": role,
                "created_at": iso(membership(alice_org, user).created_at),
            }
            for user, role in zip(expected, roles, strict=True)
        ],
    }
    assert_matches(response_schema(MEMBERS, "get", 200), response.json())


def test_the_member_list_shows_only_the_organizations_own(bob_api, team):
    response = bob_api.get(MEMBERS)

    assert [row["user"]["username"] for row in response.json()["results"]] == ["bob"]


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_an_admin_adds_an_existing_user(team, alice_org, role):
    carol = make_user("carol")

    response = team["admin"][1].post(MEMBERS, {"username": "carol", "role": role}, format="json")

    assert response.status_code == 201, response.json()
    added = membership(alice_org, carol)
    assert added.role == role
    assert response.json() == {
        "id": added.pk,
        "user": {"id": carol.pk, "username": "carol", "email": "carol@example.com"},
        "role": role,
        "created_at": iso(added.created_at),
    }


def test_an_added_member_can_log_in_to_the_organization(alice_api, alice_org, api):
    make_user("carol")
    assert alice_api.post(MEMBERS, {"username": "carol", "role": "member"}, format="json").status_code == 201

    response = api.post(
        "/api/login/", {"username": "carol", "password": PASSWORD, "organization": alice_org.pk}
    )

    assert response.status_code == 200
    assert response.json()["organization"] == {"id": alice_org.pk, "name": "alice"}
    assert response.json()["role"] == "member"


def test_adding_an_unknown_username_is_a_400_on_username(alice_api, alice_org):
    response = alice_api.post(MEMBERS, {"username": "nobody", "role": "member"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"username": ["No user with this username."]}
    assert Membership.objects.filter(organization=alice_org).count() == 1


def test_adding_a_member_again_is_a_400_on_username(alice_api, alice_org, team):
    response = alice_api.post(MEMBERS, {"username": "member-of-alice", "role": "admin"}, format="json")

    assert response.status_code == 400
    assert response.json() == {"username": ["This user is already a member."]}
    assert membership(alice_org, team["member"][0]).role == "member"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"role": "member"}, "username"),
        ({"username": "carol"}, "role"),
        ({"username": "carol", "role": "superuser"}, "role"),
        ({"username": "carol", "role": None}, "role"),
        ({"username": 7, "role": "member"}, "username"),
        ({"username": "c" * 151, "role": "member"}, "username"),
    ],
)
def test_adding_a_member_validates_the_body(alice_api, alice_org, payload, field):
    make_user("carol")

    response = alice_api.post(MEMBERS, payload, format="json")

    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert Membership.objects.filter(organization=alice_org).count() == 1


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_a_member_or_viewer_cannot_add_members(team, alice_org, role):
    make_user("carol")

    response = team[role][1].post(MEMBERS, {"username": "carol", "role": "viewer"}, format="json")

    assert denied(response)
    assert not Membership.objects.filter(organization=alice_org, user__username="carol").exists()


def test_an_admin_changes_a_role(team, alice_org):
    member = membership(alice_org, team["member"][0])

    response = team["admin"][1].patch(member_url(member), {"role": "viewer"}, format="json")

    assert response.status_code == 200
    assert response.json()["role"] == "viewer"
    assert response.json()["id"] == member.pk
    member.refresh_from_db()
    assert member.role == "viewer"


def test_a_patch_without_a_role_changes_nothing(team, alice_org):
    # As any PATCH: the fields it does not name keep their value (the schema makes `role` optional).
    member = membership(alice_org, team["member"][0])

    response = team["admin"][1].patch(member_url(member), {}, format="json")

    assert response.status_code == 200
    assert response.json()["role"] == "member"
    member.refresh_from_db()
    assert member.role == "member"


@pytest.mark.parametrize("body", [{"role": "boss"}, {"role": None}, {"role": ["admin"]}])
def test_a_role_change_validates_the_role(team, alice_org, body):
    member = membership(alice_org, team["member"][0])

    response = team["admin"][1].patch(member_url(member), body, format="json")

    assert response.status_code == 400
    assert list(response.json()) == ["role"]
    member.refresh_from_db()
    assert member.role == "member"


def test_an_admin_removes_a_member(team, alice_org):
    viewer, _ = team["viewer"]

    response = team["admin"][1].delete(member_url(membership(alice_org, viewer)))

    assert response.status_code == 204
    assert not Membership.objects.filter(organization=alice_org, user=viewer).exists()
    assert Membership.objects.filter(user=viewer).count() == 1  # the viewer's own organization stays


@pytest.mark.parametrize("role", ["member", "viewer"])
def test_a_member_or_viewer_cannot_change_or_remove_members(team, alice_org, role):
    target = membership(alice_org, team["admin"][0])
    client = team[role][1]

    assert denied(client.patch(member_url(target), {"role": "viewer"}, format="json"))
    assert denied(client.delete(member_url(target)))
    target.refresh_from_db()
    assert target.role == "admin"


@pytest.mark.parametrize("role", ["owner", "viewer"])
def test_another_organizations_member_is_a_404_whatever_the_role(team, bob, bob_org, role):
    bobs = membership(bob_org, bob)
    client = team["viewer"][1] if role == "viewer" else client_for(make_user("zed"))

    assert client.patch(member_url(bobs), {"role": "viewer"}, format="json").status_code == 404
    assert client.delete(member_url(bobs)).status_code == 404
    assert client.patch(f"{MEMBERS}999999999/", {"role": "viewer"}, format="json").status_code == 404
    assert client.patch(f"{MEMBERS}abc/", {"role": "viewer"}, format="json").status_code == 404
    bobs.refresh_from_db()
    assert bobs.role == "owner"


# --- only an owner touches owners; the last owner stays --------------------------------------------


def test_only_an_owner_grants_owner(team, alice_api, alice_org):
    admin_api = team["admin"][1]
    member = membership(alice_org, team["member"][0])
    carol = make_user("carol")

    assert denied(admin_api.patch(member_url(member), {"role": "owner"}, format="json"))
    assert denied(admin_api.post(MEMBERS, {"username": "carol", "role": "owner"}, format="json"))
    member.refresh_from_db()
    assert member.role == "member"
    assert not Membership.objects.filter(organization=alice_org, user=carol).exists()

    assert alice_api.patch(member_url(member), {"role": "owner"}, format="json").status_code == 200
    assert alice_api.post(MEMBERS, {"username": "carol", "role": "owner"}, format="json").status_code == 201
    assert Membership.objects.filter(organization=alice_org, role="owner").count() == 3


def test_an_admin_can_neither_demote_nor_remove_an_owner(team, alice, alice_org):
    admin_api = team["admin"][1]
    owner = membership(alice_org, alice)
    make_user("carol")
    alice_api = client_for(alice)
    assert alice_api.post(MEMBERS, {"username": "carol", "role": "owner"}, format="json").status_code == 201

    assert denied(admin_api.patch(member_url(owner), {"role": "admin"}, format="json"))
    assert denied(admin_api.delete(member_url(owner)))
    owner.refresh_from_db()
    assert owner.role == "owner"


def test_an_admin_manages_admins(team, alice_org):
    admin_api = team["admin"][1]
    member = membership(alice_org, team["member"][0])

    assert admin_api.patch(member_url(member), {"role": "admin"}, format="json").status_code == 200
    assert admin_api.patch(member_url(member), {"role": "viewer"}, format="json").status_code == 200
    assert admin_api.delete(member_url(member)).status_code == 204


def test_the_last_owner_cannot_be_demoted(alice_api, alice, alice_org):
    owner = membership(alice_org, alice)

    response = alice_api.patch(member_url(owner), {"role": "admin"}, format="json")

    assert response.status_code == 409
    assert response.json()["code"] == "last_owner"
    owner.refresh_from_db()
    assert owner.role == "owner"


def test_the_last_owner_cannot_be_removed(alice_api, alice, alice_org):
    owner = membership(alice_org, alice)

    response = alice_api.delete(member_url(owner))

    assert response.status_code == 409
    assert response.json()["code"] == "last_owner"
    assert Membership.objects.filter(pk=owner.pk).exists()


def test_an_owner_steps_down_once_there_is_another(alice_api, alice, alice_org, team):
    admin = membership(alice_org, team["admin"][0])
    assert alice_api.patch(member_url(admin), {"role": "owner"}, format="json").status_code == 200

    response = alice_api.patch(member_url(membership(alice_org, alice)), {"role": "admin"}, format="json")

    assert response.status_code == 200
    assert list(Membership.objects.filter(organization=alice_org, role="owner")) == [admin]


def test_setting_the_same_role_again_changes_nothing(alice_api, alice, alice_org):
    response = alice_api.patch(member_url(membership(alice_org, alice)), {"role": "owner"}, format="json")

    assert response.status_code == 200
    assert response.json()["role"] == "owner"


def test_an_admin_may_not_touch_an_owner_even_to_change_nothing(team, alice, alice_org):
    response = team["admin"][1].patch(
        member_url(membership(alice_org, alice)), {"role": "owner"}, format="json"
    )

    assert denied(response)


def test_an_owner_demoted_while_their_request_waited_cannot_grant_owner(alice_org, team):
    """The caller's role is read again under the organization's lock: the role their token was
    authenticated with may be older than a demotion that committed while they waited for it."""
    bob = member_of(alice_org, "bob-owner", "owner")
    member = membership(alice_org, team["member"][0])
    bobs = membership(alice_org, bob)
    authenticated_as = bobs.role
    Membership.objects.filter(pk=bobs.pk).update(role="admin")  # the demotion that won the lock

    with pytest.raises(services.RoleForbids):
        services.membership_change_role(
            organization_id=alice_org.pk,
            membership_id=member.pk,
            role="owner",
            caller_role=authenticated_as,
            caller_membership_id=bobs.pk,
        )
    with pytest.raises(services.RoleForbids):
        services.membership_add(
            organization_id=alice_org.pk,
            username="viewer-of-alice",
            role="owner",
            caller_role=authenticated_as,
            caller_membership_id=bobs.pk,
        )
    member.refresh_from_db()
    assert member.role == "member"


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
@pytest.mark.parametrize("change", ["demote", "remove"])
def test_two_owners_stepping_down_at_once_leave_one_owner(change, monkeypatch):
    """Each of two owners demotes (or removes) themselves at the same moment. Each alone would be
    allowed, both together would leave none: the organization's row lock makes the second see one
    owner left. The count is held open a moment, so that without the lock both would count two."""
    count_owners = services._owner_count

    def slow_count(organization_id):
        count = count_owners(organization_id)
        time.sleep(0.2)
        return count

    monkeypatch.setattr(services, "_owner_count", slow_count)
    alice = make_user("alice")
    organization = Organization.objects.get(memberships__user=alice)
    bob = member_of(organization, "bob", "owner")
    owners = [membership(organization, alice), membership(organization, bob)]
    clients = [client_for(alice, organization), client_for(bob, organization)]

    def step_down(i: int):
        if change == "demote":
            return clients[i].patch(member_url(owners[i]), {"role": "admin"}, format="json")
        return clients[i].delete(member_url(owners[i]))

    responses = run_concurrently(step_down, 2)

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200 if change == "demote" else 204, 409], statuses
    assert [r.json()["code"] for r in responses if r.status_code == 409] == ["last_owner"]
    assert Membership.objects.filter(organization=organization, role="owner").count() == 1


# --- one user, two organizations: a token acts for its own -----------------------------------------


@pytest.fixture
def accountant(alice, bob_org):
    """alice, owner of her organization and a member of bob's."""
    Membership.objects.create(organization=bob_org, user=alice, role="member")
    return alice


def login(api, organization) -> str:
    response = api.post(
        "/api/login/", {"username": "alice", "password": PASSWORD, "organization": organization.pk}
    )
    assert response.status_code == 200, response.json()
    return response.json()["token"]


def test_a_token_acts_only_for_the_organization_it_was_issued_for(
    api, accountant, alice_org, bob_org, make_customer
):
    alices_customer = make_customer(alice_org, name="Alice's client")
    bobs_customer = make_customer(bob_org, name="Bob's client")
    api.credentials(HTTP_AUTHORIZATION=f"Token {login(api, alice_org)}")

    assert api.get(f"/api/customers/{bobs_customer.pk}/").status_code == 404
    assert [c["id"] for c in api.get("/api/customers/").json()["results"]] == [alices_customer.pk]
    me = api.get("/api/me/").json()
    assert (me["organization"], me["role"]) == ({"id": alice_org.pk, "name": "alice"}, "owner")
    assert me["organizations"] == [
        {"id": alice_org.pk, "name": "alice", "role": "owner"},
        {"id": bob_org.pk, "name": "bob", "role": "member"},
    ]
    created = api.post("/api/customers/", {"name": "New"}, format="json").json()
    assert Customer.objects.get(pk=created["id"]).organization == alice_org


def test_a_second_token_acts_for_the_other_organization(
    api, accountant, alice_org, bob_org, make_customer, make_invoice
):
    alices_customer = make_customer(alice_org, name="Alice's client")
    alices_invoice = make_invoice(alice_org, alices_customer)
    bobs_customer = make_customer(bob_org, name="Bob's client")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {login(api, bob_org)}")

    assert api.get(f"/api/customers/{bobs_customer.pk}/").status_code == 200
    assert api.get(f"/api/customers/{alices_customer.pk}/").status_code == 404
    assert api.get(invoice_url(alices_invoice.pk)).status_code == 404
    assert [c["id"] for c in api.get("/api/customers/").json()["results"]] == [bobs_customer.pk]
    me = api.get("/api/me/").json()
    assert (me["organization"], me["role"]) == ({"id": bob_org.pk, "name": "bob"}, "member")
    created = api.post("/api/customers/", {"name": "For Bob"}, format="json").json()
    assert Customer.objects.get(pk=created["id"]).organization == bob_org
    # The member role of bob's organization does not reach bob's settings, whatever alice is elsewhere.
    assert denied(api.patch(ORGANIZATION, {"name": "Mine now"}, format="json"))


def test_a_removed_members_token_is_refused_at_once(api, accountant, alice_org, bob, bob_org, bob_api):
    api.credentials(HTTP_AUTHORIZATION=f"Token {login(api, bob_org)}")
    own = client_for(accountant, alice_org)
    assert api.get("/api/customers/").status_code == 200

    assert bob_api.delete(member_url(membership(bob_org, accountant))).status_code == 204

    assert api.get("/api/customers/").status_code == 401
    assert api.get("/api/me/").status_code == 401
    assert not MemberToken.objects.filter(membership__organization=bob_org, user=accountant).exists()
    assert own.get("/api/me/").status_code == 200  # her token for her own organization still works


def test_a_role_change_applies_at_once_to_an_existing_token(api, accountant, bob_org, bob_api):
    api.credentials(HTTP_AUTHORIZATION=f"Token {login(api, bob_org)}")
    assert api.post("/api/customers/", {"name": "Before"}, format="json").status_code == 201

    response = bob_api.patch(member_url(membership(bob_org, accountant)), {"role": "viewer"}, format="json")
    assert response.status_code == 200

    assert denied(api.post("/api/customers/", {"name": "After"}, format="json"))
    assert api.get("/api/customers/").status_code == 200
    assert api.get("/api/me/").json()["role"] == "viewer"
    assert not Customer.objects.filter(name="After").exists()


def test_a_promotion_applies_at_once_too(api, accountant, bob_org, bob_api):
    api.credentials(HTTP_AUTHORIZATION=f"Token {login(api, bob_org)}")
    assert denied(api.get("/api/api-keys/"))

    bob_api.patch(member_url(membership(bob_org, accountant)), {"role": "admin"}, format="json")

    assert api.get("/api/api-keys/").status_code == 200
