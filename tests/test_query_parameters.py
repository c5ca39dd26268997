"""The query parameters of every list and of the summary, as the schema declares them.

An empty value is no filter, on every filter of every list and of the summary. A single-value
parameter given twice is a 400 on that parameter; `status` and `method`, which the schema declares
repeatable, stay repeatable; several orderings are one comma-separated `ordering`. Pages start at
one, and no query string, however odd, is a server error.
"""

from decimal import Decimal
from urllib.parse import urlencode

import jsonschema_rs
import pytest

from invoices.models import Invoice
from payments.services import payment_record
from tests.factories import org
from tests.invoice_helpers import INVOICES, SUMMARY
from tests.schema_helpers import parameter, query_parameters, repeatable

pytestmark = pytest.mark.django_db

PAYMENTS = "/api/payments/"
CUSTOMERS = "/api/customers/"
LISTS = (INVOICES, SUMMARY, PAYMENTS, CUSTOMERS)
REPEATED = "Give this parameter only once (it was given 2 times)."


@pytest.fixture
def books(alice, alice_customer, make_customer, make_invoice):
    """Alice's invoices in four states, two payments, two customers: something for every filter."""
    globex = make_customer(alice, name="Globex", email="ap@globex.test")
    draft = make_invoice(alice, alice_customer, amount="10.00", send=False)
    sent = make_invoice(alice, alice_customer, amount="20.00", number="B-2")
    overdue = make_invoice(alice, globex, amount="30.00", number="A-3")
    Invoice.objects.filter(pk=overdue.pk).update(status=Invoice.Status.OVERDUE)
    paid = make_invoice(alice, globex, amount="40.00", number="C-4")
    payment_record(organization=org(alice), invoice_id=paid.pk, amount=Decimal("40.00"), method="card")
    payment_record(organization=org(alice), invoice_id=sent.pk, amount=Decimal("5.00"), method="cash")
    return {"draft": draft, "sent": sent, "overdue": overdue, "paid": paid, "globex": globex}


def a_value(parameter: dict, books) -> str:
    """A value the parameter accepts, so that a 400 can only be about the repetition."""
    schema = parameter["schema"]
    name = parameter["name"]
    if name == "customer":
        return str(books["globex"].pk)
    if name == "invoice":
        return str(books["paid"].pk)
    if schema.get("type") == "integer":
        return "1"
    if schema.get("type") == "array":
        return schema["items"]["enum"][0]
    if name == "ordering":
        return "created_at"  # a field every list orders by
    if schema.get("format") == "date":
        return "2026-01-01"
    if name.endswith(("_min", "_max")):
        return "1"
    return "a"


# --- an empty value is no filter ----------------------------------------------------------------------


@pytest.mark.parametrize("path", LISTS)
def test_every_filter_given_an_empty_value_filters_nothing(alice_api, books, path):
    unfiltered = alice_api.get(path).json()
    names = [p["name"] for p in query_parameters(path) if p["name"] not in ("page", "page_size")]
    assert names  # every list has filters

    for name in names:
        parameter = next(p for p in query_parameters(path) if p["name"] == name)
        response = alice_api.get(f"{path}?{name}=")

        assert response.status_code == 200, (name, response.json())
        assert response.json() == unfiltered, name
        assert parameter.get("allowEmptyValue") is True, name  # and the schema says so


@pytest.mark.parametrize("path", [INVOICES, SUMMARY])
def test_an_empty_status_is_no_filter(alice_api, books, path):
    # The finding: `?status=` was a 400 ("Select a valid choice.") while `?total_min=` was none.
    response = alice_api.get(f"{path}?status=")

    assert response.status_code == 200
    assert response.json() == alice_api.get(path).json()
    assert response.json()["count"] == 4


def test_an_empty_repetition_of_status_adds_nothing(alice_api, books):
    listed = alice_api.get(f"{INVOICES}?status=&status=sent&status=paid").json()
    summary = alice_api.get(f"{SUMMARY}?status=sent&status=").json()

    assert sorted(i["status"] for i in listed["results"]) == ["paid", "sent"]
    assert summary["count"] == 1


def test_an_empty_payment_method_is_no_filter(alice_api, books):
    response = alice_api.get(f"{PAYMENTS}?method=")

    assert response.status_code == 200
    assert response.json()["count"] == 2
    assert alice_api.get(f"{PAYMENTS}?method=&method=card").json()["count"] == 1


@pytest.mark.parametrize("path", [INVOICES, PAYMENTS, CUSTOMERS])
@pytest.mark.parametrize("name", ["page", "page_size"])
def test_an_empty_page_is_still_a_400(alice_api, path, name):
    # Not a filter: the schema says a positive integer and gives no empty value.
    response = alice_api.get(f"{path}?{name}=")

    assert response.status_code == 400
    assert list(response.json()) == [name]
    assert "allowEmptyValue" not in next(p for p in query_parameters(path) if p["name"] == name)


@pytest.mark.parametrize("path", ["/api/invoices/", "/api/payments/"])
def test_an_empty_ordering_is_documented_as_no_ordering(alice_api, path):
    # Finding: `?ordering=` (how [""] is sent) was accepted while the schema refused it.
    assert parameter(path, "get", "ordering")["allowEmptyValue"] is True
    assert alice_api.get(f"{path}?ordering=").status_code == 200
    repeatable = "status" if path == "/api/invoices/" else "method"
    assert parameter(path, "get", repeatable)["allowEmptyValue"] is True  # "" is no filter here too
    assert alice_api.get(f"{path}?{repeatable}=").status_code == 200


# --- a single-value parameter given twice is a 400 ----------------------------------------------------


@pytest.mark.parametrize("path", LISTS)
def test_every_single_value_parameter_given_twice_is_a_400_on_it(alice_api, books, path):
    singles = [p for p in query_parameters(path) if not repeatable(p)]
    assert {"ordering"} <= {p["name"] for p in singles}

    for parameter in singles:  # noqa: F402 - a local name for the one in hand
        name, value = parameter["name"], a_value(parameter, books)
        assert alice_api.get(path, {name: value}).status_code == 200, name  # once is fine

        response = alice_api.get(f"{path}?{urlencode([(name, value), (name, value)])}")

        assert response.status_code == 400, name
        assert response.json() == {name: [REPEATED]}


@pytest.mark.parametrize("path", [INVOICES, SUMMARY])
@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("ordering=bogus&ordering=-total", "ordering"),  # the findings: both were 200, "last wins"
        ("total_min=abc&total_min=1", "total_min"),
        ("total_min=&total_min=", "total_min"),  # empty twice is still twice, also on the fast path
        ("search=a&search=b", "search"),
        ("issue_date_after=2026-01-01&issue_date_after=2026-02-01", "issue_date_after"),
        ("customer=1&customer=2", "customer"),
        ("currency=USD&currency=EUR", "currency"),
    ],
)
def test_a_repeated_invoice_filter_is_a_400(alice_api, books, path, query, name):
    response = alice_api.get(f"{path}?{query}")

    assert response.status_code == 400
    assert response.json() == {name: [REPEATED]}


@pytest.mark.parametrize(
    ("path", "query", "name"),
    [
        (INVOICES, "page=1&page=2", "page"),
        (INVOICES, "page_size=5&page_size=50", "page_size"),
        (PAYMENTS, "page=1&page=1", "page"),
        (PAYMENTS, "ordering=amount&ordering=-amount", "ordering"),
        (PAYMENTS, "paid_at_before=2030-01-01&paid_at_before=2020-01-01", "paid_at_before"),
        (CUSTOMERS, "search=acme&search=globex", "search"),
        (CUSTOMERS, "ordering=bogus&ordering=name", "ordering"),
        (CUSTOMERS, "page_size=1&page_size=2", "page_size"),
    ],
)
def test_repeated_search_page_and_ordering_are_a_400(alice_api, books, path, query, name):
    response = alice_api.get(f"{path}?{query}")

    assert response.status_code == 400
    assert response.json() == {name: [REPEATED]}


def test_several_repeated_parameters_are_all_named(alice_api, books):
    response = alice_api.get(f"{INVOICES}?total_min=1&total_min=2&search=a&search=a&search=a")

    assert response.status_code == 400
    assert response.json() == {
        "total_min": [REPEATED],
        "search": ["Give this parameter only once (it was given 3 times)."],
    }


@pytest.mark.parametrize("path", [INVOICES, SUMMARY, PAYMENTS])
def test_what_the_schema_declares_repeatable_is_exactly_what_may_be_repeated(alice_api, books, path):
    declared = {p["name"] for p in query_parameters(path) if repeatable(p)}

    assert declared == ({"method"} if path == PAYMENTS else {"status"})
    for parameter in query_parameters(path):  # noqa: F402 - a local name for the one in hand
        items = parameter["schema"].get("items", {}).get("enum", [])
        values = items[:2] if len(items) >= 2 else [a_value(parameter, books)] * 2
        response = alice_api.get(f"{path}?{urlencode([(parameter['name'], v) for v in values])}")
        assert (response.status_code == 200) is (parameter["name"] in declared), parameter["name"]


def test_status_and_method_stay_repeatable(alice_api, books):
    listed = alice_api.get(f"{INVOICES}?status=sent&status=overdue").json()
    summary = alice_api.get(f"{SUMMARY}?status=sent&status=overdue").json()
    payments = alice_api.get(f"{PAYMENTS}?method=card&method=cash").json()

    assert sorted(i["status"] for i in listed["results"]) == ["overdue", "sent"]
    assert (summary["count"], summary["by_status"]["sent"], summary["by_status"]["overdue"]) == (2, 1, 1)
    assert payments["count"] == 2


# --- ordering -----------------------------------------------------------------------------------------


def test_several_invoice_orderings_are_one_comma_separated_value(alice_api, alice, books, make_invoice):
    make_invoice(alice, amount="20.00", number="A-2")  # the same total as B-2: number decides
    ordering = next(p for p in query_parameters(INVOICES) if p["name"] == "ordering")

    response = alice_api.get(INVOICES, {"ordering": "-total,number"})

    assert (ordering["schema"]["type"], ordering["explode"], ordering["style"]) == ("array", False, "form")
    assert response.status_code == 200
    assert [(i["total"], i["number"]) for i in response.json()["results"]] == [
        ("40.00", "C-4"),
        ("30.00", "A-3"),
        ("20.00", "A-2"),
        ("20.00", "B-2"),
        ("10.00", None),
    ]


def test_several_payment_and_customer_orderings_are_comma_separated(alice_api, books):
    payments = alice_api.get(PAYMENTS, {"ordering": "paid_at,-amount"}).json()  # both paid today
    customers = alice_api.get(CUSTOMERS, {"ordering": "-name,created_at"}).json()

    assert [p["amount"] for p in payments["results"]] == ["40.00", "5.00"]
    assert [c["name"] for c in customers["results"]] == ["Globex", "Acme Corp"]
    ordering = next(p for p in query_parameters(CUSTOMERS) if p["name"] == "ordering")
    assert (ordering["schema"]["type"], ordering["explode"], ordering["style"]) == ("array", False, "form")
    assert jsonschema_rs.validator_for(ordering["schema"]).is_valid(["-name", "created_at"])
    assert not jsonschema_rs.validator_for(ordering["schema"]).is_valid(["id"])


@pytest.mark.parametrize("path", ["/api/invoices/", "/api/invoices/summary/", "/api/payments/"])
@pytest.mark.parametrize("ordering", [",,,", "total,", ",-created_at"])
def test_an_empty_ordering_field_is_a_400_not_a_500(alice_api, path, ordering):
    # Finding: ?ordering=,,, reached order_by("") (a FieldError): a 500.
    response = alice_api.get(path, {"ordering": ordering})

    assert response.status_code == 400
    assert list(response.json()) == ["ordering"]
    assert alice_api.get(path, {"ordering": ""}).status_code == 200  # no ordering


# --- pages, and too many parameters -------------------------------------------------------------------


@pytest.mark.parametrize("page", ["page", "page_size"])
def test_pages_start_at_one_in_the_schema_as_on_the_server(alice_api, page):
    # Finding: ?page=0&page_size=0 were integers the schema allowed; the server says 400.
    schema = parameter("/api/customers/", "get", page)["schema"]

    assert (schema["minimum"], schema["maximum"]) == (1, 999_999_999)
    assert alice_api.get(f"/api/customers/?{page}=0").status_code == 400
    assert alice_api.get(f"/api/customers/?{page}=1").status_code == 200


def test_too_many_query_parameters_are_a_json_400(alice_api):
    # Django refuses more than DATA_UPLOAD_MAX_NUMBER_FIELDS parameters with its HTML 400 page.
    query = "&".join(f"page_size={i}" for i in range(2100))

    for path in ("/api/payments/", "/api/invoices/summary/", "/api/customers/"):
        response = alice_api.get(f"{path}?{query}")

        assert response.status_code == 400
        assert response["Content-Type"] == "application/json"
        assert response.json()["code"] == "bad_request"
