"""Roles, for every route the project serves and every method it answers.

The routes and their methods are walked from the URL resolver (everything under api/), and held to
one table, PERMISSIONS, of the least role that may make each request (API.md, Organizations):
viewer reads; member also writes customers, invoices and payments; admin also changes the
organization's settings, its members and its API keys; owner also grants and removes the owner
role (the owner-only rules below). A route or a method that is walked but not in the table fails
`test_every_route_and_method_is_in_the_table`, so a new endpoint cannot go unclassified.

Each role makes every request with a real credential of its own: a member's token (a membership of
that role) and an API key of that role (a key is never an owner), on an object of its own
organization made fresh for the request. Allowed is a success (never 401 or 403); forbidden is
403 `{"detail", "code": "permission_denied"}`. The same request on another organization's object
is 404 for every role, the forbidden ones included (precedence: 404 before 403), and no credential
is 401 wherever the route is not public.
"""

import re
from decimal import Decimal
from itertools import count

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from invoices.models import Invoice
from payments.services import payment_record
from tests.conftest import PASSWORD, client_for, key_client, member_of
from tests.factories import CustomerFactory, InvoiceFactory, UserFactory, org
from tests.test_isolation_matrix import organization_rows
from users.models import ApiKey, Membership
from users.services import api_key_create

pytestmark = pytest.mark.django_db

PUBLIC = "public"
ROLES = ("viewer", "member", "admin", "owner")  # from least to most: each may do all that those before it may
VIEWER, MEMBER, ADMIN, OWNER = ROLES

# route -> {method: the least role that may make the request, or PUBLIC (no credential needed)}.
# HEAD is GET's rule wherever GET is answered; OPTIONS describes a route (what the public schema
# already says), so every role may ask it, and no credential where the route is public.
PERMISSIONS = {
    "api/": {"GET": PUBLIC},
    "api/register/": {"POST": PUBLIC},
    "api/login/": {"POST": PUBLIC},
    "api/health/": {"GET": PUBLIC},
    "api/schema/": {"GET": PUBLIC},
    "api/docs/": {"GET": PUBLIC},
    "api/redoc/": {"GET": PUBLIC},
    "api/logout/": {"POST": VIEWER},
    "api/me/": {"GET": VIEWER},
    "api/organization/": {"GET": VIEWER, "PATCH": ADMIN},
    "api/members/": {"GET": VIEWER, "POST": ADMIN},
    "api/members/<pk>/": {"PATCH": ADMIN, "DELETE": ADMIN},
    "api/api-keys/": {"GET": ADMIN, "POST": ADMIN},
    "api/api-keys/<pk>/": {"DELETE": ADMIN},
    "api/customers/": {"GET": VIEWER, "POST": MEMBER},
    "api/customers/<pk>/": {"GET": VIEWER, "PUT": MEMBER, "PATCH": MEMBER, "DELETE": MEMBER},
    "api/invoices/": {"GET": VIEWER, "POST": MEMBER},
    "api/invoices/summary/": {"GET": VIEWER},
    "api/invoices/<pk>/": {"GET": VIEWER, "PUT": MEMBER, "PATCH": MEMBER, "DELETE": MEMBER},
    "api/invoices/<pk>/send/": {"POST": MEMBER},
    "api/invoices/<pk>/void/": {"POST": MEMBER},
    "api/invoices/<pk>/remind/": {"POST": MEMBER},
    "api/invoices/<pk>/emails/": {"GET": VIEWER},
    "api/invoices/<pk>/pdf/": {"GET": VIEWER},
    "api/payments/": {"GET": VIEWER, "POST": MEMBER},
    "api/payments/<pk>/": {"GET": VIEWER},
    "api/webhook-endpoints/": {"GET": ADMIN, "POST": ADMIN},
    "api/webhook-endpoints/<pk>/": {"GET": ADMIN, "PATCH": ADMIN, "DELETE": ADMIN},
    "api/webhook-endpoints/<pk>/rotate-secret/": {"POST": ADMIN},
    "api/webhook-endpoints/<pk>/test/": {"POST": ADMIN},
    "api/webhook-endpoints/<pk>/deliveries/": {"GET": ADMIN},
    "api/webhook-deliveries/<pk>/retry/": {"POST": ADMIN},
    "api/events/": {"GET": VIEWER},
    "api/events/<pk>/": {"GET": VIEWER},
}

# Allowed requests that are refused for what the credential is, not for its role.
NOT_A_SUCCESS_BY_DESIGN = {
    ("api/logout/", "POST", "api key"): 400,  # a key is revoked (DELETE /api/api-keys/{id}/), not logged out
}


def rule(route: str, method: str) -> str:
    if method == "HEAD":
        method = "GET"
    if method == "OPTIONS":
        return PUBLIC if set(PERMISSIONS[route].values()) == {PUBLIC} else VIEWER
    return PERMISSIONS[route][method]


def allows(role: str, least: str) -> bool:
    return least == PUBLIC or ROLES.index(role) >= ROLES.index(least)


# --- the walk --------------------------------------------------------------------------------


def _patterns(patterns=None, prefix=""):
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            yield from _patterns(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern).lstrip("^").rstrip("$"), pattern


def _route(pattern_text: str) -> str:
    """`api/invoices/(?P<pk>[^/.]+)/send/` (a router's) as `api/invoices/<pk>/send/`."""
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", r"<\1>", pattern_text)


def _answered_methods(pattern) -> set[str]:
    """The methods a route's view answers: a viewset's router map (method -> action), or the
    handlers an APIView defines; HEAD wherever GET is (DRF and Django serve it), OPTIONS wherever
    the view describes itself (DRF's metadata, unless the view turns it off)."""
    callback = pattern.callback
    view_class = getattr(callback, "cls", None) or callback.view_class
    # What as_view() was given overrides the class (a viewset's `initkwargs`, a view's `view_initkwargs`).
    initkwargs = getattr(callback, "initkwargs", None) or getattr(callback, "view_initkwargs", None) or {}

    def setting(name):
        return initkwargs.get(name, getattr(view_class, name, None))

    names = setting("http_method_names")
    actions = getattr(callback, "actions", None)
    if actions is not None:
        methods = set(actions)
    else:
        methods = {m for m in names if m != "options" and hasattr(view_class, m)}
    if "get" in methods:
        methods.add("head")
    if "options" in names and setting("metadata_class"):
        methods.add("options")
    return {m.upper() for m in methods}


def walked() -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}
    for text, pattern in _patterns():
        if text.startswith("api/"):
            routes.setdefault(_route(text), set()).update(_answered_methods(pattern))
    return routes


def _table() -> dict[str, set[str]]:
    """The methods PERMISSIONS classifies, HEAD with GET (OPTIONS goes by its rule wherever a
    view answers it)."""
    return {
        route: set(methods) | ({"HEAD"} if "GET" in methods else set())
        for route, methods in PERMISSIONS.items()
    }


def test_every_route_and_method_is_in_the_table():
    routes, table = walked(), _table()

    unclassified = sorted(
        f"{m} {r}" for r, methods in routes.items() for m in methods - table.get(r, set()) - {"OPTIONS"}
    )
    gone = sorted(f"{m} {r}" for r, methods in table.items() for m in methods - routes.get(r, set()))

    assert unclassified == [], f"routes and methods missing from PERMISSIONS: {unclassified}"
    assert gone == [], f"PERMISSIONS names routes or methods that are not served: {gone}"


# --- the objects a request acts on, made fresh for it ------------------------------------------

_names = count()


def _fresh_username() -> str:
    return f"someone{next(_names)}"


def _customer(organization) -> int:
    return CustomerFactory(organization=organization, name="Fresh customer", email="").pk


def _draft(organization) -> int:
    return InvoiceFactory(organization=organization).pk


def _sent(organization) -> int:
    return InvoiceFactory(organization=organization, sent=True).pk


def _payment(organization) -> int:
    invoice_id = _sent(organization)
    return payment_record(
        organization=organization, invoice_id=invoice_id, amount=Decimal("1.00"), method="cash"
    ).pk


def _event(organization) -> str:
    from events.models import Event

    _customer(organization)  # writes its customer.created event
    return Event.objects.filter(organization=organization).latest("id").pk


def _webhook_endpoint(organization) -> int:
    from tests.test_isolation_matrix import _webhook_delivery

    return _webhook_delivery(organization)[0].pk


def _webhook_delivery(organization) -> int:
    from tests.test_isolation_matrix import _webhook_delivery

    return _webhook_delivery(organization)[1].pk


def _membership(organization) -> int:
    user = UserFactory(username=_fresh_username())
    return Membership.objects.create(organization=organization, user=user, role="viewer").pk


def _api_key(organization) -> int:
    api_key, _ = api_key_create(organization_id=organization.pk, name="Fresh key", role="viewer")
    return api_key.pk


# The object each detail route acts on: one its every method can succeed on.
TARGETS = {
    "api/customers/<pk>/": _customer,  # no invoices: it can be deleted
    "api/invoices/<pk>/": _draft,  # a draft: it can be edited and deleted
    "api/invoices/<pk>/send/": _draft,
    "api/invoices/<pk>/void/": _sent,
    "api/invoices/<pk>/remind/": _sent,
    "api/invoices/<pk>/emails/": _sent,
    "api/invoices/<pk>/pdf/": _draft,
    "api/payments/<pk>/": _payment,
    "api/events/<pk>/": _event,
    "api/members/<pk>/": _membership,
    "api/api-keys/<pk>/": _api_key,
    "api/webhook-endpoints/<pk>/": _webhook_endpoint,
    "api/webhook-endpoints/<pk>/rotate-secret/": _webhook_endpoint,
    "api/webhook-endpoints/<pk>/test/": _webhook_endpoint,
    "api/webhook-endpoints/<pk>/deliveries/": _webhook_endpoint,
    "api/webhook-deliveries/<pk>/retry/": _webhook_delivery,  # a failed one: it can be retried
}


UNKNOWN_ID = 2_000_000_000  # no row has it


def _lines() -> list[dict]:
    return [{"description": "Work", "quantity": "1", "unit_price": "10.00"}]


# What a write sends: a body it succeeds with (given the organization and the object's id).
BODIES = {
    ("api/register/", "POST"): lambda o, pk: {"username": _fresh_username(), "password": PASSWORD},
    ("api/login/", "POST"): lambda o, pk: {"username": UserFactory().username, "password": PASSWORD},
    ("api/organization/", "PATCH"): lambda o, pk: {"invoice_footer": "Pay by bank transfer."},
    ("api/members/", "POST"): lambda o, pk: {"username": UserFactory().username, "role": "viewer"},
    ("api/members/<pk>/", "PATCH"): lambda o, pk: {"role": "member"},
    ("api/api-keys/", "POST"): lambda o, pk: {"name": "Integration", "role": "viewer"},
    ("api/customers/", "POST"): lambda o, pk: {"name": "New customer"},
    ("api/customers/<pk>/", "PUT"): lambda o, pk: {"name": "Renamed"},
    ("api/customers/<pk>/", "PATCH"): lambda o, pk: {"phone": "+1 555 0100"},
    ("api/invoices/", "POST"): lambda o, pk: {
        "customer": _customer(o),
        "due_date": "2030-01-31",
        "lines": _lines(),
    },
    ("api/invoices/<pk>/", "PUT"): lambda o, pk: {
        "customer": Invoice.objects.get(pk=pk).customer_id,
        "due_date": "2030-02-28",
        "lines": _lines(),
    },
    ("api/invoices/<pk>/", "PATCH"): lambda o, pk: {"notes": "Thank you."},
    ("api/payments/", "POST"): lambda o, pk: {"invoice": _sent(o), "amount": "1.00", "method": "cash"},
    ("api/webhook-endpoints/", "POST"): lambda o, pk: {"url": "https://hooks.example.com/", "events": ["*"]},
    ("api/webhook-endpoints/<pk>/", "PATCH"): lambda o, pk: {"description": "Accounting"},
}


URL_ARGUMENT = re.compile(r"<\w+>")


def _request(client: APIClient, route: str, method: str, organization, pk: int | None = None):
    url = "/" + URL_ARGUMENT.sub(str(pk), route)
    body = BODIES.get((route, method))
    call = getattr(client, method.lower())
    if body is None:
        return call(url)
    return call(url, body(organization, pk), format="json")


# --- every role, every route, every method -----------------------------------------------------


@pytest.fixture
def organizations():
    """Ours (where the caller is a member) and another, each with an owner."""
    return org(UserFactory(username="ours")), org(UserFactory(username="theirs"))


def _answering(client: APIClient) -> APIClient:
    """A client that answers a server error with its 500 instead of raising it into the test,
    so that the matrix lists every case that fails instead of stopping at the first."""
    client.raise_request_exception = False
    return client


def _credential(kind: str, role: str, organization):
    """A client with a credential of `role` in `organization`, and a function that makes another
    one (logout spends the credential it is made with)."""
    if kind == "member token":
        user = member_of(organization, f"a-{role}", role)
        return _answering(client_for(user, organization)), lambda: _answering(client_for(user, organization))
    client, _ = key_client(organization, role=role)
    return _answering(client), lambda: client


CASES = [(role, "member token") for role in ROLES] + [(role, "api key") for role in ROLES if role != OWNER]


def _is_permission_denied(response) -> bool:
    if response.status_code != 403:
        return False
    return response.request["REQUEST_METHOD"] == "HEAD" or (
        set(response.json()) == {"detail", "code"} and response.json()["code"] == "permission_denied"
    )


def _outcome(response) -> str:
    content = response.content[:300] if response.request["REQUEST_METHOD"] != "HEAD" else b""
    return f"{response.status_code} {content!r}"


@pytest.mark.parametrize(("role", "kind"), CASES, ids=[f"{role} {kind}" for role, kind in CASES])
def test_each_role_may_do_exactly_what_the_table_says_on_every_route(organizations, role, kind):
    ours, theirs = organizations
    client, another_client = _credential(kind, role, ours)
    # The other organization's objects: one for each detail route, made once.
    their_ids = {route: make(theirs) for route, make in TARGETS.items()}
    theirs_before = organization_rows(theirs)
    wrong = []

    for route, methods in sorted(walked().items()):
        detail = bool(URL_ARGUMENT.search(route))
        if route not in PERMISSIONS:
            continue  # unclassified: test_every_route_and_method_is_in_the_table says so
        if detail and route not in TARGETS:
            wrong.append(f"{route}: no TARGETS entry says what object it acts on")
            continue
        for method in sorted(methods):
            least = rule(route, method)
            allowed = allows(role, least)
            caller = another_client() if route == "api/logout/" else client
            pk = TARGETS[route](ours) if detail else None
            response = _request(caller, route, method, ours, pk)
            case = f"{method} {route} ({least} and up) as {role} {kind}: {_outcome(response)}"
            if allowed:
                expected = NOT_A_SUCCESS_BY_DESIGN.get((route, method, kind))
                if expected is not None:
                    ok = response.status_code == expected
                else:
                    ok = 200 <= response.status_code < 300
                if not ok:
                    wrong.append(f"allowed, but {case}")
            elif not _is_permission_denied(response):
                wrong.append(f"forbidden, but {case}")

            if detail:  # the same request on another organization's object: 404, whatever the role
                theirs_response = _request(caller, route, method, theirs, their_ids[route])
                if method == "OPTIONS":
                    # OPTIONS describes the route: for another organization's object it must say
                    # what it says for no object at all, so it reveals nothing of it.
                    unknown = _request(caller, route, method, theirs, UNKNOWN_ID)
                    ok = _outcome(theirs_response) == _outcome(unknown)
                else:
                    ok = theirs_response.status_code == 404
                if not ok:
                    wrong.append(
                        f"on another organization's object, {method} {route} as {role} {kind}: "
                        f"{_outcome(theirs_response)}"
                    )

    assert wrong == [], "\n".join(wrong)
    assert organization_rows(theirs) == theirs_before


def test_no_credential_is_401_on_every_route_that_is_not_public(organizations):
    ours, _ = organizations
    anonymous, bad_token, bad_key = (_answering(APIClient()) for _ in range(3))
    bad_token.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef")
    bad_key.credentials(HTTP_AUTHORIZATION="Bearer sk_000000000000_not-a-key")
    wrong = []

    for route, methods in sorted(walked().items()):
        if route not in PERMISSIONS:
            continue  # unclassified: test_every_route_and_method_is_in_the_table says so
        pk = TARGETS[route](ours) if URL_ARGUMENT.search(route) else None
        for method in sorted(methods):
            public = rule(route, method) == PUBLIC
            for name, client in (("no", anonymous), ("a bad token as", bad_token), ("a bad key as", bad_key)):
                if public and name != "no":
                    continue  # a public route's answer to a bad credential is not the contract's
                response = _request(client, route, method, ours, pk)
                if public:
                    ok = 200 <= response.status_code < 300
                else:
                    ok = response.status_code == 401 and (
                        method == "HEAD"
                        or response.json().get("code") in ("not_authenticated", "authentication_failed")
                    )
                if not ok:
                    wrong.append(f"{method} {route} with {name} credential: {_outcome(response)}")

    assert wrong == [], "\n".join(wrong)


# --- owners ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["member token", "api key"])
def test_an_admin_neither_grants_nor_removes_the_owner_role(organizations, kind):
    ours, theirs = organizations
    admin, _ = _credential(kind, ADMIN, ours)
    owner = Membership.objects.get(organization=ours, user__username="ours")
    their_owner = Membership.objects.get(organization=theirs, user__username="theirs")
    member = Membership.objects.get(pk=_membership(ours))
    newcomer = UserFactory().username
    roles_before = dict(Membership.objects.values_list("pk", "role"))

    promote = admin.patch(f"/api/members/{member.pk}/", {"role": "owner"}, format="json")
    demote = admin.patch(f"/api/members/{owner.pk}/", {"role": "admin"}, format="json")
    remove = admin.delete(f"/api/members/{owner.pk}/")
    add = admin.post("/api/members/", {"username": newcomer, "role": "owner"}, format="json")
    # Another organization's owner: 404 before the 403 (nothing said about that membership).
    their_demote = admin.patch(f"/api/members/{their_owner.pk}/", {"role": "admin"}, format="json")
    their_remove = admin.delete(f"/api/members/{their_owner.pk}/")

    assert [_outcome(r) for r in (promote, demote, remove, add) if not _is_permission_denied(r)] == []
    assert [r.status_code for r in (their_demote, their_remove)] == [404, 404]
    assert dict(Membership.objects.values_list("pk", "role")) == roles_before
    # What an admin may do to a member who is not an owner, it does.
    assert admin.patch(f"/api/members/{member.pk}/", {"role": "admin"}, format="json").status_code == 200


def test_an_owner_grants_and_removes_the_owner_role(organizations):
    ours, _ = organizations
    owner = client_for(member_of(ours, "second-owner", OWNER), ours)
    first = Membership.objects.get(organization=ours, user__username="ours")
    member = Membership.objects.get(pk=_membership(ours))

    promote = owner.patch(f"/api/members/{member.pk}/", {"role": "owner"}, format="json")
    demote = owner.patch(f"/api/members/{first.pk}/", {"role": "admin"}, format="json")
    promote_again = owner.patch(f"/api/members/{first.pk}/", {"role": "owner"}, format="json")
    remove = owner.delete(f"/api/members/{member.pk}/")
    add = owner.post(
        "/api/members/", {"username": UserFactory(username="third").username, "role": "owner"}, format="json"
    )

    assert [r.status_code for r in (promote, demote, promote_again, remove, add)] == [200, 200, 200, 204, 201]
    assert add.json()["role"] == OWNER
    assert sorted(
        Membership.objects.filter(organization=ours, role=OWNER).values_list("user__username", flat=True)
    ) == ["ours", "second-owner", "third"]
    assert not Membership.objects.filter(pk=member.pk).exists()


def test_not_even_an_owner_demotes_or_removes_the_last_owner(organizations):
    ours, _ = organizations
    owner = client_for(Membership.objects.get(organization=ours, user__username="ours").user, ours)
    only = Membership.objects.get(organization=ours, role=OWNER)

    demote = owner.patch(f"/api/members/{only.pk}/", {"role": "admin"}, format="json")
    remove = owner.delete(f"/api/members/{only.pk}/")

    assert [(r.status_code, r.json()["code"]) for r in (demote, remove)] == [(409, "last_owner")] * 2
    assert Membership.objects.get(pk=only.pk).role == OWNER


def test_an_api_key_is_never_an_owner(organizations):
    ours, _ = organizations
    admin, _ = _credential("api key", ADMIN, ours)

    response = admin.post("/api/api-keys/", {"name": "Root", "role": "owner"}, format="json")

    assert response.status_code == 400
    assert "role" in response.json()
    assert not ApiKey.objects.filter(organization=ours, name="Root").exists()


def test_the_fixtures_act_on_the_callers_own_organization(organizations):
    """The matrix's own premise: each credential it makes acts for `ours` with the role asked."""
    ours, _ = organizations
    for role, kind in CASES:
        client, _ = _credential(kind, role, ours)
        me = client.get("/api/me/").json()
        assert (me["organization"]["id"], me["role"]) == (ours.pk, role), (role, kind)
