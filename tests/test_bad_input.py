"""Hostile and malformed input: always a 4xx with a clear message, never a 5xx, nothing written."""

import json

import pytest
from django.apps import apps
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing.models import OwnedModel
from customers.models import Customer

pytestmark = pytest.mark.django_db


def _row_counts():
    models = [m for m in apps.get_models() if issubclass(m, OwnedModel)] + [
        apps.get_model("invoices", "Line")
    ]
    return {m._meta.label: m.objects.count() for m in models}


@pytest.fixture
def write_targets(alice, alice_customer, make_invoice):
    draft = make_invoice(alice, alice_customer, send=False)
    sent = make_invoice(alice, alice_customer)
    valid_line = {"description": "Work", "quantity": "1", "unit_price": "10.00", "tax_rate": "0"}
    return [
        (
            "post",
            "/api/customers/",
            {"name": "Acme", "email": "a@b.test", "phone": "1", "address": "x", "tax_id": "x"},
        ),
        ("patch", f"/api/customers/{alice_customer.pk}/", {"name": "Acme"}),
        (
            "post",
            "/api/invoices/",
            {
                "customer": alice_customer.pk,
                "due_date": "2030-01-01",
                "issue_date": "2029-12-01",
                "currency": "EUR",
                "number": "N-1",
                "notes": "n",
                "lines": [valid_line],
            },
        ),
        ("patch", f"/api/invoices/{draft.pk}/", {"due_date": "2030-01-02", "lines": [valid_line]}),
        (
            "post",
            "/api/payments/",
            {"invoice": sent.pk, "amount": "1.00", "method": "cash", "reference": "r"},
        ),
        (
            "post",
            "/api/register/",
            {"username": "newbie", "password": "a-long-and-unusual-pass", "email": ""},
        ),
        ("post", "/api/login/", {"username": "alice", "password": "whatever"}),
    ]


WRONG_VALUES = [
    None,
    True,
    -1,
    0,
    10**30,
    1.5e308,
    "",
    " ",
    "x" * 10_000,
    "\x00",
    "nul\x00inside",
    "💸" * 300,
    "1e999",
    "-0.001",
    [],
    [1, 2],
    {},
    {"nested": {"deep": [1]}},
]


@pytest.mark.parametrize("value", WRONG_VALUES, ids=repr)
def test_a_wrong_value_in_any_field_of_any_write_endpoint_is_a_clear_4xx(alice_api, write_targets, value):
    for method, url, valid in write_targets:
        for field in valid:
            before = _row_counts()
            response = getattr(alice_api, method)(url, {**valid, field: value}, format="json")

            assert response.status_code < 500, (method, url, field, value, response.content[:300])
            if response.status_code >= 400:
                assert response.json(), "a 4xx always says what was wrong"
                assert _row_counts() == before, (method, url, field)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_arbitrary_json_in_any_field_never_causes_a_server_error(alice_api, write_targets, data):
    method, url, valid = data.draw(st.sampled_from(write_targets))
    field = data.draw(st.sampled_from(sorted(valid)))
    value = data.draw(json_values)

    response = getattr(alice_api, method)(url, {**valid, field: value}, format="json")

    assert response.status_code < 500, (method, url, field, value, response.content[:300])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values)
def test_arbitrary_json_bodies_are_refused_cleanly(alice_api, write_targets, body):
    for method, url, _ in write_targets:
        response = getattr(alice_api, method)(url, body, format="json")
        assert response.status_code < 500, (method, url, body)


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"name": }',
        b"not json",
        b"\xff\xfe\x00",
        b'{"name": "a"',
        b"[" * 100_000 + b"]" * 100_000,
        b"NaN",
    ],
    ids=["truncated", "missing value", "text", "binary", "unclosed", "deeply nested", "NaN literal"],
)
def test_malformed_json_is_400(alice_api, raw):
    response = alice_api.generic("POST", "/api/customers/", raw, content_type="application/json")

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert _row_counts()["customers.Customer"] == 0


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"],
)
def test_wrong_content_types_are_415(alice_api, content_type):
    response = alice_api.generic("POST", "/api/customers/", b"name=Acme", content_type=content_type)

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_an_unknown_charset_is_415_and_nothing_is_written(alice_api):
    response = alice_api.generic(
        "POST",
        "/api/customers/",
        '{"name": "Café"}'.encode(),
        content_type="application/json; charset=no-such",
    )

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert not Customer.objects.exists()


def test_a_body_over_the_size_limit_is_413_before_it_is_read(alice_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = json.dumps({"name": "x" * 2000}).encode()

    response = alice_api.generic("POST", "/api/customers/", body, content_type="application/json")

    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
    assert _row_counts()["customers.Customer"] == 0


def test_unicode_round_trips(alice_api):
    name = "Société Générale — 東京 💶"

    response = alice_api.post(
        "/api/customers/", {"name": name, "address": "Straße 1\nMünchen"}, format="json"
    )

    assert response.status_code == 201
    assert alice_api.get(f"/api/customers/{response.json()['id']}/").json()["name"] == name


@pytest.mark.parametrize(
    "query",
    [
        "status=%00",
        "search=" + "x" * 5000,
        "search=%00",
        "total_min=1e999",
        "total_min=NaN",
        "customer=99999999999999999999999",
        "issue_date_after=2020-13-45",
        "page=1&page_size=100&ordering=-total,number",
    ],
)
def test_hostile_query_strings_never_cause_a_server_error(alice_api, query):
    response = alice_api.get(f"/api/invoices/?{query}")

    assert response.status_code < 500
    summary = alice_api.get(f"/api/invoices/summary/?{query}")
    assert summary.status_code < 500


@pytest.mark.parametrize("pk", ["0", "-1", "abc", "99999999999999999999999", "1.5", "%00"])
def test_hostile_ids_in_paths_are_404(alice_api, pk):
    for url in (f"/api/customers/{pk}/", f"/api/invoices/{pk}/", f"/api/payments/{pk}/"):
        assert alice_api.get(url).status_code == 404, url
