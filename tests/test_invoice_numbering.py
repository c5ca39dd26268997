"""Invoice numbers: one a client gives is kept exactly as given (or refused, if it would not print as
itself); otherwise one is given at issue time from a per-organization counter: gapless, unique, also under
races."""

from decimal import Decimal

import jsonschema_rs
import pytest

from billing.errors import BusinessRuleViolation
from invoices.models import Invoice
from invoices.services import invoice_delete, invoice_send, invoice_update
from tests.concurrency import run_concurrently
from tests.conftest import client_for
from tests.factories import InvoiceFactory, LineFactory, org
from tests.invoice_helpers import INVOICES, create_invoice, invoice_payload, invoice_url
from tests.schema_helpers import openapi


def draft(user_or_organization, customer, **fields):
    """A draft of one line of 10.00 (InvoiceFactory: through invoice_create)."""
    return InvoiceFactory(
        organization=org(user_or_organization),
        customer=customer,
        lines=[LineFactory(description="Work", unit_price=Decimal("10.00"))],
        **fields,
    )


@pytest.mark.django_db
def test_numbers_follow_the_organizations_sequence_and_deleted_drafts_burn_none(
    alice, bob, alice_customer, make_customer
):
    first, doomed, second = (draft(alice, alice_customer) for _ in range(3))
    bobs = draft(bob, make_customer(bob))
    assert first.number is None

    invoice_delete(organization=org(alice), invoice_id=doomed.pk)
    numbers = [invoice_send(organization=org(alice), invoice_id=i.pk).number for i in (second, first)]

    assert numbers == ["INV-000001", "INV-000002"]
    assert invoice_send(organization=org(bob), invoice_id=bobs.pk).number == "INV-000001"
    third = draft(alice, alice_customer)
    assert invoice_send(organization=org(alice), invoice_id=third.pk).number == "INV-000003"


@pytest.mark.django_db
def test_a_number_taken_by_hand_is_skipped(alice, alice_customer):
    manual = draft(alice, alice_customer, number="INV-000002")
    auto = [draft(alice, alice_customer) for _ in range(3)]

    numbers = [invoice_send(organization=org(alice), invoice_id=i.pk).number for i in auto]

    assert numbers == ["INV-000001", "INV-000003", "INV-000004"]
    assert invoice_send(organization=org(alice), invoice_id=manual.pk).number == "INV-000002"  # kept as given


@pytest.mark.django_db
def test_duplicate_number_is_a_400_on_number(alice, alice_customer):
    draft(alice, alice_customer, number="A-1")
    other = draft(alice, alice_customer)

    with pytest.raises(BusinessRuleViolation) as create_error:
        draft(alice, alice_customer, number="A-1")
    with pytest.raises(BusinessRuleViolation) as update_error:
        invoice_update(organization=org(alice), invoice_id=other.pk, number="A-1")

    assert create_error.value.field == update_error.value.field == "number"
    assert create_error.value.message == "An invoice with this number already exists."
    assert Invoice.objects.filter(number="A-1").count() == 1


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_sends_get_twenty_gapless_numbers(alice, alice_customer):
    drafts = [draft(alice, alice_customer) for _ in range(20)]
    client_tokens = [client_for(alice) for _ in drafts]

    responses = run_concurrently(lambda i: client_tokens[i].post(f"/api/invoices/{drafts[i].pk}/send/"), 20)

    assert [r.status_code for r in responses] == [200] * 20
    numbers = sorted(Invoice.objects.filter(organization=org(alice)).values_list("number", flat=True))
    assert numbers == [f"INV-{n:06d}" for n in range(1, 21)]


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_sends_of_two_organizations_do_not_collide(
    alice, bob, alice_customer, make_customer
):
    bob_customer = make_customer(bob)
    work = [(org(alice), draft(alice, alice_customer)) for _ in range(5)] + [
        (org(bob), draft(bob, bob_customer)) for _ in range(5)
    ]

    results = run_concurrently(
        lambda i: invoice_send(organization=work[i][0], invoice_id=work[i][1].pk).number, 10
    )

    assert all(isinstance(r, str) for r in results), results
    for user in (alice, bob):
        numbers = sorted(Invoice.objects.filter(organization=org(user)).values_list("number", flat=True))
        assert numbers == [f"INV-{n:06d}" for n in range(1, 6)]


@pytest.mark.django_db(transaction=True)
def test_racing_creates_with_one_number_write_one_invoice(alice, alice_customer):
    clients = [client_for(alice) for _ in range(8)]
    body = {"customer": alice_customer.pk, "due_date": "2030-01-31", "number": "RACE-1"}

    responses = run_concurrently(lambda i: clients[i].post("/api/invoices/", body), 8)

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [400] * 7
    assert all(
        r.json() == {"number": ["An invoice with this number already exists."]}
        for r in responses
        if r.status_code == 400
    )
    assert Invoice.objects.filter(organization=org(alice), number="RACE-1").count() == 1


# --- a number given by the client is kept exactly as given --------------------------------------------


NUMBER_REFUSED = (
    "An invoice number is kept as given: printable characters, with spaces only between them "
    "(no space at either end, no control or invisible character)."
)


def number_schema() -> dict:
    schema = openapi()["components"]["schemas"]["InvoiceInputRequest"]["properties"]["number"]
    return {key: value for key, value in schema.items() if key in ("type", "pattern", "maxLength")}


@pytest.mark.django_db
@pytest.mark.parametrize("number", ["ACME/2026/7", "INV 2026 7", "Rechnung Nr. 12", "№ 5", "請求書-1", "x"])
def test_a_number_is_kept_exactly_as_given(alice_api, alice_customer, number):
    created = create_invoice(alice_api, alice_customer, number=number)

    assert created["number"] == number
    assert Invoice.objects.get().number == number
    assert jsonschema_rs.validator_for(number_schema()).is_valid(number)


@pytest.mark.django_db
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


@pytest.mark.django_db
def test_a_draft_number_edit_is_not_trimmed_either(alice_api, alice_customer):
    draft = create_invoice(alice_api, alice_customer, number="Q-1")

    refused = alice_api.patch(invoice_url(draft["id"]), {"number": "Q-2 "})
    cleared = alice_api.patch(invoice_url(draft["id"]), {"number": ""})

    assert refused.status_code == 400
    assert list(refused.json()) == ["number"]
    assert cleared.status_code == 200
    assert cleared.json()["number"] is None


@pytest.mark.django_db
def test_a_number_with_inner_spaces_is_unique_as_given(alice_api, alice_customer):
    create_invoice(alice_api, alice_customer, number="INV 1")

    response = alice_api.post(INVOICES, invoice_payload(alice_customer, number="INV 1"))

    assert response.status_code == 400
    assert response.json() == {"number": ["An invoice with this number already exists."]}


@pytest.mark.django_db(transaction=True)
def test_a_send_is_never_refused_for_a_number_typed_into_a_draft_meanwhile(alice, alice_customer):
    """A typed number is written under the organization's sequence lock, as a send numbers under it: a
    draft being given "INV-000001" in a transaction still open makes a concurrent send wait, then
    take INV-000002 (on SQLite the two serialize on the write lock the same way)."""
    import threading
    import time

    from django.db import transaction

    first, typed = draft(alice, alice_customer), draft(alice, alice_customer)
    typing_started = threading.Event()

    def type_then_commit():
        with transaction.atomic():
            invoice_update(organization=org(alice), invoice_id=typed.pk, number="INV-000001")
            typing_started.set()
            time.sleep(0.5)  # the send arrives while this is uncommitted
        return "typed"

    def send_meanwhile():
        typing_started.wait(10)
        return invoice_send(organization=org(alice), invoice_id=first.pk).number

    results = run_concurrently(lambda i: (type_then_commit, send_meanwhile)[i](), 2)

    assert results == ["typed", "INV-000002"], results
    assert Invoice.objects.get(pk=typed.pk).number == "INV-000001"
