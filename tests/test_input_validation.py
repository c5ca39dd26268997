"""Hostile and malformed values in the fields of every write endpoint: always a 4xx with a clear
message, never a 5xx, nothing written."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import row_counts
from tests.factories import LinePayloadFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def write_targets(alice, alice_customer, make_invoice):
    draft = make_invoice(alice, alice_customer, send=False)
    sent = make_invoice(alice, alice_customer)
    valid_line = LinePayloadFactory(description="Work", quantity="1", unit_price="10.00", tax_rate="0")
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
            before = row_counts()
            response = getattr(alice_api, method)(url, {**valid, field: value}, format="json")

            assert response.status_code < 500, (method, url, field, value, response.content[:300])
            if response.status_code >= 400:
                assert response.json(), "a 4xx always says what was wrong"
                assert row_counts() == before, (method, url, field)


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
