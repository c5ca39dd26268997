"""Where the behaviour disagreed with the contract (API.md) or the README, and now agrees.

1. An empty query value is no filter, on every filter of every list and of the summary.
2. A single-value query parameter given twice is a 400 on that parameter; `status` and `method`,
   which the schema declares repeatable, stay repeatable; several orderings are one
   comma-separated `ordering`, as the schema says.
3. A `status` sent with the invoice's current value (a new invoice's: draft) is no change.
4. Register and login read a username the same way (NFKC, as Django's `create_user` stores it).
5. An invoice number is kept as given: never trimmed; one that would not print as itself is a 400.
"""

import functools
import json
from decimal import Decimal
from urllib.parse import urlencode

import jsonschema_rs
import pytest
from django.contrib.auth import get_user_model
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer

from invoices.models import Invoice
from payments.services import payment_record
from tests.invoice_helpers import (
    INVOICES,
    SUMMARY,
    create_invoice,
    invoice_in_state,
    invoice_payload,
    invoice_url,
)

pytestmark = pytest.mark.django_db

User = get_user_model()
PAYMENTS = "/api/payments/"
CUSTOMERS = "/api/customers/"
LISTS = (INVOICES, SUMMARY, PAYMENTS, CUSTOMERS)
REPEATED = "Give this parameter only once (it was given 2 times)."
PASSWORD = "a-long-and-unusual-pass"


def fullwidth(text: str) -> str:
    """ASCII letters as their fullwidth compatibility forms ("a" U+0061 -> U+FF41), which NFKC undoes."""
    return "".join(chr(ord(char) + 0xFEE0) for char in text)


FULLWIDTH_NAME = fullwidth("nfvhahp")


@functools.cache
def openapi() -> dict:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(OpenApiJsonRenderer().render(schema))


def query_parameters(path: str) -> list[dict]:
    return [p for p in openapi()["paths"][path]["get"]["parameters"] if p["in"] == "query"]


def repeatable(parameter: dict) -> bool:
    return parameter["schema"].get("type") == "array" and parameter.get("explode", True)


@pytest.fixture
def books(alice, alice_customer, make_customer, make_invoice):
    """Alice's invoices in four states, two payments, two customers: something for every filter."""
    globex = make_customer(alice, name="Globex", email="ap@globex.test")
    draft = make_invoice(alice, alice_customer, amount="10.00", send=False)
    sent = make_invoice(alice, alice_customer, amount="20.00", number="B-2")
    overdue = make_invoice(alice, globex, amount="30.00", number="A-3")
    Invoice.objects.filter(pk=overdue.pk).update(status=Invoice.Status.OVERDUE)
    paid = make_invoice(alice, globex, amount="40.00", number="C-4")
    payment_record(owner=alice, invoice_id=paid.pk, amount=Decimal("40.00"), method="card")
    payment_record(owner=alice, invoice_id=sent.pk, amount=Decimal("5.00"), method="cash")
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


# --- 1. an empty value is no filter -------------------------------------------------------------


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


# --- 2. a single-value parameter given twice is a 400 -------------------------------------------


@pytest.mark.parametrize("path", LISTS)
def test_every_single_value_parameter_given_twice_is_a_400_on_it(alice_api, books, path):
    singles = [p for p in query_parameters(path) if not repeatable(p)]
    assert {"ordering"} <= {p["name"] for p in singles}

    for parameter in singles:
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
    for parameter in query_parameters(path):
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


# --- 3. a status sent with its current value is no change -----------------------------------------


def as_read(invoice: dict, **changes) -> dict:
    """The invoice's detail as the API returned it, with `changes`: a body to PUT back."""
    return {**invoice, **changes}


def test_a_draft_put_back_as_read_with_new_notes_is_accepted(alice_api, alice_customer):
    draft = create_invoice(alice_api, alice_customer, notes="first")

    response = alice_api.put(invoice_url(draft["id"]), as_read(draft, notes="second"))

    assert response.status_code == 200, response.json()
    assert (response.json()["status"], response.json()["notes"]) == ("draft", "second")
    assert Invoice.objects.get(pk=draft["id"]).notes == "second"


@pytest.mark.parametrize("state", ["sent", "overdue"])
def test_an_issued_invoice_put_back_as_read_with_new_notes_is_accepted(alice_api, alice_customer, state):
    # The finding: the PUT the README promises ("a PUT of the invoice as read with new notes works")
    # was a 400, because the body carries `status`.
    invoice = invoice_in_state(alice_api, alice_customer, state)

    response = alice_api.put(invoice_url(invoice["id"]), as_read(invoice, notes="Paid by transfer?"))

    assert response.status_code == 200, response.json()
    assert response.json()["status"] == state
    stored = Invoice.objects.get(pk=invoice["id"])
    assert (stored.status, stored.notes) == (state, "Paid by transfer?")


@pytest.mark.parametrize("state", ["paid", "void"])
def test_a_closed_invoice_put_back_as_read_is_409_not_400(alice_api, alice_customer, state):
    invoice = invoice_in_state(alice_api, alice_customer, state)

    response = alice_api.put(invoice_url(invoice["id"]), as_read(invoice, notes="late"))

    assert response.status_code == 409
    assert response.json()["code"] == "not_editable"


@pytest.mark.parametrize(("state", "other"), [("draft", "sent"), ("sent", "paid"), ("overdue", "sent")])
@pytest.mark.parametrize("method", ["put", "patch"])
def test_a_different_status_is_still_a_400_on_status(alice_api, alice_customer, state, other, method):
    invoice = invoice_in_state(alice_api, alice_customer, state)
    body = as_read(invoice, notes="x", status=other) if method == "put" else {"notes": "x", "status": other}

    response = getattr(alice_api, method)(invoice_url(invoice["id"]), body)

    assert response.status_code == 400
    assert response.json() == {
        "status": [
            f'This invoice is "{state}": a status changes only through actions (send, void, payments).'
        ]
    }
    stored = Invoice.objects.get(pk=invoice["id"])
    assert (stored.status, stored.notes) == (state, "")


def test_a_patch_with_the_current_status_only_changes_nothing(alice_api, alice_customer):
    invoice = invoice_in_state(alice_api, alice_customer, "sent")

    response = alice_api.patch(invoice_url(invoice["id"]), {"status": "sent"})

    assert response.status_code == 200
    assert response.json() == invoice


def test_a_new_invoice_may_say_it_is_a_draft(alice_api, alice_customer):
    response = alice_api.post(INVOICES, invoice_payload(alice_customer, status="draft"))

    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "draft"
    assert Invoice.objects.get().status == "draft"


@pytest.mark.parametrize("status", ["sent", "paid", "void", "overdue", "bogus", None, "", ["draft"]])
def test_a_new_invoice_with_any_other_status_is_a_400(alice_api, alice_customer, status):
    response = alice_api.post(INVOICES, invoice_payload(alice_customer, status=status))

    assert response.status_code == 400
    assert response.json() == {
        "status": [
            'A new invoice is a "draft": a status changes only through actions (send, void, payments).'
        ]
    }
    assert not Invoice.objects.exists()


# --- 4. one username rule for register and login ----------------------------------------------------


def register(api, username: str):
    return api.post("/api/register/", {"username": username, "password": PASSWORD})


def login(api, username: str):
    return api.post("/api/login/", {"username": username, "password": PASSWORD})


def test_a_username_registered_in_a_compatibility_form_logs_in_as_sent(api):
    # The finding: a fullwidth "nfvhahp" registered (stored as "nfvhahp") and could not log in.
    response = register(api, FULLWIDTH_NAME)

    assert response.status_code == 201
    assert response.json()["username"] == "nfvhahp"  # as it is stored, and said so
    assert User.objects.get().username == "nfvhahp"
    assert login(api, FULLWIDTH_NAME).status_code == 200
    assert login(api, "nfvhahp").status_code == 200


def test_a_plain_username_logs_in_in_its_compatibility_form(api):
    assert register(api, "Zoe").status_code == 201

    assert login(api, fullwidth("Zoe")).status_code == 200
    assert login(api, "zoe").status_code == 400  # normalization is not case folding


@pytest.mark.parametrize(("first", "second"), [("nfvhahp", FULLWIDTH_NAME), (FULLWIDTH_NAME, "nfvhahp")])
def test_two_spellings_of_one_username_are_one_account(api, first, second):
    assert register(api, first).status_code == 201

    response = register(api, second)

    assert response.status_code == 400
    assert response.json() == {"username": ["A user with that username already exists."]}
    assert User.objects.count() == 1


def test_a_username_too_long_once_normalized_is_a_400(api):
    # U+FDFA is one letter that NFKC writes as 18: ten of them would not fit the column (150).
    response = register(api, "\ufdfa" * 10)

    assert response.status_code == 400
    assert response.json() == {
        "username": ["Ensure this field has no more than 150 characters once normalized (NFKC)."]
    }
    assert not User.objects.exists()


def test_a_username_is_still_not_trimmed(api):
    assert register(api, " alice").status_code == 400
    assert register(api, "alice").status_code == 201
    assert login(api, " alice").status_code == 400


# --- 5. an invoice number is kept as given ---------------------------------------------------------

NUMBER_REFUSED = (
    "An invoice number is kept as given: printable characters, with spaces only between them "
    "(no space at either end, no control or invisible character)."
)


def number_schema() -> dict:
    schema = openapi()["components"]["schemas"]["InvoiceInputRequest"]["properties"]["number"]
    return {key: value for key, value in schema.items() if key in ("type", "pattern", "maxLength")}


@pytest.mark.parametrize("number", ["ACME/2026/7", "INV 2026 7", "Rechnung Nr. 12", "№ 5", "請求書-1", "x"])
def test_a_number_is_kept_exactly_as_given(alice_api, alice_customer, number):
    created = create_invoice(alice_api, alice_customer, number=number)

    assert created["number"] == number
    assert Invoice.objects.get().number == number
    assert jsonschema_rs.validator_for(number_schema()).is_valid(number)


@pytest.mark.parametrize(
    "number",
    [
        " INV-1",  # the finding: trimmed to "INV-1", where the README says "kept as given"
        "INV-1 ",
        "   ",  # was trimmed to "", which cleared the number
        "INV-1\n",
        "INV\t1",
        "INV\x7f1",
        "INV\x851",  # C1 control
        "INV\u00a01",  # a no-break space prints like a space but is another number
        "INV\u200b1",  # zero-width space
        "INV-\u202e1",  # right-to-left override: reorders what is printed
        "\ufeffINV-1",
        "INV\u20281",  # line separator
    ],
)
def test_a_number_that_would_not_print_as_itself_is_a_400(alice_api, alice_customer, number):
    response = alice_api.post(INVOICES, invoice_payload(alice_customer, number=number))

    assert response.status_code == 400
    assert response.json() == {"number": [NUMBER_REFUSED]}
    assert not Invoice.objects.exists()
    assert not jsonschema_rs.validator_for(number_schema()).is_valid(number)  # the schema says so


def test_a_draft_number_edit_is_not_trimmed_either(alice_api, alice_customer):
    draft = create_invoice(alice_api, alice_customer, number="Q-1")

    refused = alice_api.patch(invoice_url(draft["id"]), {"number": "Q-2 "})
    cleared = alice_api.patch(invoice_url(draft["id"]), {"number": ""})

    assert refused.status_code == 400
    assert list(refused.json()) == ["number"]
    assert cleared.status_code == 200
    assert cleared.json()["number"] is None


def test_a_number_with_inner_spaces_is_unique_as_given(alice_api, alice_customer):
    create_invoice(alice_api, alice_customer, number="INV 1")

    response = alice_api.post(INVOICES, invoice_payload(alice_customer, number="INV 1"))

    assert response.status_code == 400
    assert response.json() == {"number": ["An invoice with this number already exists."]}
