"""What an operator sees in the admin, and what a save there writes (or does not).

The invoice's page shows its payments, its balance due, its status history and who made it; a paid
or void invoice's page offers nothing to save; a save that changes nothing writes nothing. Every
owned list shows and filters by organization. An organization's page holds its settings (checked as
the API checks them), its members (changed through the services, never leaving it without an owner)
and its API keys (shown, revoked, never made). `seed_demo` makes the demo organization, its members,
an API key printed once, and the operator a new user logs in with.
"""

import io
import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from billing.models import IdempotencyKey
from customers.models import Customer
from invoices.models import Invoice, InvoiceStatusChange
from invoices.services import invoice_void
from payments.models import Payment
from payments.services import payment_record
from tests.admin_helpers import (
    add_url,
    change_form_data,
    change_url,
    commit_in_another_thread,
    delete_url,
    form_as_posted,
    messages_of,
    operator_client,
)
from tests.conftest import PASSWORD, key_client, member_of
from tests.factories import org
from tests.live.admin_form import PostedFields
from users.admin import MembershipFormSet
from users.models import ApiKey, Membership, Organization
from users.services import LastOwner, membership_change_role

D = Decimal
ROOT = Path(__file__).resolve().parent.parent


def pay(owner, invoice, amount: str, reference: str = ""):
    return payment_record(
        organization=org(owner), invoice_id=invoice.pk, amount=D(amount), method="card", reference=reference
    )


def page(client: Client, obj) -> str:
    response = client.get(change_url(obj))
    assert response.status_code == 200
    return response.content.decode()


def shown(admin_form) -> dict[str, str]:
    """The read-only fields of an admin form (the page's or an inline row's), as displayed."""
    return {
        field.field["name"]: str(field.contents())
        for fieldset in admin_form
        for line in fieldset
        for field in line
        if field.is_readonly
    }


def inline_of(response, model_name: str):
    (inline,) = [i for i in response.context["inline_admin_formsets"] if i.opts.model.__name__ == model_name]
    return inline


# --- the invoice's page ------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_invoice_page_shows_its_payments_each_linked_to_its_own_page(alice, make_invoice):
    invoice = make_invoice(alice, amount="100.00")
    first = pay(alice, invoice, "30.00", reference="WIRE-0001")
    second = pay(alice, invoice, "12.50", reference="WIRE-0002")

    html = page(operator_client(), invoice)

    assert "WIRE-0001" in html
    assert "WIRE-0002" in html
    assert html.index("WIRE-0001") < html.index("WIRE-0002")  # oldest first
    assert change_url(first) in html
    assert change_url(second) in html


@pytest.mark.django_db
def test_the_invoice_page_shows_the_balance_due(alice, make_invoice):
    invoice = make_invoice(alice, amount="100.00")
    pay(alice, invoice, "30.00")

    response = operator_client().get(change_url(invoice))

    assert shown(response.context["adminform"])["balance_due"] == "70.00"


@pytest.mark.django_db
def test_the_invoice_page_shows_its_status_history_with_who_made_each_change(
    alice, make_invoice, django_user_model
):
    voider = django_user_model.objects.create_user("carol", password="x")
    invoice = make_invoice(alice, amount="10.00")
    invoice_void(organization=org(alice), invoice_id=invoice.pk, actor=voider)

    response = operator_client().get(change_url(invoice))

    rows = [shown(row) for row in inline_of(response, "InvoiceStatusChange")]
    assert [(row["from_status"], row["to_status"], row["by"]) for row in rows] == [
        ("Draft", "Sent", "system"),  # make_invoice sends with no actor
        ("Sent", "Void", "carol"),
    ]
    assert all(row["changed_at"] for row in rows)


@pytest.mark.django_db
def test_the_history_payments_documents_and_emails_are_read_only_on_the_invoice_page(alice, make_invoice):
    invoice = make_invoice(alice, amount="10.00")
    pay(alice, invoice, "1.00")

    response = operator_client().get(change_url(invoice))

    inlines = response.context["inline_admin_formsets"]
    assert {inline.opts.model.__name__ for inline in inlines} == {
        "Payment",
        "InvoiceStatusChange",
        "Document",
        "OutboundEmail",
    }
    for inline in inlines:
        assert not inline.has_add_permission
        assert not inline.has_change_permission
        assert not inline.has_delete_permission


@pytest.mark.django_db
def test_the_add_page_has_no_inlines(alice):
    # Nothing to show for a new invoice, and its add form then posts no inline management data.
    assert operator_client().get("/admin/invoices/invoice/add/").context["inline_admin_formsets"] == []


# --- a paid or void invoice is shown, not offered for saving -----------------------------------


def _save_buttons(html: str) -> list[str]:
    return [name for name in ("_save", "_continue", "_addanother") if f'name="{name}"' in html]


@pytest.mark.django_db
@pytest.mark.parametrize("state", ["paid", "void"])
def test_a_settled_invoice_page_offers_no_save_buttons(alice, make_invoice, state):
    invoice = make_invoice(alice, amount="10.00")
    if state == "paid":
        pay(alice, invoice, "10.00")
    else:
        invoice_void(organization=org(alice), invoice_id=invoice.pk)

    html = page(operator_client(), invoice)

    assert _save_buttons(html) == []
    assert "Close" in html


@pytest.mark.django_db
def test_an_open_invoice_page_still_offers_saving(alice, make_invoice):
    operator = operator_client()
    assert _save_buttons(page(operator, make_invoice(alice, send=False))) == [
        "_save",
        "_continue",
        "_addanother",
    ]
    assert "_save" in _save_buttons(page(operator, make_invoice(alice)))  # its notes


@pytest.mark.django_db
def test_posting_to_a_paid_invoice_page_is_refused_and_changes_nothing(alice, make_invoice):
    invoice = make_invoice(alice, amount="10.00")
    pay(alice, invoice, "10.00")
    paid = Invoice.objects.get(pk=invoice.pk)
    operator = operator_client()
    data = form_as_posted(operator, paid, notes="sneaked in", number="OTHER-1", _save="Save")

    with CaptureQueriesContext(connection) as queries:
        response = operator.post(change_url(paid), data, follow=True)

    assert not [q["sql"] for q in queries if q["sql"].startswith(("UPDATE", "INSERT", "DELETE"))]
    assert any("A paid invoice cannot be changed" in m for m in messages_of(response))
    after = Invoice.objects.get(pk=invoice.pk)
    assert (after.notes, after.number, after.version) == ("", paid.number, paid.version)
    assert not LogEntry.objects.exists()


# --- a save that changes nothing writes nothing ------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("state", ["draft", "sent", "partly paid"])
def test_saving_an_unchanged_invoice_writes_nothing(alice, make_invoice, state):
    invoice = make_invoice(alice, amount="10.00", send=state != "draft")
    if state == "partly paid":
        pay(alice, invoice, "2.50")
    invoice = Invoice.objects.get(pk=invoice.pk)
    operator = operator_client()
    data = form_as_posted(operator, invoice, _save="Save")  # exactly what the browser sends

    with CaptureQueriesContext(connection) as queries:
        response = operator.post(change_url(invoice), data, follow=True)

    assert response.redirect_chain[0][1] == 302
    writes = [q["sql"] for q in queries if q["sql"].startswith(("UPDATE", "INSERT", "DELETE"))]
    assert [sql for sql in writes if "django_session" not in sql] == []
    assert any("Nothing changed" in m for m in messages_of(response))
    after = Invoice.objects.get(pk=invoice.pk)
    assert (after.version, after.updated_at) == (invoice.version, invoice.updated_at)
    assert not LogEntry.objects.exists()


@pytest.mark.django_db
def test_saving_a_changed_invoice_still_writes_and_logs_it(alice, make_invoice):
    invoice = Invoice.objects.get(pk=make_invoice(alice, amount="10.00").pk)
    operator = operator_client()
    data = change_form_data(operator, invoice, notes="Called the customer", _save="Save")

    response = operator.post(change_url(invoice), data)

    assert response.status_code == 302
    after = Invoice.objects.get(pk=invoice.pk)
    assert (after.notes, after.version) == ("Called the customer", invoice.version + 1)
    assert LogEntry.objects.get().get_change_message() == "Changed Notes."


# --- currency ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_currency_is_typed_with_the_codes_offered_as_suggestions(alice, make_invoice):
    draft = make_invoice(alice, send=False)
    operator = operator_client()

    html = page(operator, draft)

    assert '<datalist id="id_currency_codes">' in html
    assert 'list="id_currency_codes"' in html
    assert '<option value="JPY"></option>' in html
    assert 'type="text" name="currency" value="USD"' in html  # an input, not a 180-entry select

    data = change_form_data(operator, draft, currency="eur")  # typed in lower case
    assert operator.post(change_url(draft), data).status_code == 302
    draft.refresh_from_db()
    assert draft.currency == "EUR"


@pytest.mark.django_db
def test_the_currency_input_refuses_a_code_that_is_not_iso_4217(alice, make_invoice):
    draft = make_invoice(alice, send=False)
    operator = operator_client()

    response = operator.post(change_url(draft), change_form_data(operator, draft, currency="HRK"))

    assert response.status_code == 200
    assert "currency" in response.context["adminform"].form.errors
    draft.refresh_from_db()
    assert draft.currency == "USD"


# --- the lists ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_invoice_list_shows_customer_issue_date_and_balance_due(alice, make_invoice):
    invoice = make_invoice(alice, amount="100.00")
    pay(alice, invoice, "40.00")
    invoice.refresh_from_db()

    response = operator_client().get("/admin/invoices/invoice/")

    assert response.status_code == 200
    headers = [h["text"] for h in response.context["result_headers"]]
    for column in ("customer", "issue date", "balance due"):
        assert column in [h.lower() for h in headers], headers
    html = response.content.decode()
    assert "60.00" in html
    assert invoice.customer.name in html


@pytest.mark.django_db
def test_the_invoice_list_sorts_by_balance_due(alice, make_invoice):
    owing_little = make_invoice(alice, amount="100.00")
    pay(alice, owing_little, "90.00")
    owing_much = make_invoice(alice, amount="50.00")
    column = [h["text"] for h in operator_client().get("/admin/invoices/invoice/").context["result_headers"]]
    index = [h.lower() for h in column].index("balance due")

    response = operator_client().get(f"/admin/invoices/invoice/?o=-{index}")

    shown = [invoice.pk for invoice in response.context["cl"].result_list]
    assert shown == [owing_much.pk, owing_little.pk]


@pytest.mark.django_db
def test_the_invoice_list_does_not_query_per_row(alice, make_invoice, django_assert_max_num_queries):
    operator = operator_client()
    make_invoice(alice)
    with CaptureQueriesContext(connection) as one:
        operator.get("/admin/invoices/invoice/")
    for _ in range(4):
        make_invoice(alice)
    with django_assert_max_num_queries(len(one)):
        operator.get("/admin/invoices/invoice/")


@pytest.mark.django_db
def test_payments_link_to_their_invoice_in_the_list_and_on_their_page(alice, make_invoice):
    invoice = make_invoice(alice, amount="100.00")
    payment = pay(alice, invoice, "10.00")
    operator = operator_client()
    invoice_link = f'<a href="{change_url(invoice)}">{invoice.number}</a>'

    listing = operator.get("/admin/payments/payment/").content.decode()
    assert invoice_link in listing
    assert "USD" in listing

    assert invoice_link in page(operator, payment)
    assert Payment.objects.get(pk=payment.pk).amount == D("10.00")


# --- organization on every owned list -----------------------------------------------------------


def _books_of_two_organizations(alice, bob, make_invoice):
    for owner in (alice, bob):
        invoice = make_invoice(owner, amount="50.00")  # a customer, an invoice, its status change
        pay(owner, invoice, "10.00")
        IdempotencyKey.objects.create(
            organization=org(owner),
            key=f"{owner}-1",
            operation="payment_record",
            fingerprint="0" * 64,
            response_status=201,
            response_body="{}",
        )


OWNED_LISTS = {
    "customer": (Customer, "/admin/customers/customer/"),
    "invoice": (Invoice, "/admin/invoices/invoice/"),
    "payment": (Payment, "/admin/payments/payment/"),
    "status change": (InvoiceStatusChange, "/admin/invoices/invoicestatuschange/"),
    "idempotency key": (IdempotencyKey, "/admin/billing/idempotencykey/"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("name", OWNED_LISTS)
def test_every_owned_list_shows_and_filters_by_organization(alice, bob, make_invoice, name):
    model, url = OWNED_LISTS[name]
    _books_of_two_organizations(alice, bob, make_invoice)
    operator = operator_client()

    everything = operator.get(url)
    only_alices = operator.get(f"{url}?organization__id__exact={org(alice).pk}")
    searched = operator.get(f"{url}?q=bob")

    assert "organization" in [h["text"].lower() for h in everything.context["result_headers"]]
    assert "organization" in [spec.title for spec in everything.context["cl"].filter_specs]  # the sidebar
    assert {row.organization_id for row in everything.context["cl"].result_list} == {
        org(alice).pk,
        org(bob).pk,
    }
    assert only_alices.status_code == 200
    alices = only_alices.context["cl"].result_list
    assert len(alices) == model.objects.filter(organization=org(alice)).count() > 0
    assert {row.organization_id for row in alices} == {org(alice).pk}
    assert {row.organization_id for row in searched.context["cl"].result_list} == {org(bob).pk}


@pytest.mark.django_db
def test_an_objects_organization_is_read_only_once_it_exists(alice, alice_customer, make_invoice):
    operator = operator_client()
    for obj in (alice_customer, make_invoice(alice, send=False)):
        form = operator.get(change_url(obj)).context["adminform"].form
        assert "organization" not in form.fields
    assert "organization" in operator.get(add_url(Invoice)).context["adminform"].form.fields


# --- who made it -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_invoice_created_in_the_admin_is_recorded_as_the_operators(alice_org, alice_customer):
    operator = operator_client()
    data = {
        "organization": alice_org.pk,
        "customer": alice_customer.pk,
        "currency": "EUR",
        "issue_date": "2026-01-01",
        "due_date": "2026-02-01",
        "notes": "from the admin",
        "number": "",
    }

    response = operator.post(add_url(Invoice), data)

    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    invoice = Invoice.objects.get()
    assert invoice.organization == alice_org
    assert invoice.created_by_user.username == "operator"
    assert invoice.created_by_api_key is None
    assert shown(operator.get(change_url(invoice)).context["adminform"])["created_by"] == "operator"


@pytest.mark.django_db
def test_the_payment_page_and_the_invoice_page_say_who_recorded_each_payment(alice_org, make_invoice):
    invoice = make_invoice(alice_org, amount="100.00")
    client, api_key = key_client(alice_org, role="member")
    body = {"invoice": invoice.pk, "amount": "30.00", "method": "card"}
    by_key = Payment.objects.get(pk=client.post("/api/payments/", body, format="json").json()["id"])
    by_member = payment_record(
        organization=alice_org,
        invoice_id=invoice.pk,
        amount=D("5.00"),
        method="cash",
        actor=org_owner(alice_org),
    )
    operator = operator_client()

    assert shown(operator.get(change_url(by_key)).context["adminform"])["created_by"] == str(api_key)
    assert shown(operator.get(change_url(by_member)).context["adminform"])["created_by"] == "alice"
    rows = [shown(row) for row in inline_of(operator.get(change_url(invoice)), "Payment")]
    assert [row["created_by"] for row in rows] == [str(api_key), "alice"]


@pytest.mark.django_db
def test_the_status_history_names_the_api_key_that_made_a_change(alice_org, make_invoice):
    invoice = make_invoice(alice_org, amount="10.00")
    client, api_key = key_client(alice_org)
    assert client.post(f"/api/invoices/{invoice.pk}/void/").status_code == 200

    response = operator_client().get(change_url(invoice))

    rows = [shown(row) for row in inline_of(response, "InvoiceStatusChange")]
    assert [row["by"] for row in rows] == ["system", str(api_key)]


def org_owner(organization):
    return Membership.objects.get(organization=organization, role="owner").user


# --- an organization's page: settings, members, API keys -----------------------------------------

MEMBERS = "memberships"  # the members inline's form prefix


def row_of(data: dict, membership) -> str:
    """The form prefix of `membership`'s row in a posted members inline."""
    (row,) = [
        key.removesuffix("id")
        for key, value in data.items()
        if key.endswith("-id") and value == str(membership.pk)
    ]
    return row


def roles_of(organization) -> dict[str, str]:
    return dict(Membership.objects.filter(organization=organization).values_list("user__username", "role"))


def writes_in(queries) -> list[str]:
    return [
        q["sql"]
        for q in queries
        if q["sql"].startswith(("UPDATE", "INSERT", "DELETE")) and "django_session" not in q["sql"]
    ]


def add_form_as_posted(client: Client, model, **changes) -> dict:
    """The add page of `model` as a browser would post it (read from its HTML), with `changes`."""
    response = client.get(add_url(model))
    assert response.status_code == 200
    parser = PostedFields()
    parser.feed(response.content.decode())
    parser.fields.pop("csrfmiddlewaretoken", None)
    return {**parser.fields, **changes}


@pytest.mark.django_db
def test_the_organization_page_shows_its_members_and_its_api_keys_but_no_secret(alice, alice_org):
    member_of(alice_org, "carol", "member")
    _, api_key = key_client(alice_org, role="viewer", expires_at=None)

    response = operator_client().get(change_url(alice_org))

    assert response.status_code == 200
    members = [
        (row.form.instance.user.username, row.form.instance.role)
        for row in inline_of(response, "Membership")
        if row.form.instance.pk
    ]
    assert members == [("alice", "owner"), ("carol", "member")]
    (key_row,) = [shown(row) for row in inline_of(response, "ApiKey")]
    assert (key_row["name"], key_row["prefix"], key_row["role"]) == ("viewer key", api_key.prefix, "Viewer")
    keys = inline_of(response, "ApiKey")
    assert (keys.has_add_permission, keys.has_change_permission, keys.has_delete_permission) == (False,) * 3
    assert api_key.digest not in response.content.decode()


@pytest.mark.django_db
def test_the_organization_page_saves_settings_and_members_through_the_services(
    alice, alice_org, django_user_model
):
    carol = member_of(alice_org, "carol", "member")
    dave = django_user_model.objects.create_user("dave", password="x")
    operator = operator_client()
    data = form_as_posted(operator, alice_org, legal_name="Alice Billing Ltd", time_zone="Pacific/Auckland")
    data[row_of(data, Membership.objects.get(user=carol, organization=alice_org)) + "role"] = "admin"
    data[f"{MEMBERS}-2-user"], data[f"{MEMBERS}-2-role"] = str(dave.pk), "viewer"  # the blank row

    response = operator.post(change_url(alice_org), {**data, "_save": "Save"})

    assert response.status_code == 302, (
        response.context and response.context["inline_admin_formsets"][0].formset.errors
    )
    alice_org.refresh_from_db()
    assert (alice_org.legal_name, alice_org.time_zone, alice_org.name) == (
        "Alice Billing Ltd",
        "Pacific/Auckland",
        "alice",
    )
    assert roles_of(alice_org) == {"alice": "owner", "carol": "admin", "dave": "viewer"}
    message = LogEntry.objects.get().get_change_message()
    assert "Changed Legal name and Time zone." in message
    assert "Added member" in message
    assert "Changed Role for member" in message


@pytest.mark.django_db
def test_saving_an_unchanged_organization_page_writes_nothing(alice, alice_org):
    member_of(alice_org, "carol", "viewer")
    key_client(alice_org)
    operator = operator_client()
    data = form_as_posted(operator, alice_org, _save="Save")

    with CaptureQueriesContext(connection) as queries:
        response = operator.post(change_url(alice_org), data, follow=True)

    assert response.redirect_chain[0][1] == 302
    assert writes_in(queries) == []
    assert any("Nothing changed" in m for m in messages_of(response))


@pytest.mark.django_db
@pytest.mark.parametrize("change", ["demote", "remove"])
def test_the_organization_page_refuses_to_leave_it_without_an_owner(alice, alice_org, change):
    member_of(alice_org, "carol", "admin")
    owner = Membership.objects.get(user=alice, organization=alice_org)
    operator = operator_client()
    data = form_as_posted(operator, alice_org, legal_name="Not saved either", _save="Save")
    if change == "demote":
        data[row_of(data, owner) + "role"] = "admin"
    else:
        data[row_of(data, owner) + "DELETE"] = "on"

    with CaptureQueriesContext(connection) as queries:
        response = operator.post(change_url(alice_org), data)

    assert response.status_code == 200  # the form again, with the error
    (error,) = inline_of(response, "Membership").formset.non_form_errors()
    assert "always keeps an owner" in error
    assert "always keeps an owner" in response.content.decode()
    assert writes_in(queries) == []
    assert roles_of(alice_org) == {"alice": "owner", "carol": "admin"}
    alice_org.refresh_from_db()
    assert alice_org.legal_name == ""
    assert not LogEntry.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_owner_demoted_meanwhile_never_leaves_the_organization_without_one(alice, alice_org, monkeypatch):
    """The form counted two owners; between its check and the save, another writer demotes the
    other owner. The service decides on the locked organization: one demotion wins, never both."""
    carol = member_of(alice_org, "carol", "owner")
    carols = Membership.objects.get(user=carol, organization=alice_org)
    operator = operator_client()
    data = form_as_posted(operator, alice_org, _save="Save")
    data[row_of(data, Membership.objects.get(user=alice, organization=alice_org)) + "role"] = "admin"

    def demote_carol():
        try:
            membership_change_role(
                organization_id=alice_org.pk, membership_id=carols.pk, role="admin", caller_role="owner"
            )
        except LastOwner:
            return "refused"
        return "demoted"

    joins = []
    checked = MembershipFormSet._check_owners_remain

    def check_then_race(self, changes):
        checked(self, changes)
        if not joins:
            joins.append(commit_in_another_thread(demote_carol))

    monkeypatch.setattr(MembershipFormSet, "_check_owners_remain", check_then_race)
    response = operator.post(change_url(alice_org), data, follow=True)
    other = joins[0]()

    assert response.redirect_chain[0][1] == 302
    if connection.vendor == "postgresql":  # the other demotion committed first: the admin's is refused
        assert other == "demoted"
        assert roles_of(alice_org) == {"alice": "owner", "carol": "admin"}
        assert any("Not saved: The last owner" in m for m in messages_of(response))
    else:  # SQLite: the admin's transaction held the write lock, so the other writer came second
        assert other == "refused"
        assert roles_of(alice_org) == {"alice": "admin", "carol": "owner"}


@pytest.mark.django_db
def test_staff_who_are_not_superusers_act_as_admins_and_never_grant_owner(
    alice, alice_org, django_user_model
):
    carol = member_of(alice_org, "carol", "member")
    clerk = django_user_model.objects.create_user("clerk", password="x", is_staff=True)
    clerk.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="users",
            codename__in=["view_organization", "change_organization", "view_user", "change_membership"],
        )
    )
    staff = Client()
    staff.force_login(clerk)
    data = form_as_posted(staff, alice_org, _save="Save")
    row = row_of(data, Membership.objects.get(user=carol, organization=alice_org))

    refused = staff.post(change_url(alice_org), {**data, row + "role": "owner"})
    allowed = staff.post(change_url(alice_org), {**data, row + "role": "admin"})

    assert refused.status_code == 200
    assert "Only an owner grants" in str(inline_of(refused, "Membership").formset.non_form_errors())
    assert allowed.status_code == 302
    assert roles_of(alice_org) == {"alice": "owner", "carol": "admin"}


@pytest.mark.django_db
def test_one_save_may_hand_the_ownership_over(alice, alice_org):
    carol = member_of(alice_org, "carol", "member")
    operator = operator_client()
    data = form_as_posted(operator, alice_org, _save="Save")
    data[row_of(data, Membership.objects.get(user=alice, organization=alice_org)) + "role"] = "member"
    data[row_of(data, Membership.objects.get(user=carol, organization=alice_org)) + "role"] = "owner"

    assert operator.post(change_url(alice_org), data).status_code == 302  # the promotion goes first

    assert roles_of(alice_org) == {"alice": "member", "carol": "owner"}


@pytest.mark.django_db
def test_the_organization_page_refuses_a_second_membership_of_a_member(alice, alice_org):
    carol = member_of(alice_org, "carol", "member")
    operator = operator_client()
    data = form_as_posted(operator, alice_org, _save="Save")
    data[f"{MEMBERS}-2-user"], data[f"{MEMBERS}-2-role"] = str(carol.pk), "viewer"

    response = operator.post(change_url(alice_org), data)

    assert response.status_code == 200
    formset = inline_of(response, "Membership").formset
    assert formset.errors[2] == {"__all__": ["Please correct the duplicate values below."]}
    assert "duplicate data for user" in str(formset.non_form_errors())
    assert roles_of(alice_org) == {"alice": "owner", "carol": "member"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("time_zone", "Mars/Olympus_Mons"),
        ("invoice_prefix", "INV #"),
        ("reminder_days", "[1, 1]"),
        ("default_currency", "HRK"),
    ],
)
def test_an_invalid_setting_is_a_form_error_and_nothing_is_saved(alice_org, field, value):
    operator = operator_client()
    before = Organization.objects.filter(pk=alice_org.pk).values().get()
    data = form_as_posted(operator, alice_org, name="Renamed", **{field: value}, _save="Save")

    response = operator.post(change_url(alice_org), data)

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == [field]
    assert Organization.objects.filter(pk=alice_org.pk).values().get() == before


@pytest.mark.django_db
def test_a_new_organization_needs_an_owner_and_gets_the_one_named(alice):
    operator = operator_client()
    data = add_form_as_posted(operator, Organization, name="Wayne Billing", _save="Save")

    refused = operator.post(add_url(Organization), data)

    assert refused.status_code == 200
    assert "needs an owner" in str(inline_of(refused, "Membership").formset.non_form_errors())
    assert not Organization.objects.filter(name="Wayne Billing").exists()

    data[f"{MEMBERS}-0-user"], data[f"{MEMBERS}-0-role"] = str(alice.pk), "owner"
    assert operator.post(add_url(Organization), data).status_code == 302
    made = Organization.objects.get(name="Wayne Billing")
    assert roles_of(made) == {"alice": "owner"}
    assert (made.invoice_prefix, made.payment_terms_days, made.reminder_days) == ("INV-", 30, [-3, 1, 7, 14])


# --- API keys ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_api_key_admin_lists_and_revokes_keys_and_never_makes_one(alice_org, bob_org):
    client, api_key = key_client(alice_org)
    _, bobs = key_client(bob_org)
    assert client.get("/api/me/").status_code == 200
    operator = operator_client()

    assert operator.get(add_url(ApiKey)).status_code == 403
    page = operator.get(change_url(api_key))
    assert page.context["adminform"].form.fields == {}  # every field read-only, the digest too
    assert shown(page.context["adminform"])["digest"] == api_key.digest
    listing = operator.get(f"/admin/users/apikey/?organization__id__exact={alice_org.pk}")
    assert [key.pk for key in listing.context["cl"].result_list] == [api_key.pk]

    response = operator.post(
        "/admin/users/apikey/", {"action": "revoke", "_selected_action": [api_key.pk]}, follow=True
    )

    assert "1 API keys revoked." in messages_of(response)
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert client.get("/api/me/").status_code == 401  # at once
    bobs.refresh_from_db()
    assert bobs.revoked_at is None
    revoked = operator.get("/admin/users/apikey/?revoked=yes").context["cl"].result_list
    assert [key.pk for key in revoked] == [api_key.pk]


# --- users ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_user_pages_render_and_a_user_is_added_with_no_membership(alice, bob_org, django_user_model):
    Membership.objects.create(organization=bob_org, user=alice, role="viewer")
    operator = operator_client()

    listing = operator.get(f"/admin/users/user/?memberships__organization__id__exact={bob_org.pk}")
    page = operator.get(change_url(alice))
    added = operator.post(
        add_url(django_user_model),
        {"username": "erin", "password1": PASSWORD, "password2": PASSWORD, "usable_password": "true"},
    )

    assert sorted(user.username for user in listing.context["cl"].result_list) == ["alice", "bob"]
    memberships = [row.form.instance for row in inline_of(page, "Membership") if row.form.instance.pk]
    assert [(m.organization.name, m.role) for m in memberships] == [("alice", "owner"), ("bob", "viewer")]
    assert added.status_code == 302
    erin = django_user_model.objects.get(username="erin")
    assert erin.check_password(PASSWORD)
    assert not Membership.objects.filter(user=erin).exists()


@pytest.mark.django_db
def test_the_last_owner_of_an_organization_cannot_be_deleted(alice, alice_org):
    operator = operator_client()

    confirm = operator.get(delete_url(alice))
    response = operator.post(delete_url(alice), {"post": "yes"})

    for page in (confirm, response):
        assert page.status_code == 200
        html = page.content.decode()
        assert "Cannot delete" in html
        assert "alice (its last owner)" in html
    assert Membership.objects.filter(user=alice, organization=alice_org, role="owner").exists()


@pytest.mark.django_db
def test_a_user_who_is_not_the_last_owner_is_deleted_with_their_memberships(
    alice, alice_org, django_user_model
):
    carol = django_user_model.objects.create_user("carol", password="x")
    Membership.objects.create(organization=alice_org, user=carol, role="owner")

    response = operator_client().post(delete_url(carol), {"post": "yes"})

    assert response.status_code == 302
    assert not django_user_model.objects.filter(username="carol").exists()
    assert roles_of(alice_org) == {"alice": "owner"}


@pytest.mark.django_db
def test_the_user_page_refuses_to_demote_the_last_owner(alice, alice_org):
    operator = operator_client()
    data = form_as_posted(operator, alice, _save="Save")
    data[row_of(data, Membership.objects.get(user=alice, organization=alice_org)) + "role"] = "member"

    response = operator.post(change_url(alice), data)

    assert response.status_code == 200
    assert "always keeps an owner" in str(inline_of(response, "Membership").formset.non_form_errors())
    assert roles_of(alice_org) == {"alice": "owner"}


@pytest.mark.django_db
def test_the_user_page_changes_a_role_through_the_services(alice, bob_org):
    Membership.objects.create(organization=bob_org, user=alice, role="viewer")
    operator = operator_client()
    data = form_as_posted(operator, alice, _save="Save")
    data[row_of(data, Membership.objects.get(user=alice, organization=bob_org)) + "role"] = "admin"

    assert operator.post(change_url(alice), data).status_code == 302

    assert roles_of(bob_org) == {"bob": "owner", "alice": "admin"}


# --- seed_demo: the operator a new user logs in with ---------------------------------------------


@pytest.mark.django_db
def test_seed_demo_makes_the_operator_once_and_the_operator_can_log_in(settings, capsys, django_user_model):
    settings.DEBUG = True  # as under `make run`
    call_command("seed_demo")
    call_command("seed_demo")  # a second run: the same operator, the same login, no second one

    operator = django_user_model.objects.get(username="admin")
    assert (operator.is_staff, operator.is_superuser, operator.is_active) == (True, True, True)
    assert django_user_model.objects.filter(is_staff=True).count() == 1
    out = capsys.readouterr().out
    assert out.count("username 'admin', password 'admin-demo'") == 2
    assert "Demo operator created" in out
    assert "Demo operator ready" in out

    client = Client()
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "admin", "password": "admin-demo", "next": "/admin/"}
    )
    assert response.status_code == 302, response.content.decode()[:500]
    assert response["Location"] == "/admin/"
    assert client.get("/admin/invoices/invoice/").status_code == 200


@pytest.mark.django_db
def test_seed_demo_resets_the_operator_login_that_was_changed(settings, django_user_model):
    settings.DEBUG = True
    call_command("seed_demo", stdout=io.StringIO())
    operator = django_user_model.objects.get(username="admin")
    operator.set_password("something-else")
    operator.save()

    call_command("seed_demo", stdout=io.StringIO())

    operator.refresh_from_db()
    assert operator.check_password("admin-demo")


@pytest.mark.django_db
def test_seed_demo_makes_no_operator_with_debug_off_unless_forced(settings, capsys, django_user_model):
    settings.DEBUG = False
    call_command("seed_demo")

    assert not django_user_model.objects.filter(username="admin").exists()
    captured = capsys.readouterr()
    assert "admin-demo" not in captured.out
    assert "No demo operator" in captured.err
    assert "username 'demo'" in captured.out  # the demo user and data, as before

    call_command("seed_demo", force=True)
    assert django_user_model.objects.get(username="admin").is_superuser


@pytest.mark.django_db
def test_seed_demo_never_promotes_a_user_who_signed_up_as_admin(settings, capsys, django_user_model):
    settings.DEBUG = True
    member = django_user_model.objects.create_user("admin", password="their-own-password")

    call_command("seed_demo")

    member.refresh_from_db()
    assert (member.is_staff, member.is_superuser) == (False, False)
    assert member.check_password("their-own-password")
    assert "not staff" in capsys.readouterr().err


# --- seed_demo: the demo organization, its members and its API key ------------------------------

KEY = re.compile(r"(sk_[a-z0-9]{12}_\S+)")
LOGIN = re.compile(r"username '([\w-]+)', password '([^']+)' \((\w+)\)")


def _seed(**options) -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def _me(key: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client.get("/api/me/")


@pytest.mark.django_db
def test_seed_demo_prints_an_api_key_that_works_until_the_next_run_prints_another():
    (first,) = KEY.findall(_seed())

    me = _me(first)
    assert me.status_code == 200
    assert (me.json()["role"], me.json()["organization"]["name"], me.json()["username"]) == (
        "admin",
        "Demo Company",
        None,
    )

    (second,) = KEY.findall(_seed())

    assert second != first
    assert _me(first).status_code == 401  # revoked: its secret cannot be printed again
    assert _me(second).status_code == 200
    keys = ApiKey.objects.filter(name="Demo integration")
    assert keys.count() == 2
    assert keys.filter(revoked_at__isnull=True).count() == 1
    assert first not in str(list(keys.values()))  # only the prefix and a hash are stored


@pytest.mark.django_db
def test_seed_demo_makes_the_owner_the_member_and_the_viewer_with_their_roles():
    out = _seed()
    demo = Organization.objects.get(name="Demo Company")
    Membership.objects.filter(organization=demo, user__username="demo-viewer").update(role="admin")

    again = _seed()  # the roles are put back, the data is not made twice

    assert roles_of(demo) == {"demo": "owner", "demo-member": "member", "demo-viewer": "viewer"}
    logins = LOGIN.findall(again)
    assert [(username, role) for username, _, role in logins] == [
        ("demo", "owner"),
        ("demo-member", "member"),
        ("demo-viewer", "viewer"),
    ]
    assert {password for _, password, _ in LOGIN.findall(out)}.isdisjoint(p for _, p, _ in logins)
    for username, password, role in logins:  # each printed login works, for the demo organization
        response = APIClient().post(
            "/api/login/", {"username": username, "password": password}, format="json"
        )
        assert response.status_code == 200, response.json()
        assert (response.json()["organization"]["id"], response.json()["role"]) == (demo.pk, role)
    assert Organization.objects.filter(name="Demo Company").count() == 1
    assert (demo.legal_name, demo.tax_id, demo.time_zone, demo.invoice_prefix) == (
        "Demo Company LLC",
        "US-98-7654321",
        "America/Chicago",
        "DEMO-",
    )
    assert demo.address.startswith("100 Congress Avenue")
    assert demo.invoice_footer.startswith("Please pay by bank transfer")


@pytest.mark.django_db
def test_seed_demo_writes_the_books_once_through_the_services_as_its_members():
    _seed()
    _seed()

    demo = Organization.objects.get(name="Demo Company")
    invoices = Invoice.objects.filter(organization=demo)
    assert Customer.objects.filter(organization=demo).count() == 4
    assert sorted(invoices.values_list("currency", "status")) == [
        ("EUR", "paid"),
        ("JPY", "sent"),
        ("KWD", "sent"),
        ("USD", "draft"),
        ("USD", "overdue"),
        ("USD", "sent"),
        ("USD", "sent"),
        ("USD", "void"),
    ]
    # Yen without a minor unit, dinars with three places: 3 x 333 at 8 %; 1500 x 0.0333 at 5 %, 20 paid.
    assert {
        currency: (total, paid)
        for currency, total, paid in invoices.filter(currency__in=["JPY", "KWD"]).values_list(
            "currency", "total", "amount_paid"
        )
    } == {"JPY": (Decimal("1079"), Decimal("0")), "KWD": (Decimal("52.448"), Decimal("20.000"))}
    assert all(
        number.startswith("DEMO-")
        for number in invoices.exclude(number=None).values_list("number", flat=True)
    )
    assert set(invoices.values_list("created_by_user__username", flat=True)) == {"demo"}
    payments = Payment.objects.filter(organization=demo)
    assert set(payments.values_list("created_by_user__username", flat=True)) == {"demo-member"}
    assert not Customer.objects.exclude(organization=demo).exists()
    out = io.StringIO()
    call_command("verify_ledger", stdout=out)  # raises on any mismatch
    assert "0 mismatches" in out.getvalue()


# --- the SQLite warning about INCLUDE indexes --------------------------------------------------


def _run(database_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DJANGO_DEBUG": "1", "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def _silenced_with(database_url: str) -> str:
    code = "import django; django.setup(); from django.conf import settings; print(settings.SILENCED_SYSTEM_CHECKS)"
    result = _run(database_url, "-c", code)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_sqlite_does_not_report_w040_for_the_postgresql_only_covering_index(tmp_path):
    # `--database`: the check `migrate` runs, where W040 was reported (plain `check` skips it).
    result = _run(f"sqlite:///{tmp_path / 'check.sqlite3'}", "manage.py", "check", "--database", "default")

    assert result.returncode == 0, result.stderr
    assert "W040" not in result.stdout + result.stderr
    assert "(1 silenced)" in result.stdout


def test_only_sqlite_silences_w040(tmp_path):
    assert _silenced_with(f"sqlite:///{tmp_path / 'check.sqlite3'}") == "['models.W040']"
    # Settings only parse the URL: no PostgreSQL server is needed to read them.
    assert _silenced_with("postgres://postgres@127.0.0.1:5432/billing") == "[]"


def test_the_check_of_this_runs_database_silences_w040_only_on_sqlite(tmp_path):
    database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{tmp_path / 'check.sqlite3'}"

    result = _run(database_url, "manage.py", "check", "--database", "default")

    assert result.returncode == 0, result.stderr
    assert "W040" not in result.stdout + result.stderr
    expected = "(0 silenced)" if database_url.startswith("postgres") else "(1 silenced)"
    assert expected in result.stdout, result.stdout
