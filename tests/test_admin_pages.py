"""What an operator sees in the admin, and what a save there writes (or does not).

The invoice's page shows its payments, its balance due and its status history; a paid or void
invoice's page offers nothing to save; a save that changes nothing writes nothing. `seed_demo`
makes the operator a new user logs in with.
"""

import io
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.admin.models import LogEntry
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from invoices.models import Invoice
from invoices.services import invoice_void
from payments.models import Payment
from payments.services import payment_record
from tests.admin_helpers import change_form_data, change_url, form_as_posted, messages_of, operator_client
from tests.factories import org

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
def test_the_history_and_payments_are_read_only_on_the_invoice_page(alice, make_invoice):
    invoice = make_invoice(alice, amount="10.00")
    pay(alice, invoice, "1.00")

    response = operator_client().get(change_url(invoice))

    inlines = response.context["inline_admin_formsets"]
    assert {inline.opts.model.__name__ for inline in inlines} == {"Payment", "InvoiceStatusChange"}
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
