import datetime

import jsonschema
import pytest

from customers.models import Customer
from tests.factories import org
from tests.schema_helpers import assert_matches, parameter, request_schema, response_schema

pytestmark = pytest.mark.django_db


def test_create_customer_sets_organization_and_returns_every_field(alice_api, alice):
    payload = {
        "name": "Globex",
        "email": "ap@globex.test",
        "phone": "+1 555 0100",
        "address": "1 Main St\nSpringfield",
        "tax_id": "US-123",
    }
    response = alice_api.post("/api/customers/", payload)

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "name", "email", "phone", "address", "tax_id", "created_at", "updated_at"}
    assert {k: body[k] for k in payload} == payload
    customer = Customer.objects.get(pk=body["id"])
    assert customer.organization == org(alice)


def test_create_customer_needs_only_a_name(alice_api):
    response = alice_api.post("/api/customers/", {"name": "Initech"})

    assert response.status_code == 201
    assert response.json()["email"] == ""


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "Ok", "email": "nope"}, "email"),
        ({"name": ["a list"]}, "name"),
        ({"name": "Nul\x00byte"}, "name"),
        ({"name": "Ok", "phone": "1" * 51}, "phone"),
    ],
)
def test_create_customer_rejects_invalid_input(alice_api, payload, field):
    response = alice_api.post("/api/customers/", payload)

    assert response.status_code == 400
    assert field in response.json()
    assert not Customer.objects.exists()


def test_read_timestamps_are_ignored_on_write(alice_api):
    response = alice_api.post("/api/customers/", {"name": "Hooli", "created_at": "2000-01-01T00:00:00Z"})

    assert response.status_code == 201
    assert not response.json()["created_at"].startswith("2000")


def test_retrieve_update_and_delete_a_customer(alice_api, alice_customer):
    url = f"/api/customers/{alice_customer.id}/"

    assert alice_api.get(url).json()["name"] == "Acme Corp"

    put = alice_api.put(url, {"name": "Acme Inc", "email": "new@acme.test"})
    assert put.status_code == 200
    assert put.json()["email"] == "new@acme.test"

    patch = alice_api.patch(url, {"phone": "123"})
    assert patch.status_code == 200
    alice_customer.refresh_from_db()
    assert (alice_customer.name, alice_customer.email, alice_customer.phone) == (
        "Acme Inc",
        "new@acme.test",
        "123",
    )

    assert alice_api.delete(url).status_code == 204
    assert not Customer.objects.filter(pk=alice_customer.id).exists()
    assert alice_api.get(url).status_code == 404


def test_list_is_searchable_and_orderable(alice_api, alice, make_customer):
    make_customer(alice, name="Zeta", email="z@zeta.test")
    make_customer(alice, name="Alpha", email="billing@alpha.test")
    make_customer(alice, name="Mid", email="finance@zeta.test")

    by_name = alice_api.get("/api/customers/?ordering=name").json()["results"]
    assert [c["name"] for c in by_name] == ["Alpha", "Mid", "Zeta"]
    by_name_desc = alice_api.get("/api/customers/?ordering=-name").json()["results"]
    assert [c["name"] for c in by_name_desc] == ["Zeta", "Mid", "Alpha"]
    newest_first = alice_api.get("/api/customers/?ordering=-created_at").json()["results"]
    assert [c["name"] for c in newest_first] == ["Mid", "Alpha", "Zeta"]
    search = alice_api.get("/api/customers/?search=zeta").json()
    assert search["count"] == 2
    assert {c["name"] for c in search["results"]} == {"Zeta", "Mid"}


def test_isolation_another_users_customer_is_404_everywhere(bob_api, alice_customer):
    url = f"/api/customers/{alice_customer.id}/"

    assert bob_api.get(url).status_code == 404
    assert bob_api.put(url, {"name": "Stolen"}).status_code == 404
    assert bob_api.patch(url, {"name": "Stolen"}).status_code == 404
    assert bob_api.delete(url).status_code == 404
    assert bob_api.get("/api/customers/").json()["count"] == 0
    assert bob_api.get("/api/customers/?search=Acme").json()["count"] == 0
    alice_customer.refresh_from_db()
    assert alice_customer.name == "Acme Corp"


def test_pagination_defaults_to_20_and_caps_at_100(alice_api, alice):
    Customer.objects.bulk_create(Customer(organization=org(alice), name=f"C{i:03}") for i in range(105))

    first = alice_api.get("/api/customers/").json()
    assert first["count"] == 105
    assert len(first["results"]) == 20
    assert first["previous"] is None
    assert "page=2" in first["next"]

    capped = alice_api.get("/api/customers/?page_size=1000").json()
    assert len(capped["results"]) == 100

    last = alice_api.get("/api/customers/?page_size=100&page=2").json()
    assert len(last["results"]) == 5
    assert last["next"] is None


@pytest.mark.parametrize(
    "query", ["page=0", "page=-1", "page=abc", "page_size=0", "page_size=x", "page=" + "9" * 50]
)
def test_pagination_rejects_malformed_parameters(alice_api, alice_customer, query):
    response = alice_api.get(f"/api/customers/?{query}")

    assert response.status_code == 400


def test_page_past_the_end_is_404(alice_api, alice_customer):
    assert alice_api.get("/api/customers/?page=2").status_code == 404


def test_customer_with_invoices_cannot_be_deleted(alice_api, alice, alice_customer):
    from invoices.services import invoice_create

    invoice_create(organization=org(alice), customer_id=alice_customer.pk, due_date=datetime.date(2030, 1, 1))

    response = alice_api.delete(f"/api/customers/{alice_customer.id}/")

    assert response.status_code == 409
    assert response.json() == {
        "detail": "This customer has invoices and cannot be deleted.",
        "code": "in_use",
    }
    assert Customer.objects.filter(pk=alice_customer.id).exists()


# --- what the schema says of a customer is what the server does ---------------------------------------


def test_a_customer_without_email_matches_the_customer_schema(alice_api):
    # Finding: `email: ""` of a customer failed `format: email` in every customer response.
    created = alice_api.post("/api/customers/", {"name": "Initech"})
    listed = alice_api.get("/api/customers/")

    assert created.status_code == 201
    assert created.json()["email"] == ""
    assert_matches(response_schema("/api/customers/", "post", 201), created.json())
    assert_matches(response_schema("/api/customers/", "get", 200), listed.json())
    assert_matches(response_schema("/api/customers/{id}/", "get", 200), created.json())


@pytest.mark.parametrize(
    ("path", "field", "value"),
    [
        ("/api/customers/", "tax_id", 0),  # the finding: stored as "0"
        ("/api/customers/", "name", 12),
        ("/api/customers/", "email", ["a@b.test"]),
    ],
)
def test_a_string_field_refuses_other_json_types(alice_api, path, field, value):
    body = {"name": "Acme", field: value}

    response = alice_api.post(path, body)

    assert not request_schema(path, "post").is_valid(body)
    assert response.status_code == 400
    assert field in response.json()
    assert not Customer.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("address", "\x18\x00\xb2'"),  # the finding: a NUL, which PostgreSQL cannot store
        ("name", "nul\x00"),
        ("name", "   "),  # blank once trimmed
        ("name", "\x1c"),  # Python's str.strip() trims it too
    ],
)
def test_strings_the_server_refuses_are_outside_the_schema(alice_api, field, value):
    body = {"name": "Acme", field: value}

    response = alice_api.post("/api/customers/", body)

    assert not request_schema("/api/customers/", "post").is_valid(body)
    assert response.status_code == 400
    assert field in response.json()


def test_length_counts_the_characters_as_sent(alice_api):
    # The schema's maxLength counts every character; so does the server (it trims after counting).
    body = {"name": " " + "x" * 200}

    assert not request_schema("/api/customers/", "post").is_valid(body)
    assert alice_api.post("/api/customers/", body).status_code == 400


def test_customer_search_errors_are_field_errors(alice_api):
    # Finding: DRF answered a NUL in ?search= with a bare list, not the documented {field: [...]}.
    nul = alice_api.get("/api/customers/?search=a%00b")
    long = alice_api.get("/api/customers/?search=" + "x" * 201)

    assert (nul.status_code, long.status_code) == (400, 400)
    assert list(nul.json()) == ["search"]
    assert list(long.json()) == ["search"]
    search = parameter("/api/customers/", "get", "search")["schema"]
    assert search["maxLength"] == 200
    assert not jsonschema.Draft7Validator(search).is_valid("a\x00b")


@pytest.mark.parametrize(("ordering", "valid"), [("name,-created_at", True), ("id", False), (",", False)])
def test_customer_ordering_is_checked_as_documented(alice_api, ordering, valid):
    # One comma-separated value of the documented enum (style form, explode false), as every list's.
    parameter_ = parameter("/api/customers/", "get", "ordering")
    schema = jsonschema.Draft7Validator(parameter_["schema"])

    response = alice_api.get("/api/customers/", {"ordering": ordering})

    assert (parameter_["style"], parameter_["explode"]) == ("form", False)
    assert schema.is_valid(ordering.split(",")) is valid
    assert response.status_code == (200 if valid else 400)


def test_the_lists_count_is_the_organizations_whatever_is_named(alice_api, alice, bob, make_customer):
    """An unfiltered list counts with one fixed statement (customers.selectors), the same figure as the
    ORM's count; a filtered one counts what matches."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from customers.selectors import organization_customer_count

    for i in range(7):
        make_customer(alice, name=f"Customer {i}", email=f"c{i}@a.example")
    make_customer(alice, name="Other", email="o@a.example")
    make_customer(bob, name="Customer of Bob")
    for who in (alice, bob):
        assert (
            organization_customer_count(organization_id=org(who).pk)
            == Customer.objects.filter(organization=org(who)).count()
        )
    assert organization_customer_count(organization_id=org(bob).pk + 1000) == 0
    with CaptureQueriesContext(connection) as ctx:
        body = alice_api.get("/api/customers/?page_size=3&page=2").json()
    assert (body["count"], len(body["results"])) == (8, 3)
    assert len(ctx.captured_queries) == 3  # the credential, the count, the page
    assert alice_api.get("/api/customers/?search=Customer&page_size=3").json()["count"] == 7
    assert alice_api.get("/api/customers/?ordering=-name").json()["count"] == 8


def test_a_customer_renders_as_drf_renders_it(alice, make_customer):
    import zoneinfo
    from unittest import mock

    from django.utils import timezone
    from rest_framework import serializers

    from billing.serializers import PlainRepresentationMixin
    from customers.serializers import CustomerSerializer

    rows = [
        make_customer(alice, name='<script>"Ç"</script>', email="", phone="", address="1\n2", tax_id=""),
        make_customer(alice, name="Zoë", email="z@x.example"),
    ]
    for zone in ("UTC", "Asia/Kathmandu"):
        with timezone.override(zoneinfo.ZoneInfo(zone)):
            ours = CustomerSerializer(rows, many=True).data
            with mock.patch.object(
                PlainRepresentationMixin, "to_representation", serializers.Serializer.to_representation
            ):
                assert ours == CustomerSerializer(rows, many=True).data
    plain = CustomerSerializer(rows, many=True)
    assert len(plain.data) == 2
    assert "fields" not in plain.child.__dict__  # the plain path is the one taken


def test_a_page_of_the_list_is_the_orms_slice(alice, bob, alice_api, make_customer):
    """An unfiltered list's page is one compiled read whose SQL is the ORM's own for the view's
    queryset and that slice; the JSON that of DRF's filtered read."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from customers.selectors import organization_customers_page
    from customers.views import CustomerViewSet

    for name in ("b", "A", "c", "B", "a"):
        make_customer(alice, name=name, email=f"{name}@x.example")
    make_customer(bob, name="a")
    organization_id = org(alice).pk
    view_queryset = CustomerViewSet.queryset.filter(organization_id=organization_id)
    for offset, limit in ((0, 2), (2, 2), (4, 2), (0, 100)):
        with CaptureQueriesContext(connection) as ours:
            rows = organization_customers_page(organization_id=organization_id, offset=offset, limit=limit)
        with CaptureQueriesContext(connection) as theirs:
            expected = list(view_queryset[offset : offset + limit])
        assert [q["sql"] for q in ours] == [q["sql"] for q in theirs]
        assert rows == expected
    for query in ("page_size=2", "page_size=2&page=3"):
        compiled = alice_api.get(f"/api/customers/?{query}").json()
        filtered = alice_api.get(f"/api/customers/?{query}&search=.example").json()  # every one, filtered
        assert compiled["results"] == filtered["results"]
        assert compiled["count"] == filtered["count"] == 5
