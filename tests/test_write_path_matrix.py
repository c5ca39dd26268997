"""The write-path matrix: every writer raced against every other writer on the same invoice.

A writer is anything that can change the books: each API write, each admin add/change/delete and
action, each management command that writes. Every pair (a writer with itself included) runs at
once, two real threads released together, for a few rounds that start the invoice in different
states (a draft; sent and past due; sent, past due and partly paid). Each writer reads what it acts
on before the race starts, as a client or an operator with a form open would, so the race is
always between a read and another writer's commit. After every round the invariants must hold:

- no 5xx and no exception on any path;
- the ledger balances (`verify_ledger`): totals = Σ lines, Σ payments = amount_paid ≤ total,
  paid ⇒ settled, no void or draft invoice holding money, kept totals exact, no reference
  across organizations;
- an invoice issued at any point still exists; a customer whose delete succeeded stays deleted.

The writers are discovered from the URL resolver, the admin site and the management commands of
the project's apps; one that is neither in WRITERS nor in NOT_WRITERS (with the reason) fails
`test_every_writer_is_in_the_matrix`.
"""

import datetime
import itertools
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from django.contrib import admin
from django.core.management import call_command, get_commands
from django.db import connection
from rest_framework.test import APIClient

from customers.models import Customer
from events.models import Event
from invoices.models import Invoice
from invoices.services import invoice_create, invoice_send
from payments.ledger import ledger_mismatches
from payments.services import payment_record
from tests.admin_helpers import add_url, change_form_data, change_url, delete_url, operator_client
from tests.concurrency import run_concurrently
from tests.conftest import client_for, make_user
from tests.factories import org
from tests.test_isolation_matrix import api_routes
from users.models import Organization, User

PROJECT_APPS = {"users", "events", "customers", "invoices", "payments", "delivery", "billing"}
PAST = {"issue_date": datetime.date(2026, 1, 1), "due_date": datetime.date(2026, 1, 2)}


@dataclass
class Round:
    organization: Organization
    user: User  # an owner of the organization: the API writers act with a token of theirs
    customer: Customer
    invoice: Invoice
    state: str
    api: APIClient = field(default=None)


# --- the writers: each `prepare(round)` reads as its caller would and returns the write to race ---


def _api(rnd: Round) -> APIClient:
    return client_for(rnd.user, rnd.organization)


def _detail(client, rnd):
    return client.get(f"/api/invoices/{rnd.invoice.pk}/").json()


def api_create_invoice(rnd):
    client = _api(rnd)
    body = {
        "customer": rnd.customer.pk,
        "due_date": "2030-01-31",
        "lines": [{"description": "More", "quantity": "1", "unit_price": "5.00"}],
    }
    return lambda: client.post("/api/invoices/", body)


def api_put_invoice(rnd):
    client = _api(rnd)
    read = _detail(client, rnd)
    body = {
        name: read[name]
        for name in ("number", "customer", "currency", "issue_date", "due_date")
        if read[name]
    }
    body["notes"] = "PUT by a client"
    body["lines"] = [
        {k: ln[k] for k in ("description", "quantity", "unit_price", "tax_rate")} for ln in read["lines"]
    ]
    return lambda: client.put(f"/api/invoices/{rnd.invoice.pk}/", body)


def api_patch_invoice(rnd):
    client = _api(rnd)
    if rnd.state == "draft":
        body = {"lines": [{"description": "Replaced", "quantity": "3", "unit_price": "0.29"}]}
    else:
        body = {"notes": "PATCH by a client"}
    return lambda: client.patch(f"/api/invoices/{rnd.invoice.pk}/", body)


def api_delete_invoice(rnd):
    client = _api(rnd)
    return lambda: client.delete(f"/api/invoices/{rnd.invoice.pk}/")


def api_send(rnd):
    client = _api(rnd)
    return lambda: client.post(f"/api/invoices/{rnd.invoice.pk}/send/")


def api_void(rnd):
    client = _api(rnd)
    return lambda: client.post(f"/api/invoices/{rnd.invoice.pk}/void/")


def api_pay_balance(rnd):
    client = _api(rnd)
    balance = _detail(client, rnd)["balance_due"]  # as read: stale once another payment lands
    body = {"invoice": rnd.invoice.pk, "amount": balance, "method": "card"}
    return lambda: client.post("/api/payments/", body)


def api_pay_part(rnd):
    client = _api(rnd)
    body = {"invoice": rnd.invoice.pk, "amount": "2.50", "method": "cash"}
    return lambda: client.post("/api/payments/", body, HTTP_IDEMPOTENCY_KEY=f"part-{rnd.invoice.pk}")


def api_create_customer(rnd):
    client = _api(rnd)
    return lambda: client.post("/api/customers/", {"name": "Another"})


def api_put_customer(rnd):
    client = _api(rnd)
    return lambda: client.put(
        f"/api/customers/{rnd.customer.pk}/", {"name": "Put", "email": "put@example.com"}
    )


def api_patch_customer(rnd):
    client = _api(rnd)
    return lambda: client.patch(f"/api/customers/{rnd.customer.pk}/", {"phone": "+1 555 0100"})


def api_delete_customer(rnd):
    client = _api(rnd)
    return lambda: client.delete(f"/api/customers/{rnd.customer.pk}/")


def admin_add_invoice(rnd):
    operator = operator_client()
    data = {
        "organization": rnd.organization.pk,
        "customer": rnd.customer.pk,
        "currency": "USD",
        "issue_date": "2026-01-01",
        "due_date": "2030-01-31",
        "notes": "added by an operator",
        "number": "",
    }
    return lambda: operator.post(add_url(Invoice), data)


def admin_change_invoice(rnd):
    operator = operator_client()
    changes = {"notes": "changed by an operator"}
    if rnd.state == "draft":
        changes["due_date"] = "2031-01-31"
    data = change_form_data(operator, rnd.invoice, **changes)  # the form as opened, before the race
    return lambda: operator.post(change_url(rnd.invoice), data)


def admin_delete_invoice(rnd):
    operator = operator_client()
    return lambda: operator.post(delete_url(rnd.invoice), {"post": "yes"})


def admin_mark_overdue_action(rnd):
    operator = operator_client()
    data = {"action": "mark_overdue_now", "_selected_action": [rnd.invoice.pk]}
    return lambda: operator.post("/admin/invoices/invoice/", data)


def admin_add_customer(rnd):
    operator = operator_client()
    data = {"organization": rnd.organization.pk, "name": "Added by an operator"}
    return lambda: operator.post(add_url(Customer), data)


def admin_change_customer(rnd):
    operator = operator_client()
    data = change_form_data(operator, rnd.customer, name="Renamed by an operator")
    return lambda: operator.post(change_url(rnd.customer), data)


def admin_delete_customer(rnd):
    operator = operator_client()
    return lambda: operator.post(delete_url(rnd.customer), {"post": "yes"})


def command_mark_overdue(rnd):
    return lambda: call_command("mark_overdue", verbosity=0)


# writer name -> (prepare, the key it stands for in the discovered writers)
WRITERS = {
    "api create invoice": (api_create_invoice, "POST api/invoices/"),
    "api put invoice": (api_put_invoice, "PUT api/invoices/<pk>/"),
    "api patch invoice": (api_patch_invoice, "PATCH api/invoices/<pk>/"),
    "api delete invoice": (api_delete_invoice, "DELETE api/invoices/<pk>/"),
    "api send": (api_send, "POST api/invoices/<pk>/send/"),
    "api void": (api_void, "POST api/invoices/<pk>/void/"),
    "api pay balance as read": (api_pay_balance, "POST api/payments/"),
    "api pay part": (api_pay_part, "POST api/payments/"),
    "api create customer": (api_create_customer, "POST api/customers/"),
    "api put customer": (api_put_customer, "PUT api/customers/<pk>/"),
    "api patch customer": (api_patch_customer, "PATCH api/customers/<pk>/"),
    "api delete customer": (api_delete_customer, "DELETE api/customers/<pk>/"),
    "admin add invoice": (admin_add_invoice, "admin invoices.invoice add"),
    "admin change invoice": (admin_change_invoice, "admin invoices.invoice change"),
    "admin delete invoice": (admin_delete_invoice, "admin invoices.invoice delete"),
    "admin mark overdue": (admin_mark_overdue_action, "admin invoices.invoice action mark_overdue_now"),
    "admin add customer": (admin_add_customer, "admin customers.customer add"),
    "admin change customer": (admin_change_customer, "admin customers.customer change"),
    "admin delete customer": (admin_delete_customer, "admin customers.customer delete"),
    "command mark_overdue": (command_mark_overdue, "command mark_overdue"),
}

# Writers that cannot touch an invoice, a customer or a payment, and why.
NOT_WRITERS = {
    "POST api/register/": "creates a user and a new, empty organization",
    "POST api/login/": "creates a token",
    "POST api/logout/": "deletes the caller's token",
    "POST api/invoices/<pk>/remind/": "queues a reminder email (an outbox row); changes no invoice, customer or payment",
    "admin delivery.outboundemail action retry_failed": "queues a failed email again; changes no invoice, customer or payment",
    "PATCH api/organization/": (
        "the organization's settings: defaults for what is written later (currency, terms, time zone, "
        "prefix), never a change to an invoice, a customer or a payment already written"
    ),
    "POST api/members/": "adds a membership",
    "PATCH api/members/<pk>/": "changes a membership's role",
    "DELETE api/members/<pk>/": "deletes a membership and its tokens; what the member made stays theirs",
    "POST api/api-keys/": "creates a key",
    "DELETE api/api-keys/<pk>/": "revokes a key (the row stays, so what it made still names it)",
    "admin users.user add": "users; deleting one who made rows is refused (PROTECT; test_write_paths)",
    "admin users.user change": "users; never the books",
    "admin users.user delete": "refused while the user made any row (PROTECT; test_write_paths)",
    "admin users.user action delete_selected": "refused while a user made any row (PROTECT)",
    "admin auth.group add": "permission groups",
    "admin auth.group change": "permission groups",
    "admin auth.group delete": "permission groups",
    "admin auth.group action delete_selected": "permission groups",
    "admin users.organization add": "a new organization, with no books",
    "admin users.organization change": (
        "its settings and members (organization_update, the membership services), as PATCH "
        "api/organization/ and api/members/ do: never an invoice, a customer or a payment"
    ),
    "admin users.organization delete": "refused while it has any customer or invoice (PROTECT; test_write_paths)",
    "admin users.apikey action revoke": "revokes keys (the rows stay, so what they made still names them)",
    "command verify_ledger": "reads only",
    "command purge_idempotency_keys": "deletes expired idempotency keys, never a write they recorded",
    "command purge_tokens": "deletes expired tokens",
    "command seed_demo": "creates the demo user's own data, with the services",
    "command send_reminders": (
        "queues reminder emails (outbox rows) and their invoice.reminder_sent events; changes no "
        "invoice, customer or payment"
    ),
    "command queue_documents": "queues PDF versions (outbox rows); changes no invoice, customer or payment",
    "command render_documents": "reads the books and writes PDF files to a directory",
    "command run_worker": (
        "runs the jobs: renders and stores PDFs, sends emails and webhooks; never changes an invoice, a "
        "customer or a payment"
    ),
    "command purge_events": "deletes events past their retention (and their deliveries); never the books",
    "POST api/webhook-endpoints/": "adds a webhook endpoint (sends nothing)",
    "PATCH api/webhook-endpoints/<pk>/": "changes a webhook endpoint",
    "DELETE api/webhook-endpoints/<pk>/": "removes a webhook endpoint and its delivery history",
    "POST api/webhook-endpoints/<pk>/rotate-secret/": "a new signing secret for an endpoint",
    "POST api/webhook-endpoints/<pk>/test/": "queues a ping event to one endpoint; changes no invoice, customer or payment",
    "POST api/webhook-deliveries/<pk>/retry/": "queues a webhook delivery again (an outbox row)",
    "admin events.webhookendpoint action enable": "enables webhook endpoints (endpoint_update)",
    "admin events.webhookendpoint action disable": "disables webhook endpoints (endpoint_update)",
    "admin events.webhookdelivery action retry": "queues webhook deliveries again (delivery_retry)",
}


# --- discovery ---------------------------------------------------------------------------------


def _route_key(method: str, route: str) -> str:
    import re

    return f"{method.upper()} " + re.sub(r"\(\?P<(\w+)>[^)]*\)", r"<\1>", route)


def discovered_writers() -> set[str]:
    found = set()
    for route, pattern in api_routes():
        actions = getattr(pattern.callback, "actions", None)
        if actions:
            methods = set(actions)
        else:
            view_class = getattr(pattern.callback, "view_class", None)
            methods = {m for m in ("post", "put", "patch", "delete") if view_class and hasattr(view_class, m)}
        found |= {_route_key(m, route) for m in methods - {"get", "head", "options"}}
    request = _SuperuserRequest()
    for model, model_admin in admin.site._registry.items():
        label = model._meta.label_lower
        for kind in ("add", "change", "delete"):
            if getattr(model_admin, f"has_{kind}_permission")(request):
                found.add(f"admin {label} {kind}")
        for name in model_admin.get_actions(request):
            found.add(f"admin {label} action {name}")
    for name, app in get_commands().items():
        if app in PROJECT_APPS:
            found.add(f"command {name}")
    return found


class _SuperuserRequest:
    method = "GET"
    GET: dict = {}
    POST: dict = {}

    class user:
        is_active = is_staff = is_superuser = True

        @staticmethod
        def has_perm(perm, obj=None):
            return True

        @staticmethod
        def has_module_perms(app_label):
            return True


def test_every_writer_is_in_the_matrix():
    covered = {key for _, key in WRITERS.values()} | set(NOT_WRITERS)
    missing = discovered_writers() - covered
    assert not missing, f"writers missing from the write-path matrix: {sorted(missing)}"
    assert not {key for _, key in WRITERS.values()} - discovered_writers(), (
        "the matrix names a writer that is gone"
    )


# --- the race ----------------------------------------------------------------------------------

STATES = ("draft", "sent past due", "partly paid past due")


def _setup(user, state: str) -> Round:
    organization = org(user)
    customer = Customer.objects.create(organization=organization, name=f"Customer {Customer.objects.count()}")
    lines = [{"description": "Work", "quantity": Decimal("1"), "unit_price": Decimal("10.00")}]
    invoice = invoice_create(organization=organization, customer_id=customer.pk, lines=lines, **PAST)
    if state != "draft":
        invoice_send(organization=organization, invoice_id=invoice.pk)
    if state == "partly paid past due":
        payment_record(
            organization=organization, invoice_id=invoice.pk, amount=Decimal("2.50"), method="card"
        )
    return Round(
        organization=organization,
        user=user,
        customer=customer,
        invoice=Invoice.objects.get(pk=invoice.pk),
        state=state,
    )


def _status(outcome) -> int | None:
    return getattr(outcome, "status_code", None)


def _customer_deleted(name: str, outcome) -> bool:
    status = _status(outcome)
    if name == "api delete customer":
        return status == 204
    return False  # the admin redirects on success and refusal alike: the row decides (below)


PAIRS = list(itertools.combinations_with_replacement(sorted(WRITERS), 2))


def _events_out_of_step() -> list[str]:
    """The events whose invoice disagrees with itself: its payments not adding up to its
    `amount_paid`, or a balance other than total - amount_paid. An event shows the invoice as it was
    committed, so a writer that read its payments before another writer's commit and its invoice
    after (mark_overdue's statement, waiting for a lock) shows here."""
    out = []
    for event_id, data in Event.objects.filter(object_type="invoice").values_list("id", "data"):
        shown = data["object"]
        if "payments" not in shown:
            continue
        paid = sum((Decimal(payment["amount"]) for payment in shown["payments"]), Decimal(0))
        amount_paid, total = Decimal(shown["amount_paid"]), Decimal(shown["total"])
        if paid != amount_paid or Decimal(shown["balance_due"]) != total - amount_paid:
            out.append(f"{event_id} {shown['status']}: payments {paid}, amount_paid {amount_paid}")
    return out


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("first", "second"), PAIRS, ids=[f"{a} | {b}" for a, b in PAIRS])
def test_two_writers_at_once_keep_the_books(first, second):
    user = make_user("owner")
    # PostgreSQL (row locks, real interleaving): every starting state. SQLite serializes writes, so
    # there a pair runs from one state, a different one for each pair.
    states = STATES if connection.vendor == "postgresql" else [STATES[PAIRS.index((first, second)) % 3]]
    for state in states:
        rnd = _setup(user, state)
        issued_before = rnd.invoice.status != "draft"
        writes = [WRITERS[first][0](rnd), WRITERS[second][0](rnd)]

        outcomes = run_concurrently(lambda i, writes=writes: writes[i](), 2)

        context = f"{first} | {second}, starting {state}: {outcomes}"
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        assert not errors, context
        assert all((_status(o) or 200) < 500 for o in outcomes), context
        assert list(ledger_mismatches()) == [], context
        assert _events_out_of_step() == [], context
        invoice = Invoice.objects.filter(pk=rnd.invoice.pk).first()
        sent_now = any(
            name == "api send" and _status(o) == 200
            for name, o in zip((first, second), outcomes, strict=True)
        )
        if issued_before or sent_now:
            assert invoice is not None, f"an issued invoice was deleted: {context}"
            assert invoice.status != "draft", context
        for name, outcome in zip((first, second), outcomes, strict=True):
            if _customer_deleted(name, outcome):
                assert not Customer.objects.filter(pk=rnd.customer.pk).exists(), f"resurrected: {context}"
        if invoice is not None:  # a customer with an invoice is never deleted
            assert Customer.objects.filter(pk=rnd.customer.pk).exists(), context
