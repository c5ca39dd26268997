"""What an API request does not pay for: the admin's session, its user and its messages (run only
under SESSION_PATH_PREFIXES, while the admin keeps its session, CSRF protection and messages), and
serializer fields built again for every request (`CachedFieldsMixin`, the plain path for `/api/me/`).
Pure speed: these tests pin that nothing a client sees changes."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework import serializers

from billing.serializers import CachedFieldsMixin, PlainRepresentationMixin
from customers.models import Customer
from customers.serializers import CustomerSerializer
from events.models import Event
from events.serializers import EventSerializer
from tests.admin_helpers import add_url
from tests.conftest import client_for, key_client
from tests.factories import org
from users.serializers import MeSerializer, OrganizationRefSerializer

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(db):
    return get_user_model().objects.create_superuser("operator", "operator@example.com", "operator-password")


def logged_in_browser(operator) -> Client:
    """A browser that is logged in to the admin and checks CSRF tokens, as a real one is checked."""
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    return browser


def test_api_requests_use_no_session_even_with_a_session_cookie(alice, alice_customer, operator):
    browser = logged_in_browser(operator)
    token = client_for(alice)._credentials["HTTP_AUTHORIZATION"]
    for path in ("/api/me/", "/api/customers/", f"/api/customers/{alice_customer.pk}/", "/api/health/"):
        with CaptureQueriesContext(connection) as queries:
            response = browser.get(path, HTTP_AUTHORIZATION=token)
        assert response.status_code == 200, path
        assert "Cookie" not in response.get("Vary", ""), path
        assert not response.cookies, path
        assert not hasattr(response.wsgi_request, "session"), path
        assert not hasattr(response.wsgi_request, "_messages"), path
        assert not any("django_session" in q["sql"] for q in queries.captured_queries), path


def test_an_api_write_with_a_session_cookie_needs_no_csrf_token(alice, operator):
    browser = logged_in_browser(operator)
    token = client_for(alice)._credentials["HTTP_AUTHORIZATION"]
    response = browser.post(
        "/api/customers/", {"name": "Initech"}, content_type="application/json", HTTP_AUTHORIZATION=token
    )
    assert response.status_code == 201
    assert Customer.objects.get(organization=org(alice)).name == "Initech"


def test_the_docs_and_the_hosted_page_paths_use_no_session(operator):
    browser = logged_in_browser(operator)
    for path in ("/api/docs/", "/i/nothing-here/"):
        response = browser.get(path)
        assert response.status_code in {200, 404}, path
        assert not hasattr(response.wsgi_request, "session"), path


def test_the_admin_keeps_its_session_and_its_messages(operator):
    browser = logged_in_browser(operator)
    response = browser.get("/admin/")
    assert response.status_code == 200
    assert response.wsgi_request.user == operator
    assert "Cookie" in response["Vary"]

    form = browser.get(add_url(get_user_model()))
    assert form.status_code == 200
    assert "csrftoken" in form.cookies or "csrftoken" in browser.cookies


def test_the_admin_refuses_a_post_without_its_csrf_token(operator):
    browser = logged_in_browser(operator)
    assert browser.post("/admin/logout/").status_code == 403
    assert browser.get("/admin/").status_code == 200  # still logged in

    login = Client(enforce_csrf_checks=True)
    refused = login.post("/admin/login/", {"username": "operator", "password": "operator-password"})
    assert refused.status_code == 403
    assert "_auth_user_id" not in login.session


def test_the_admin_takes_a_post_with_its_csrf_token_and_says_what_it_did(operator):
    browser = logged_in_browser(operator)
    assert browser.get(add_url(Group)).status_code == 200
    token = browser.cookies["csrftoken"].value
    response = browser.post(
        add_url(Group), {"name": "Accountants", "csrfmiddlewaretoken": token}, follow=True
    )
    assert response.status_code == 200
    assert any("Accountants" in str(message) for message in response.context["messages"])

    logout = browser.post("/admin/logout/", {"csrfmiddlewaretoken": token})
    assert logout.status_code == 200
    assert "_auth_user_id" not in browser.session


# --- serializers ---------------------------------------------------------------------------------


def uncached(serializer_class, instance, many=False):
    """What the serializer renders with its fields built for the instance, as DRF builds them."""
    original = CachedFieldsMixin.get_fields
    try:
        CachedFieldsMixin.get_fields = lambda self: super(CachedFieldsMixin, self).get_fields()
        return serializer_class(instance, many=many).data
    finally:
        CachedFieldsMixin.get_fields = original


def test_cached_fields_render_as_drf_builds_them(alice, alice_customer, other_customer):
    customers = list(Customer.objects.filter(organization=org(alice)).order_by("pk"))
    events = list(Event.objects.filter(organization=org(alice)).order_by("pk"))
    assert events

    assert CustomerSerializer(customers, many=True).data == uncached(CustomerSerializer, customers, many=True)
    assert EventSerializer(events, many=True).data == uncached(EventSerializer, events, many=True)


def test_fields_are_built_once_per_class_and_each_serializer_has_its_own(alice_customer, monkeypatch):
    CachedFieldsMixin._prototype_fields.clear()
    built = []
    original = serializers.ModelSerializer.get_fields

    def counting(self):
        built.append(type(self))
        return original(self)

    monkeypatch.setattr(serializers.ModelSerializer, "get_fields", counting)
    first, second = CustomerSerializer(alice_customer), CustomerSerializer(alice_customer)
    # Its output takes the plain path (billing.serializers.PlainRepresentationMixin); its fields are
    # still what validates a write, and the schema.
    assert first.fields.keys() == second.fields.keys()
    assert built == [CustomerSerializer]
    for name, field in first.fields.items():
        assert field is not second.fields[name]
        assert field.parent is first
        assert second.fields[name].parent is second


def test_a_changed_setting_drops_the_built_fields(alice_customer, settings):
    CustomerSerializer(alice_customer).fields  # noqa: B018
    assert CustomerSerializer in CachedFieldsMixin._prototype_fields
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK}
    assert CustomerSerializer not in CachedFieldsMixin._prototype_fields


def drf_output(serializer_class, instance):
    """What DRF's generic `Serializer.to_representation` renders (nested serializers included)."""
    original = PlainRepresentationMixin.to_representation
    try:
        PlainRepresentationMixin.to_representation = serializers.Serializer.to_representation
        return serializer_class(instance).data
    finally:
        PlainRepresentationMixin.to_representation = original


@pytest.mark.parametrize("credential", ["member", "api key"])
def test_me_renders_as_drf_does(alice, credential):
    client = client_for(alice) if credential == "member" else key_client(org(alice), role="member")[0]
    response = client.get("/api/me/")
    assert response.status_code == 200
    assert isinstance(MeSerializer(), PlainRepresentationMixin)
    assert isinstance(OrganizationRefSerializer(), PlainRepresentationMixin)

    data = response.data.serializer.instance
    assert response.json() == drf_output(MeSerializer, data)
    if credential == "api key":
        assert response.json()["api_key"]["prefix"]
        assert response.json()["username"] is None
    else:
        assert response.json()["username"] == "alice"
        assert response.json()["api_key"] is None
