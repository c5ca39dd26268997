"""The invoice lifecycle through the API: send, numbering, available_actions, the frozen states, tenancy."""

from decimal import Decimal
from unittest.mock import ANY

import pytest
from django.utils import timezone

from invoices.models import Invoice
from tests.factories import LinePayloadFactory
from tests.invoice_helpers import (
    ACTIONS,
    INVOICES,
    STATES,
    SUMMARY,
    assert_error,
    create_invoice,
    in_days,
    invoice_in_state,
    invoice_payload,
    invoice_url,
    iso,
    line_rows,
    send_invoice,
    set_amount_paid,
)

pytestmark = pytest.mark.django_db


# --- send ---------------------------------------------------------------------------------------------


def test_send_issues_the_draft_with_the_next_number(alice_api, alice_customer):
    draft = create_invoice(alice_api, alice_customer, [LinePayloadFactory(tax_rate="10")])
    before = timezone.now()

    response = alice_api.post(invoice_url(draft["id"], "send"))

    after = timezone.now()
    assert response.status_code == 200, response.json()
    invoice = Invoice.objects.get(pk=draft["id"])
    assert response.json() == {
        **draft,
        "status": "sent",
        "number": "INV-000001",
        "sent_at": iso(invoice.sent_at),
        "available_actions": ["edit", "void", "pay"],
        "hosted_url": f"http://testserver/i/{invoice.public_token}/",
        "updated_at": ANY,
    }
    assert (invoice.status, invoice.number, invoice.paid_at) == ("sent", "INV-000001", None)
    assert before <= invoice.sent_at <= after


@pytest.mark.parametrize(
    "lines",
    [
        pytest.param([], id="no-lines"),
        pytest.param([LinePayloadFactory(unit_price="0.00")] * 2, id="total-zero"),
    ],
)
def test_send_rejects_an_incomplete_draft(alice_api, alice_customer, lines):
    draft = create_invoice(alice_api, alice_customer, lines)

    response = alice_api.post(invoice_url(draft["id"], "send"))

    assert_error(response, 400, "invoice_incomplete")
    invoice = Invoice.objects.get(pk=draft["id"])
    assert (invoice.status, invoice.number, invoice.sent_at) == ("draft", None, None)


# --- numbering ----------------------------------------------------------------------------------------


def test_numbers_follow_the_order_of_sending_per_organization(
    alice_api, bob_api, alice_customer, bob, make_customer
):
    first, second, third = (create_invoice(alice_api, alice_customer)["id"] for _ in range(3))

    assert [send_invoice(alice_api, pk)["number"] for pk in (third, first, second)] == [
        "INV-000001",
        "INV-000002",
        "INV-000003",
    ]
    bobs = create_invoice(bob_api, make_customer(bob, name="Bob's client"))
    assert send_invoice(bob_api, bobs["id"])["number"] == "INV-000001"
    assert dict(Invoice.objects.filter(organization__name="alice").values_list("pk", "number")) == {
        third: "INV-000001",
        first: "INV-000002",
        second: "INV-000003",
    }


def test_a_deleted_draft_burns_no_number(alice_api, alice_customer):
    first = create_invoice(alice_api, alice_customer)
    assert send_invoice(alice_api, first["id"])["number"] == "INV-000001"
    discarded = create_invoice(alice_api, alice_customer)
    assert alice_api.delete(invoice_url(discarded["id"])).status_code == 204

    second = create_invoice(alice_api, alice_customer)

    assert send_invoice(alice_api, second["id"])["number"] == "INV-000002"


def test_a_client_number_is_kept_and_uses_no_sequence_number(alice_api, alice_customer):
    named = create_invoice(alice_api, alice_customer, number="ACME-7")
    unnamed = create_invoice(alice_api, alice_customer)

    assert send_invoice(alice_api, named["id"])["number"] == "ACME-7"
    assert send_invoice(alice_api, unnamed["id"])["number"] == "INV-000001"
    assert Invoice.objects.get(pk=named["id"]).number == "ACME-7"


@pytest.mark.parametrize(
    ("taken", "issued"),
    [
        ("INV-000001", ["INV-000002", "INV-000003"]),
        ("INV-000002", ["INV-000001", "INV-000003"]),
    ],
)
def test_the_sequence_skips_a_number_taken_by_hand(alice_api, alice_customer, taken, issued):
    by_hand = create_invoice(alice_api, alice_customer, number=taken)
    drafts = [create_invoice(alice_api, alice_customer)["id"] for _ in issued]

    assert [send_invoice(alice_api, pk)["number"] for pk in drafts] == issued
    assert Invoice.objects.get(pk=by_hand["id"]).number == taken


def test_duplicate_number_of_the_same_organization_is_rejected(alice_api, alice_customer):
    by_hand = create_invoice(alice_api, alice_customer, number="Q-1")
    issued = send_invoice(alice_api, create_invoice(alice_api, alice_customer)["id"])
    draft = create_invoice(alice_api, alice_customer)

    for number in ("Q-1", issued["number"]):
        response = alice_api.post(INVOICES, invoice_payload(alice_customer, number=number))
        assert response.status_code == 400
        assert set(response.json()) == {"number"}
        patched = alice_api.patch(invoice_url(draft["id"]), {"number": number})
        assert patched.status_code == 400
        assert set(patched.json()) == {"number"}

    assert Invoice.objects.count() == 3
    assert Invoice.objects.get(pk=draft["id"]).number is None
    assert Invoice.objects.get(pk=by_hand["id"]).number == "Q-1"


def test_two_users_may_use_the_same_number(alice_api, bob_api, alice_customer, bob, make_customer):
    create_invoice(alice_api, alice_customer, number="2026-1")

    response = bob_api.post(INVOICES, invoice_payload(make_customer(bob), number="2026-1"))

    assert response.status_code == 201
    assert Invoice.objects.filter(number="2026-1").count() == 2


# --- the lifecycle: available_actions is exactly what succeeds --------------------------------------

ATTEMPTS = {
    "edit": ("patch", None, {"notes": "changed"}, 200, "not_editable"),
    "delete": ("delete", None, None, 204, "not_editable"),
    "send": ("post", "send", None, 200, "invalid_transition"),
    "void": ("post", "void", None, 200, "invalid_transition"),
}


@pytest.mark.parametrize("action", ATTEMPTS)
@pytest.mark.parametrize("state", STATES)
def test_available_actions_are_exactly_what_succeeds(alice_api, alice_customer, state, action):
    invoice = invoice_in_state(alice_api, alice_customer, state)
    assert invoice["available_actions"] == ACTIONS[state]
    method, suffix, body, success, code = ATTEMPTS[action]

    response = getattr(alice_api, method)(invoice_url(invoice["id"], suffix), body)

    stored = Invoice.objects.filter(pk=invoice["id"]).first()
    if action not in ACTIONS[state]:
        assert_error(response, 409, code)
        assert (stored.status, stored.notes, stored.number) == (state, "", invoice["number"])
    elif action == "delete":
        assert response.status_code == 204
        assert stored is None
    else:
        assert response.status_code == success, response.json()
        new_state = {"edit": state, "send": "sent", "void": "void"}[action]
        assert response.json()["status"] == stored.status == new_state
        assert response.json()["available_actions"] == ACTIONS[new_state]
        if action == "edit":
            assert response.json()["notes"] == stored.notes == "changed"


@pytest.mark.parametrize("state", ["sent", "overdue"])
def test_void_is_refused_once_anything_is_paid(alice_api, alice_customer, state):
    invoice = invoice_in_state(alice_api, alice_customer, state)
    set_amount_paid(invoice["id"], "40.00")
    assert alice_api.get(invoice_url(invoice["id"])).json()["available_actions"] == ["edit", "pay"]

    response = alice_api.post(invoice_url(invoice["id"], "void"))

    assert_error(response, 409, "invalid_transition")
    stored = Invoice.objects.get(pk=invoice["id"])
    assert (stored.status, stored.amount_paid, stored.balance_due) == (
        state,
        Decimal("40.00"),
        Decimal("60.00"),
    )


# --- sent and overdue: notes only ---------------------------------------------------------------------

ALLOWED_ISSUED_EDITS = {
    "notes-only": lambda inv, other: {"notes": "Paid by transfer?"},
    "notes-and-unchanged-fields": lambda inv, other: {
        "notes": "Paid by transfer?",
        "customer": inv["customer"],
        "number": inv["number"],
        "currency": inv["currency"],
        "issue_date": inv["issue_date"],
        "due_date": inv["due_date"],
    },
    "notes-and-read-only-fields": lambda inv, other: {
        "notes": "Paid by transfer?",
        "total": "1.00",
        "amount_paid": "1.00",
        "sent_at": None,
        "available_actions": [],
    },
}

REFUSED_ISSUED_EDITS = {
    "due-date": lambda inv, other: {"due_date": in_days(60)},
    "notes-and-due-date": lambda inv, other: {"notes": "Paid by transfer?", "due_date": in_days(60)},
    "issue-date": lambda inv, other: {"issue_date": in_days(-1)},
    "customer": lambda inv, other: {"customer": other.pk},
    "currency": lambda inv, other: {"currency": "EUR"},
    "number": lambda inv, other: {"number": "OTHER-1"},
    "number-cleared": lambda inv, other: {"number": None},
    "number-blank": lambda inv, other: {"number": ""},
    "lines": lambda inv, other: {"lines": [LinePayloadFactory(unit_price="1.00")]},
    "no-lines": lambda inv, other: {"lines": []},
}


@pytest.mark.parametrize("make_body", ALLOWED_ISSUED_EDITS.values(), ids=ALLOWED_ISSUED_EDITS)
@pytest.mark.parametrize("state", ["sent", "overdue"])
def test_issued_invoice_accepts_a_notes_change(alice_api, alice_customer, other_customer, state, make_body):
    invoice = invoice_in_state(alice_api, alice_customer, state)

    response = alice_api.patch(invoice_url(invoice["id"]), make_body(invoice, other_customer))

    assert response.status_code == 200, response.json()
    assert response.json() == {**invoice, "notes": "Paid by transfer?", "updated_at": ANY}
    stored = Invoice.objects.get(pk=invoice["id"])
    assert (stored.status, stored.notes, stored.total) == (state, "Paid by transfer?", Decimal("100.00"))


@pytest.mark.parametrize("make_body", REFUSED_ISSUED_EDITS.values(), ids=REFUSED_ISSUED_EDITS)
@pytest.mark.parametrize("state", ["sent", "overdue"])
def test_issued_invoice_rejects_any_other_change(alice_api, alice_customer, other_customer, state, make_body):
    invoice = invoice_in_state(alice_api, alice_customer, state)
    lines_before = line_rows(invoice["id"])

    response = alice_api.patch(invoice_url(invoice["id"]), make_body(invoice, other_customer))

    assert_error(response, 409, "not_editable")
    assert alice_api.get(invoice_url(invoice["id"])).json() == invoice
    assert line_rows(invoice["id"]) == lines_before
    stored = Invoice.objects.get(pk=invoice["id"])
    assert (stored.status, stored.notes, stored.customer_id, stored.total) == (
        state,
        "",
        alice_customer.pk,
        Decimal("100.00"),
    )


def test_sent_invoice_rejects_a_put_that_changes_a_field(alice_api, alice_customer):
    invoice = invoice_in_state(alice_api, alice_customer, "sent")
    payload = invoice_payload(alice_customer, number=invoice["number"], due_date=in_days(90), notes="x")

    response = alice_api.put(invoice_url(invoice["id"]), payload)

    assert_error(response, 409, "not_editable")
    assert alice_api.get(invoice_url(invoice["id"])).json() == invoice


@pytest.mark.parametrize("state", ["paid", "void"])
def test_a_malformed_edit_of_a_closed_invoice_is_400_before_409(alice_api, alice_customer, state):
    invoice = invoice_in_state(alice_api, alice_customer, state)

    for body, field in (({"due_date": "notadate"}, "due_date"), ({"status": "draft"}, "status")):
        response = alice_api.patch(invoice_url(invoice["id"]), body)
        assert response.status_code == 400
        assert field in response.json()

    assert Invoice.objects.get(pk=invoice["id"]).status == state


@pytest.mark.parametrize("state", ["paid", "void"])
def test_closed_invoice_rejects_a_full_edit(alice_api, alice_customer, state):
    invoice = invoice_in_state(alice_api, alice_customer, state)

    response = alice_api.put(invoice_url(invoice["id"]), invoice_payload(alice_customer, notes="late note"))

    assert_error(response, 409, "not_editable")
    assert alice_api.get(invoice_url(invoice["id"])).json() == invoice


# --- tenancy and auth --------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["draft", "sent"])
def test_another_users_invoice_is_404_everywhere(alice_api, bob_api, alice_customer, state):
    invoice = invoice_in_state(alice_api, alice_customer, state)
    url = invoice_url(invoice["id"])

    assert bob_api.get(url).status_code == 404
    assert bob_api.put(url, invoice_payload(alice_customer)).status_code == 404
    assert bob_api.patch(url, {"notes": "mine"}).status_code == 404
    assert bob_api.patch(url, {"status": "paid"}).status_code == 404
    assert bob_api.delete(url).status_code == 404
    assert bob_api.post(invoice_url(invoice["id"], "send")).status_code == 404
    assert bob_api.post(invoice_url(invoice["id"], "void")).status_code == 404
    assert bob_api.get(INVOICES).json()["count"] == 0
    assert bob_api.get(SUMMARY).json()["count"] == 0
    assert alice_api.get(url).json() == invoice


@pytest.mark.parametrize("pk", ["abc", "0", "-1", "99999999999999999999"])
def test_a_malformed_or_unknown_invoice_id_is_404(alice_api, alice_customer, pk):
    create_invoice(alice_api, alice_customer)

    assert alice_api.get(f"{INVOICES}{pk}/").status_code == 404
    assert alice_api.patch(f"{INVOICES}{pk}/", {"notes": "x"}).status_code == 404
    assert alice_api.post(f"{INVOICES}{pk}/send/").status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", INVOICES),
        ("post", INVOICES),
        ("get", SUMMARY),
        ("get", "{detail}"),
        ("patch", "{detail}"),
        ("delete", "{detail}"),
        ("post", "{detail}send/"),
        ("post", "{detail}void/"),
    ],
)
def test_invoice_endpoints_need_a_token(api, alice_api, alice_customer, method, path):
    invoice = create_invoice(alice_api, alice_customer)

    response = getattr(api, method)(path.format(detail=invoice_url(invoice["id"])), {})

    assert response.status_code == 401
    assert Invoice.objects.get(pk=invoice["id"]).status == "draft"


# --- a status sent with the invoice's current one is no change; any other is a 400 --------------------


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
