"""Tenant isolation, for every route the project serves and every method it allows.

The matrix is built from the URL resolver, not from a list someone keeps: a new endpoint is walked
the day it is routed. Bob acts on the objects of Alice's organization, with a member's token and
with an API key of his organization; every detail route answers 404, every list and summary shows
only his organization's rows, every body or filter naming her objects is 400, and afterwards not one
of her organization's rows has changed. A route that holds no object of an organization must be
named in NOT_OWNED, so an endpoint cannot slip through unclassified.
"""

import re
from decimal import Decimal

import pytest
from django.apps import apps
from django.urls import URLPattern, URLResolver, get_resolver

from customers.models import Customer
from events.models import Event, WebhookDelivery, WebhookEndpoint
from invoices.models import Invoice
from payments.models import Payment
from tests.conftest import client_for, key_client, make_user, member_of
from users.models import ApiKey, Membership, Organization

pytestmark = pytest.mark.django_db

# Routes that hold no object of an organization, and why they cannot leak one.
NOT_OWNED = {
    "api/register/": "creates a new user (and their own new organization)",
    "api/login/": "answers only with the caller's own new token",
    "api/logout/": "revokes only the caller's own token",
    "api/me/": "answers only with the caller",
    "api/organization/": (
        "per credential by construction: it reads and changes the organization the credential is "
        "bound to, and no id in its URL or body names another one "
        "(test_the_organization_route_is_the_callers_own)"
    ),
    "api/health/": "no data",
    "api/": "the entry points' URLs, no data",
    "api/schema/": "no data",
    "api/docs/": "no data",
    "api/redoc/": "no data",
}

# What Bob sends as a body: it always names Alice's objects where a body can name one.
METHOD_BODIES = {"post": {}, "put": {}, "patch": {}, "delete": None, "get": None}


def _routes(patterns=None, prefix=""):
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern).lstrip("^").rstrip("$"), pattern


def api_routes():
    return [(route, pattern) for route, pattern in _routes() if route.startswith("api/")]


def _methods(pattern) -> list[str]:
    http = ("get", "head", "post", "put", "patch", "delete")
    actions = getattr(pattern.callback, "actions", None)
    if actions:
        # DRF serves HEAD wherever it serves GET (it adds "head" to `actions` on first use).
        return sorted({*actions, "head"} & set(http) if "get" in actions else set(actions) & set(http))
    view_class = pattern.callback.view_class
    return sorted(m for m in http if hasattr(view_class, m))


def _belongs_to_an_organization(model) -> bool:
    return any(
        field.name == "organization" and field.related_model is Organization
        for field in model._meta.concrete_fields
    )


def _model(pattern):
    """The model a route serves, when its rows belong to an organization (else None)."""
    view_class = getattr(pattern.callback, "cls", None)
    queryset = getattr(view_class, "queryset", None)
    if queryset is None or not _belongs_to_an_organization(queryset.model):
        return None
    return queryset.model


@pytest.fixture
def alices_books(alice, alice_org, alice_customer, make_invoice):
    from payments.services import payment_record

    draft = make_invoice(alice, alice_customer, send=False)
    sent = make_invoice(alice, alice_customer)
    payment_record(organization=alice_org, invoice_id=sent.pk, amount=Decimal("10.00"), method="card")
    member_of(alice_org, "dave", "viewer")
    _, api_key = key_client(alice_org, role="member")
    endpoint, delivery = _webhook_delivery(alice_org)
    return {
        Customer: alice_customer,
        Invoice: draft,
        Payment: Payment.objects.get(invoice=sent),
        Membership: Membership.objects.get(organization=alice_org, user__username="dave"),
        Event: Event.objects.filter(organization=alice_org).latest("id"),
        ApiKey: api_key,
        WebhookEndpoint: endpoint,
        WebhookDelivery: delivery,
        "sent": sent,
    }


def _webhook_delivery(organization) -> tuple[WebhookEndpoint, WebhookDelivery]:
    """An endpoint of the organization's and a failed delivery to it (one that may be retried)."""
    from django.db import transaction

    from events.services import Change, events_record
    from events.webhooks import endpoint_create

    endpoint, _ = endpoint_create(
        organization_id=organization.pk, url="https://hooks.example.com/", events=["*"]
    )
    with transaction.atomic():
        (event,) = events_record(organization_id=organization.pk, changes=[Change("invoice.paid", {"id": 1})])
    delivery = WebhookDelivery.objects.get(event=event, endpoint=endpoint)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=WebhookDelivery.Status.FAILED)
    return endpoint, delivery


@pytest.fixture(params=["member token", "api key"])
def bob_client(request, bob, bob_org):
    """Bob's credential: a token of his (owner's) membership, or an admin API key of his
    organization (a key is never an owner)."""
    if request.param == "member token":
        return client_for(bob)
    client, _ = key_client(bob_org, role="admin")
    return client


def organization_rows(organization):
    """Every row the organization has in every table whose rows belong to one: the books (and
    their lines), the memberships and the API keys."""
    models = [m for m in apps.get_models() if _belongs_to_an_organization(m)]
    assert {Customer, Invoice, Payment, Membership, ApiKey} <= set(models)
    return {
        m._meta.label: sorted(map(str, m.objects.filter(organization=organization).values())) for m in models
    }


def _referencing_bodies(books):
    """Create bodies that name Alice's objects; a create route missing here must name nothing."""
    return {
        "api/invoices/": {"customer": books[Customer].pk, "due_date": "2030-01-01"},
        "api/payments/": {"invoice": books["sent"].pk, "amount": "1.00", "method": "cash"},
    }


# What a create that names no other organization's object sends (it must succeed, for Bob's
# organization). A member is a user, and users belong to no organization: adding one is the
# caller's own membership row.
CREATE_BODIES = {
    "api/customers/": lambda: {"name": "Bob's own"},
    "api/api-keys/": lambda: {"name": "Bob's own", "role": "viewer"},
    "api/members/": lambda: {"username": make_user("carol").username, "role": "viewer"},
    "api/webhook-endpoints/": lambda: {"url": "https://bob.example.com/hooks", "events": ["*"]},
}

# What a detail write sends: a body that would succeed on an object of Bob's own.
DETAIL_BODIES = {Membership: {"role": "admin"}}


def test_every_api_route_is_owned_or_declared_not_owned():
    unclassified = [
        route for route, pattern in api_routes() if _model(pattern) is None and route not in NOT_OWNED
    ]

    assert unclassified == []


def _listed(body) -> tuple[int, set | None]:
    """(count, the ids on the page) of a list; (count, None) of the summary."""
    if "results" in body and "count" not in body:  # a cursor page (the events): no count
        return len(body["results"]), {row["id"] for row in body["results"]}
    if "results" in body:
        return body["count"], {row["id"] for row in body["results"]}
    return body["count"], None


def test_another_organizations_objects_are_invisible_and_untouchable_on_every_route(
    alice_org, bob_org, bob_client, alices_books
):
    before = organization_rows(alice_org)
    bodies = _referencing_bodies(alices_books)
    checked = []

    for route, pattern in api_routes():
        model = _model(pattern)
        if model is None:
            continue
        for method in _methods(pattern):
            call = getattr(bob_client, method)
            if "(?P<pk>" in route:
                target = alices_books[model]
                url = "/" + re.sub(r"\(\?P<pk>[^)]*\)", str(target.pk), route)
                body = DETAIL_BODIES.get(model, {}) if method in ("post", "put", "patch") else None
                response = call(url, body, format="json") if body is not None else call(url)
                assert response.status_code == 404, (method, url, response.status_code, response.content)
            elif method in ("get", "head"):
                url = "/" + route
                response = call(url)
                assert response.status_code == 200, (url, response.content)
                if method == "get":
                    # Only Bob's organization's rows (today's few fit on one page).
                    own = set(model.objects.filter(organization=bob_org).values_list("pk", flat=True))
                    count, ids = _listed(response.json())
                    assert count == len(own), (url, response.json())
                    assert ids is None or ids == own, (url, response.json())
            elif route in bodies:
                url = "/" + route
                response = call(url, bodies[route], format="json")
                assert response.status_code == 400, (method, url, response.status_code, response.content)
            else:
                # A create that names no other organization's object: it succeeds, for Bob's.
                url = "/" + route
                response = call(url, CREATE_BODIES[route](), format="json")
                assert response.status_code == 201, (method, url, response.content)
                assert model.objects.get(pk=response.json()["id"]).organization == bob_org
            checked.append((method.upper(), url))

    assert organization_rows(alice_org) == before
    # 5 list routes x (GET, HEAD, POST), customer and invoice detail x (GET, HEAD, PUT, PATCH,
    # DELETE), payment detail x (GET, HEAD), send, void, summary x (GET, HEAD), member detail x
    # (PATCH, DELETE), API key detail x DELETE: 34 pairs today.
    assert len(checked) >= 34
    print(f"isolation matrix: {len(checked)} route x method pairs checked")


def test_the_organization_route_is_the_callers_own(alice_org, bob_org, bob_client):
    alice_before = organization_rows(alice_org), Organization.objects.filter(pk=alice_org.pk).values().get()

    read = bob_client.get("/api/organization/")
    changed = bob_client.patch(
        "/api/organization/", {"name": "Bob's books", "invoice_prefix": "B-"}, format="json"
    )

    assert (read.status_code, read.json()["id"]) == (200, bob_org.pk)
    assert (changed.status_code, changed.json()["id"]) == (200, bob_org.pk)
    bob_org.refresh_from_db()
    assert (bob_org.name, bob_org.invoice_prefix) == ("Bob's books", "B-")
    assert (
        organization_rows(alice_org),
        Organization.objects.filter(pk=alice_org.pk).values().get(),
    ) == alice_before


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/api/invoices/", "customer"),
        ("/api/invoices/summary/", "customer"),
        ("/api/payments/", "customer"),
        ("/api/payments/", "invoice"),
    ],
)
def test_filters_naming_another_organizations_objects_are_400(bob_client, alices_books, url, param):
    target = alices_books[Customer] if param == "customer" else alices_books["sent"]

    response = bob_client.get(f"{url}?{param}={target.pk}")

    assert response.status_code == 400
    assert param in response.json()


def test_bob_sees_his_own_data_only(bob, bob_org, bob_client, make_invoice, alices_books):
    mine = make_invoice(bob)
    own_members = Membership.objects.filter(organization=bob_org)
    own_keys = ApiKey.objects.filter(organization=bob_org)

    invoices = bob_client.get("/api/invoices/").json()
    summary = bob_client.get("/api/invoices/summary/").json()
    members = bob_client.get("/api/members/").json()
    api_keys = bob_client.get("/api/api-keys/").json()

    assert [i["id"] for i in invoices["results"]] == [mine.pk]
    assert summary["count"] == 1
    assert sorted(m["id"] for m in members["results"]) == sorted(own_members.values_list("pk", flat=True))
    assert [m["user"]["username"] for m in members["results"]] == ["bob"]
    assert sorted(k["id"] for k in api_keys["results"]) == sorted(own_keys.values_list("pk", flat=True))
    assert alices_books[ApiKey].pk not in {k["id"] for k in api_keys["results"]}
