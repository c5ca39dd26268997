"""Tenant isolation, for every route the project serves and every method it allows.

The matrix is built from the URL resolver, not from a list someone keeps: a new endpoint is walked
the day it is routed. Bob acts on Alice's objects; every detail route answers 404, every list and
summary leaves her objects out, every body or filter naming her objects is 400, and afterwards not
one of her rows has changed. A route that holds no owned object must be named in NOT_OWNED, so an
endpoint cannot slip through unclassified.
"""

import re
from decimal import Decimal

import pytest
from django.apps import apps
from django.urls import URLPattern, URLResolver, get_resolver

from billing.models import OwnedModel
from customers.models import Customer
from invoices.models import Invoice
from payments.models import Payment
from tests.factories import org

pytestmark = pytest.mark.django_db

# Routes that hold no owned object, and why they cannot leak one.
NOT_OWNED = {
    "api/register/": "creates a new user",
    "api/login/": "answers only with the caller's own new token",
    "api/logout/": "revokes only the caller's own token",
    "api/me/": "answers only with the caller",
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


def _model(pattern):
    view_class = getattr(pattern.callback, "cls", None)
    queryset = getattr(view_class, "queryset", None)
    return queryset.model if queryset is not None else None


@pytest.fixture
def alices_books(alice, alice_customer, make_invoice):
    from payments.services import payment_record

    draft = make_invoice(alice, alice_customer, send=False)
    sent = make_invoice(alice, alice_customer)
    payment_record(organization=org(alice), invoice_id=sent.pk, amount=Decimal("10.00"), method="card")
    return {
        Customer: alice_customer,
        Invoice: draft,
        Payment: Payment.objects.get(invoice=sent),
        "sent": sent,
    }


def _snapshot(owner):
    """Every row the owner has in every owned table (and the lines, which carry an owner too)."""
    owned = [m for m in apps.get_models() if issubclass(m, OwnedModel)] + [apps.get_model("invoices", "Line")]
    return {
        m._meta.label: sorted(map(str, m.objects.filter(organization=org(owner)).values())) for m in owned
    }


def _referencing_bodies(books):
    """Create bodies that name Alice's objects; a create route missing here must name nothing."""
    return {
        "api/invoices/": {"customer": books[Customer].pk, "due_date": "2030-01-01"},
        "api/payments/": {"invoice": books["sent"].pk, "amount": "1.00", "method": "cash"},
    }


def test_every_api_route_is_owned_or_declared_not_owned():
    unclassified = [
        route for route, pattern in api_routes() if _model(pattern) is None and route not in NOT_OWNED
    ]

    assert unclassified == []


def test_another_users_objects_are_invisible_and_untouchable_on_every_route(
    alice, bob, bob_api, alices_books
):
    before = _snapshot(alice)
    bodies = _referencing_bodies(alices_books)
    checked = []

    for route, pattern in api_routes():
        model = _model(pattern)
        if model is None:
            continue
        for method in _methods(pattern):
            call = getattr(bob_api, method)
            if "(?P<pk>" in route:
                target = alices_books[model]
                url = "/" + re.sub(r"\(\?P<pk>[^)]*\)", str(target.pk), route)
                body = {} if method in ("post", "put", "patch") else None
                response = call(url, body, format="json") if body is not None else call(url)
                assert response.status_code == 404, (method, url, response.status_code, response.content)
            elif method in ("get", "head"):
                url = "/" + route
                response = call(url)
                assert response.status_code == 200, (url, response.content)
                if method == "get":
                    body = response.json()
                    assert body.get("count", 0) == 0, (url, body)
            elif route in bodies:
                url = "/" + route
                response = call(url, bodies[route], format="json")
                assert response.status_code == 400, (method, url, response.status_code, response.content)
            else:
                # A create that names no other object: it succeeds, and what it makes is Bob's.
                url = "/" + route
                response = call(url, {"name": "Bob's own"}, format="json")
                assert response.status_code == 201, (method, url, response.content)
                assert model.objects.get(pk=response.json()["id"]).organization == org(bob)
            checked.append((method.upper(), url))

    assert _snapshot(alice) == before
    # 3 list routes x (GET, HEAD, POST), customer and invoice detail x (GET, HEAD, PUT, PATCH,
    # DELETE), payment detail x (GET, HEAD), send, void, summary x (GET, HEAD): 24 pairs today.
    assert len(checked) >= 24
    print(f"isolation matrix: {len(checked)} route x method pairs checked")


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/api/invoices/", "customer"),
        ("/api/invoices/summary/", "customer"),
        ("/api/payments/", "customer"),
        ("/api/payments/", "invoice"),
    ],
)
def test_filters_naming_another_users_objects_are_400(bob_api, alices_books, url, param):
    target = alices_books[Customer] if param == "customer" else alices_books["sent"]

    response = bob_api.get(f"{url}?{param}={target.pk}")

    assert response.status_code == 400
    assert param in response.json()


def test_bob_sees_his_own_data_only(bob, bob_api, make_invoice, alices_books):
    mine = make_invoice(bob)

    invoices = bob_api.get("/api/invoices/").json()
    summary = bob_api.get("/api/invoices/summary/").json()

    assert [i["id"] for i in invoices["results"]] == [mine.pk]
    assert summary["count"] == 1
