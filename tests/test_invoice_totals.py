"""InvoiceTotals: the counts and sums per (organization, currency, status) that the database keeps.

The unfiltered summary and the unfiltered list's `count` read them; any filter (here: every status
named, which selects the same invoices) takes the aggregate over the invoices instead. So each test
compares the two paths, and checks every row of the table against a fresh aggregate
(`totals_mismatches`, part of verify_ledger), after every kind of write: the services, bulk
UPDATEs and DELETEs, concurrent payments beside mark_overdue.
"""

import contextlib
import datetime
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from invoices.models import Invoice, InvoiceTotals
from invoices.services import invoice_mark_overdue
from payments.ledger import ledger_mismatches, totals_mismatches
from payments.services import payment_record
from tests.concurrency import run_concurrently
from tests.conftest import client_for
from tests.factories import LinePayloadFactory, org
from tests.invoice_helpers import INVOICES, SUMMARY, create_invoice, invoice_url, send_invoice

ALL_STATUSES = "&".join(f"status={status}" for status in Invoice.Status.values)
PAST = {"issue_date": "2026-01-01", "due_date": "2026-01-31"}
JUNE_1 = datetime.datetime(2026, 6, 1, 12, tzinfo=datetime.UTC)  # June 1 in every organization's zone here


def assert_totals_exact() -> None:
    assert list(totals_mismatches()) == []


def assert_both_paths_agree(api) -> dict:
    """The kept summary and count equal the aggregated ones; returns the summary."""
    kept, aggregated = api.get(SUMMARY), api.get(f"{SUMMARY}?{ALL_STATUSES}")
    assert kept.status_code == aggregated.status_code == 200
    assert kept.json() == aggregated.json()
    listed, filtered = api.get(INVOICES), api.get(f"{INVOICES}?{ALL_STATUSES}")
    assert listed.json()["count"] == filtered.json()["count"] == kept.json()["count"]
    assert_totals_exact()
    return kept.json()


def pay(api, invoice_id: int, amount: str) -> None:
    response = api.post("/api/payments/", {"invoice": invoice_id, "amount": amount, "method": "card"})
    assert response.status_code == 201, response.content


@pytest.mark.django_db
def test_every_step_of_the_lifecycle_is_counted(alice_api, alice_customer):
    assert assert_both_paths_agree(alice_api)["totals"] == []

    draft = create_invoice(
        alice_api, alice_customer, [LinePayloadFactory(unit_price="100.00", tax_rate="20.00")]
    )
    assert_both_paths_agree(alice_api)
    # The draft's lines, then its currency, change: its totals move from one row to another.
    response = alice_api.patch(
        invoice_url(draft["id"]),
        {"lines": [LinePayloadFactory(quantity="3.000", unit_price="33.33")]},
        format="json",
    )
    assert response.status_code == 200, response.content
    assert_both_paths_agree(alice_api)
    assert alice_api.patch(invoice_url(draft["id"]), {"currency": "EUR"}, format="json").status_code == 200
    assert_both_paths_agree(alice_api)

    paid = create_invoice(alice_api, alice_customer, [LinePayloadFactory(unit_price="250.00")])
    send_invoice(alice_api, paid["id"])
    pay(alice_api, paid["id"], "10.01")
    assert_both_paths_agree(alice_api)
    pay(alice_api, paid["id"], "239.99")
    assert_both_paths_agree(alice_api)

    late = create_invoice(alice_api, alice_customer, [LinePayloadFactory(unit_price="80.00")], **PAST)
    send_invoice(alice_api, late["id"])
    assert invoice_mark_overdue(now=JUNE_1) == 1
    assert_both_paths_agree(alice_api)
    # Notes of a sent invoice change nothing that is counted.
    assert alice_api.patch(invoice_url(late["id"]), {"notes": "Called"}, format="json").status_code == 200
    assert alice_api.post(invoice_url(late["id"], "void")).status_code == 200
    assert_both_paths_agree(alice_api)

    gone = create_invoice(alice_api, alice_customer, [LinePayloadFactory(unit_price="5.00")])
    assert_both_paths_agree(alice_api)
    assert alice_api.delete(invoice_url(gone["id"])).status_code == 204

    summary = assert_both_paths_agree(alice_api)
    assert summary["by_status"] == {"draft": 1, "sent": 0, "overdue": 0, "paid": 1, "void": 1}
    assert summary["totals"] == [
        {
            "currency": "EUR",
            "invoiced": "0.00",
            "collected": "0.00",
            "outstanding": "0.00",
            "overdue": "0.00",
        },
        {
            "currency": "USD",
            "invoiced": "250.00",
            "collected": "250.00",
            "outstanding": "0.00",
            "overdue": "0.00",
        },
    ]
    rows = set(
        InvoiceTotals.objects.filter(count__gt=0).values_list(
            "currency", "status", "shard", "count", "total_minor"
        )
    )
    assert rows == {  # in cents: USD and EUR have two places
        ("EUR", "draft", draft["id"] % 16, 1, 9999),
        ("USD", "paid", paid["id"] % 16, 1, 25000),
        ("USD", "void", late["id"] % 16, 1, 8000),
    }


@contextlib.contextmanager
def issued_invoices_deletable():
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no pending deferred checks under ALTER TABLE
        cursor.execute("ALTER TABLE invoices_invoice DISABLE TRIGGER invoice_issued_never_deleted")
        try:
            yield
        finally:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute("ALTER TABLE invoices_invoice ENABLE TRIGGER invoice_issued_never_deleted")
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")


@pytest.mark.django_db
def test_bulk_updates_and_deletes_are_counted(alice, bob, make_invoice, make_customer):
    # Amounts whose hundredths a float gets wrong (0.29 * 100 = 28.999...): SQLite stores REAL.
    sent = {}
    for user in (alice, bob):
        sent[user] = [
            make_invoice(
                user, amount=amount, issue_date=datetime.date(2026, 1, 1), due_date=datetime.date(2026, 1, 2)
            )
            for amount in ("0.29", "1.15", "4.35")
        ]
        make_invoice(user, amount="7.77", send=False)
    payment_record(
        organization=org(alice), invoice_id=sent[alice][2].pk, amount=Decimal("1.15"), method="card"
    )
    assert_totals_exact()
    assert (
        sum(InvoiceTotals.objects.filter(organization_id=org(alice).pk).values_list("paid_minor", flat=True))
        == 115
    )

    assert invoice_mark_overdue(now=JUNE_1) == 6  # one move over both organizations (one time zone)
    assert_totals_exact()
    assert (
        Invoice.objects.filter(organization=org(alice)).update(currency="EUR") == 4
    )  # every key changes at once
    assert_totals_exact()
    assert Invoice.objects.filter(status="draft").delete()[0] >= 2
    assert_totals_exact()

    # Sent and overdue ones too, in bulk: PostgreSQL refuses deleting issued invoices (a trigger),
    # so this stands for an operator's deliberate erasure with the guard switched off.
    with issued_invoices_deletable():
        assert Invoice.objects.filter(organization=org(bob)).delete()[0] >= 3
    assert_totals_exact()
    assert not InvoiceTotals.objects.filter(organization_id=org(bob).pk).exclude(count=0).exists()
    overdue = InvoiceTotals.objects.filter(organization_id=org(alice).pk, currency="EUR", status="overdue")
    assert sum(overdue.values_list("total_minor", flat=True)) == 29 + 115 + 435


@pytest.mark.django_db
def test_the_kept_count_pages_like_a_counted_one(alice_api, bob_api, alice_customer):
    for _ in range(3):
        create_invoice(alice_api, alice_customer)
    page = alice_api.get(f"{INVOICES}?page_size=2&page=2").json()
    assert page["count"] == 3
    assert len(page["results"]) == 1
    assert page["next"] is None
    assert page["previous"]
    assert alice_api.get(f"{INVOICES}?page=3&page_size=2").status_code == 404
    assert alice_api.get(f"{INVOICES}?page=3&page_size=2&{ALL_STATUSES}").status_code == 404
    empty = bob_api.get(INVOICES).json()
    assert (empty["count"], empty["results"]) == (0, [])
    assert bob_api.get(SUMMARY).json() == {
        "count": 0,
        "by_status": dict.fromkeys(Invoice.Status.values, 0),
        "totals": [],
    }


@pytest.mark.django_db
def test_the_rows_listed_come_from_the_invoices_whatever_the_kept_count(alice, alice_api, alice_customer):
    """Should the kept totals ever be wrong (verify_ledger says so), a page still lists the invoices
    there are; only `count` and the page links follow the kept figure."""
    for _ in range(3):
        create_invoice(alice_api, alice_customer)
    InvoiceTotals.objects.filter(organization_id=org(alice).pk).update(count=0)
    page = alice_api.get(INVOICES).json()
    assert page["count"] == 0
    assert len(page["results"]) == 3


@pytest.mark.django_db
def test_an_unfiltered_summary_and_count_are_one_small_query_each(
    alice_api, alice_customer, django_assert_num_queries
):
    for _ in range(5):
        create_invoice(alice_api, alice_customer)
    with django_assert_num_queries(2) as captured:  # the token, then the kept totals
        assert alice_api.get(SUMMARY).json()["count"] == 5
    assert "invoices_invoicetotals" in captured.captured_queries[-1]["sql"]
    with django_assert_num_queries(3) as captured:  # the token, the kept count, the page
        assert alice_api.get(INVOICES).json()["count"] == 5
    assert "invoices_invoicetotals" in captured.captured_queries[1]["sql"]
    with django_assert_num_queries(2) as captured:  # a filter: the aggregate over the invoices
        alice_api.get(f"{SUMMARY}?status=draft")
    assert "invoices_invoicetotals" not in captured.captured_queries[-1]["sql"]


@pytest.mark.django_db
def test_the_migrations_fill_rebuilds_the_table_from_the_invoices(alice, bob, make_invoice):
    from importlib import import_module

    fill = import_module("invoices.migrations.0003_money_per_currency").FILL
    for user in (alice, bob):
        make_invoice(user, amount="12.34")
        make_invoice(user, amount="99999999999.99", send=False)
        make_invoice(user, amount="12345", currency="JPY")
        make_invoice(user, amount="999999999999.999", currency="KWD", send=False)

    def kept():  # rows of zeros (a draft that was sent leaves one) are as good as none
        return set(InvoiceTotals.objects.exclude(count=0, total_minor=0, paid_minor=0).values_list())

    expected = kept()
    assert len(expected) == 8
    # Each currency in its own minor unit: cents, yen, fils.
    assert {
        (currency, status, int(total))
        for currency, status, total in InvoiceTotals.objects.filter(
            organization_id=org(alice).pk, count=1
        ).values_list("currency", "status", "total_minor")
    } == {
        ("USD", "sent", 1234),
        ("USD", "draft", 9999999999999),
        ("JPY", "sent", 12345),
        ("KWD", "draft", 999999999999999),
    }
    InvoiceTotals.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute(fill[connection.vendor])
    assert kept() == expected
    assert_totals_exact()


@pytest.mark.django_db
def test_the_invoice_table_has_its_totals_triggers():
    """SQLite drops a table's triggers when a migration rebuilds the table (most changes to Invoice
    do): such a migration must create them again, or this fails."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'invoices_invoice'"
            )
        else:
            cursor.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'invoices_invoice'::regclass AND NOT tgisinternal "
                "AND tgenabled = 'O'"
            )
        names = {row[0] for row in cursor.fetchall() if row[0].startswith("invoice_totals_")}
    expected = {"invoice_totals_insert", "invoice_totals_update", "invoice_totals_delete"}
    if connection.vendor == "postgresql":
        expected.add("invoice_totals_truncate")
    assert names == expected


@pytest.mark.django_db
def test_verify_ledger_reports_totals_that_disagree_with_the_invoices(alice, make_invoice):
    invoice = make_invoice(alice, amount="50.00")
    call_command("verify_ledger")
    InvoiceTotals.objects.filter(organization_id=org(alice).pk, status="sent").update(paid_minor=1)
    assert list(ledger_mismatches(organization_id=org(alice).pk)) == [
        f"invoice totals of organization {org(alice).pk} in USD, sent, shard {invoice.pk % 16}: kept (count, total, paid "
        "in minor units) (1, 5000, 1), the invoices give (1, 5000, 0)"
    ]
    with pytest.raises(CommandError, match="1 mismatch found"):
        call_command("verify_ledger")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_payments_creates_and_mark_overdue_keep_the_totals_exact(
    alice, make_invoice, alice_customer
):
    """One organization, one currency, and every payer's invoice in the same shard: all writers change the
    same few rows of the table at once (mark_overdue: all of them, in one statement)."""
    rounds, payers = 3, 6
    for _ in range(rounds):
        made = [
            make_invoice(
                alice,
                alice_customer,
                amount="30.00",
                issue_date=datetime.date(2026, 1, 1),
                due_date=datetime.date(2026, 1, 2),
            )
            for _ in range(InvoiceTotals.SHARDS * payers)
        ]
        invoices = [invoice for invoice in made if invoice.pk % InvoiceTotals.SHARDS == made[0].pk % 16]
        assert len(invoices) == payers
        clients = [client_for(alice) for _ in range(payers + 2)]

        def work(i: int, invoices=invoices, clients=clients):
            if i < payers:  # pay in two parts: sent (or overdue) stays, then paid
                for amount in ("10.00", "20.00"):
                    body = {"invoice": invoices[i].pk, "amount": amount, "method": "card"}
                    response = clients[i].post("/api/payments/", body)
                    assert response.status_code == 201, response.content
                return "paid"
            if i == payers:
                return invoice_mark_overdue(now=JUNE_1)
            created = create_invoice(clients[i], alice_customer, [LinePayloadFactory(unit_price="1.00")])
            return send_invoice(clients[i], created["id"])["status"]

        results = run_concurrently(work, payers + 2)
        assert not [r for r in results if isinstance(r, BaseException)], results
        assert_totals_exact()
        assert list(ledger_mismatches()) == []
    summary = client_for(alice).get(SUMMARY).json()
    assert summary["by_status"]["paid"] == rounds * payers
    assert Decimal(summary["totals"][0]["collected"]) == Decimal("30.00") * rounds * payers
