"""Issue 14's migration and the rule that a currency's places never change under stored data.

The migration (invoices/0003_money_per_currency, payments/0003_money_per_currency) runs here on a
database holding books written before it, through the historical models, as the old code wrote them
(every amount with 2 places, InvoiceTotals in hundredths filled by the old triggers): it changes no
value, refills InvoiceTotals in each currency's minor units, leaves working triggers behind (SQLite
drops a rebuilt table's triggers), and refuses, naming the rows and changing nothing, an amount its
currency cannot hold. Each test migrates back to the latest state in a `finally`, so that every other
test sees the full schema.

Then the system check billing.E020 (a later ISO table giving a code other places than recorded), and
the model's and the database's own refusals: withdrawn codes, new codes, JPY amounts with cents.
"""

import contextlib
import datetime
import re
from decimal import ROUND_HALF_UP, Decimal
from importlib import import_module
from unittest import mock

import pytest
from django.core import checks
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from billing import currencies
from billing.exceptions import BusinessRuleViolation
from invoices.models import Invoice, InvoiceTotals, Line
from payments.ledger import totals_mismatches
from payments.models import Payment
from payments.services import payment_record
from users.models import Organization

D = Decimal
# The last migrations before issue 14's, and the ones it adds.
BEFORE = [("invoices", "0002_invoice_totals"), ("payments", "0002_organization_references")]
MONEY_MIGRATIONS = {("invoices", "0003_money_per_currency"), ("payments", "0003_money_per_currency")}
MONEY_MIGRATION_MODULE = "invoices.migrations.0003_money_per_currency"

# The money columns, and (PostgreSQL) their type before and after.
MONEY_COLUMNS = {
    "invoices_invoice": ("subtotal", "tax_total", "total", "amount_paid"),
    "invoices_line": ("amount", "tax_amount"),
    "payments_payment": ("amount",),
}
PRICE_COLUMN = ("invoices_line", "unit_price")
OLD_TYPE, NEW_MONEY_TYPE, NEW_PRICE_TYPE = (14, 2), (15, 3), (16, 4)
TODAY = datetime.date(2026, 3, 2)


def cents(value: Decimal) -> Decimal:
    return value.quantize(D("0.01"), rounding=ROUND_HALF_UP)


# --- migrating ------------------------------------------------------------------------------------


def latest_nodes() -> list[tuple[str, str]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(targets)


def applied() -> set[tuple[str, str]]:
    return set(MigrationRecorder(connection).applied_migrations())


def empty_the_books() -> None:
    """Every invoice, line, payment and total gone (so that a test that failed midway leaves books
    the migration accepts). PostgreSQL refuses deleting an issued invoice, but not a TRUNCATE."""
    tables = [
        "payments_payment",
        "invoices_line",
        "invoices_invoicestatuschange",
        "invoices_invoice",
        "invoices_invoicetotals",
    ]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)} CASCADE")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")  # noqa: S608


@contextlib.contextmanager
def before_the_money_migrations():
    """The database migrated back to before issue 14 (yielding the historical apps of that state),
    and, whatever happens, forward to the latest state at the end."""
    latest = latest_nodes()
    try:
        migrate(BEFORE)
        assert not (applied() & MONEY_MIGRATIONS)
        yield MigrationExecutor(connection).loader.project_state(BEFORE).apps
    finally:
        try:
            migrate(latest)
        except Exception:
            empty_the_books()
            migrate(latest)


def column_types() -> dict[tuple[str, str], tuple[int, int]]:
    """(table, column) -> (precision, scale) of the money and price columns (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name, numeric_precision, numeric_scale FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name IN %s",
            [tuple(MONEY_COLUMNS)],
        )
        found = {(table, column): (precision, scale) for table, column, precision, scale in cursor.fetchall()}
    wanted = [(table, column) for table, columns in MONEY_COLUMNS.items() for column in columns]
    return {key: found[key] for key in [*wanted, PRICE_COLUMN]}


def totals_columns() -> set[str]:
    return {
        column.name
        for column in connection.introspection.get_table_description(
            connection.cursor(), InvoiceTotals._meta.db_table
        )
    }


def sqlite_triggers() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        return {name for (name,) in cursor.fetchall()}


TOTALS_TRIGGERS = {"invoice_totals_insert", "invoice_totals_update", "invoice_totals_delete"}
REFERENCE_TRIGGERS = set(import_module("payments.migrations.0002_organization_references").SQLITE_TRIGGERS)


# --- the books as the old code wrote them -------------------------------------------------------------


class OldBooks:
    """Writes invoices, lines and payments through the historical models of the state before issue 14,
    as the old services did: line amounts and tax rounded half-up to cents, the totals their sums, a
    payment's amount added to the invoice's amount_paid. The old triggers fill InvoiceTotals."""

    def __init__(self, apps):
        self.apps = apps
        self.Invoice = apps.get_model("invoices", "Invoice")
        self.Line = apps.get_model("invoices", "Line")
        self.Payment = apps.get_model("payments", "Payment")
        self.InvoiceTotals = apps.get_model("invoices", "InvoiceTotals")
        organizations = apps.get_model("users", "Organization").objects
        customers = apps.get_model("customers", "Customer").objects
        self.organization = organizations.create(name="Old books", default_currency="USD")
        self.customer = customers.create(organization=self.organization, name="Acme Corp")
        self.other_organization = organizations.create(name="Other books", default_currency="EUR")
        self.other_customer = customers.create(organization=self.other_organization, name="Globex")
        self.numbers = 0

    def invoice(self, currency, status, lines, payments=(), *, exact=False):
        """`lines`: (quantity, unit_price, tax_rate); `exact=True`: (quantity, unit_price, tax_rate,
        amount, tax_amount) as given (an amount the old code would not have computed)."""
        rows = []
        for quantity, unit_price, tax_rate, *given in lines:
            if exact:
                amount, tax = given
            else:
                amount = cents(D(quantity) * D(unit_price))
                tax = cents(amount * D(tax_rate) / 100)
            rows.append((D(quantity), D(unit_price), D(tax_rate), amount, tax))
        subtotal = sum((row[3] for row in rows), D("0.00"))
        tax_total = sum((row[4] for row in rows), D("0.00"))
        paid = sum((D(amount) for amount in payments), D("0.00"))
        now = timezone.now()
        issued = status != "draft"
        if issued:
            self.numbers += 1
        invoice = self.Invoice.objects.create(
            organization=self.organization,
            customer=self.customer,
            number=f"OLD-{self.numbers}" if issued else None,
            status=status,
            currency=currency,
            issue_date=TODAY,
            due_date=TODAY + datetime.timedelta(days=30),
            subtotal=subtotal,
            tax_total=tax_total,
            total=subtotal + tax_total,
            amount_paid=paid,
            sent_at=now if issued else None,
            paid_at=now if status == "paid" else None,
        )
        for position, (quantity, unit_price, tax_rate, amount, tax) in enumerate(rows, start=1):
            self.Line.objects.create(
                organization=self.organization,
                invoice=invoice,
                position=position,
                description=f"Line {position}",
                quantity=quantity,
                unit_price=unit_price,
                tax_rate=tax_rate,
                amount=amount,
                tax_amount=tax,
            )
        for amount in payments:
            self.Payment.objects.create(
                organization=self.organization,
                invoice=invoice,
                amount=D(amount),
                method="card",
                paid_at=TODAY,
            )
        return invoice

    def snapshot(self, invoice_model, line_model, payment_model) -> dict:
        """Every stored amount, by table and row."""
        return {
            "invoices_invoice": {
                pk: values
                for pk, *values in invoice_model.objects.order_by("pk").values_list(
                    "pk", "currency", "status", "subtotal", "tax_total", "total", "amount_paid"
                )
            },
            "invoices_line": {
                pk: values
                for pk, *values in line_model.objects.order_by("pk").values_list(
                    "pk", "invoice_id", "quantity", "unit_price", "tax_rate", "amount", "tax_amount"
                )
            },
            "payments_payment": {
                pk: values
                for pk, *values in payment_model.objects.order_by("pk").values_list(
                    "pk", "invoice_id", "amount"
                )
            },
        }

    def old_snapshot(self) -> dict:
        return self.snapshot(self.Invoice, self.Line, self.Payment)

    def old_totals(self) -> set[tuple]:
        return set(
            self.InvoiceTotals.objects.exclude(count=0).values_list(
                "organization_id", "currency", "status", "shard", "count", "total_cents", "paid_cents"
            )
        )


def new_snapshot(books: OldBooks) -> dict:
    return books.snapshot(Invoice, Line, Payment)


def kept_totals() -> set[tuple]:
    return set(
        InvoiceTotals.objects.exclude(count=0).values_list(
            "organization_id", "currency", "status", "shard", "count", "total_minor", "paid_minor"
        )
    )


def totals_of(organization_id: int, currency: str, status: str) -> tuple[int, int, int]:
    """(count, total_minor, paid_minor) of one organization, currency and status, over its shards."""
    rows = InvoiceTotals.objects.filter(organization_id=organization_id, currency=currency, status=status)
    found = list(rows.values_list("count", "total_minor", "paid_minor"))
    return tuple(int(sum(row[i] for row in found)) for i in range(3))


def expected_totals(snapshot: dict) -> set[tuple]:
    """InvoiceTotals as the invoices give them, in each currency's minor units."""
    totals: dict[tuple, list] = {}
    organization_of = dict(Invoice.objects.values_list("pk", "organization_id"))
    for pk, (currency, status, _subtotal, _tax, total, paid) in snapshot["invoices_invoice"].items():
        key = (organization_of[pk], currency, status, pk % InvoiceTotals.SHARDS)
        row = totals.setdefault(key, [0, D(0), D(0)])
        scale = D(10) ** currencies.minor_units(currency)
        row[0] += 1
        row[1] += total * scale
        row[2] += paid * scale
    return {(*key, n, total, paid) for key, (n, total, paid) in totals.items()}


# --- 1. existing books: no value changes -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_every_amount_and_refills_the_totals_in_minor_units():
    with before_the_money_migrations() as apps:
        books = OldBooks(apps)
        usd_draft = books.invoice("USD", "draft", [("2", "12.50", "10")])  # 25.00 + 2.50
        # The largest total the old columns held, partly paid.
        usd_large = books.invoice(
            "USD", "sent", [("1", "999999999900.00", "0"), ("3", "33.33", "0")], payments=["0.29"]
        )
        usd_paid = books.invoice(
            "USD", "paid", [("1.5", "0.29", "20")], payments=["0.29", "0.24"]
        )  # 0.44+0.09
        # Hundredths a float gets wrong (SQLite stores REAL): 0.29, 1.15, 4.35.
        eur_sent = books.invoice("EUR", "sent", [("1", "1.15", "0"), ("1", "4.35", "19")], payments=["1.15"])
        eur_paid = books.invoice("EUR", "paid", [("1", "10.42", "20")], payments=["10.01", "2.49"])  # 12.50
        books.invoice("EUR", "draft", [("3", "0.10", "0")])
        # Amounts the new places hold as they are: whole yen, KWD with 2 of its 3 places.
        jpy_sent = books.invoice("JPY", "sent", [("2", "500", "10")], payments=["500"])  # 1000 + 100
        kwd_sent = books.invoice("KWD", "sent", [("1", "1.25", "0")], payments=["0.75"])
        old = books.old_snapshot()
        old_totals = books.old_totals()
        if connection.vendor == "postgresql":
            assert set(column_types().values()) == {OLD_TYPE}

        migrate(latest_nodes())

        assert applied() >= MONEY_MIGRATIONS
        new = new_snapshot(books)
        # The same rows, and every amount the same value (12.50 == 12.500: Decimal compares values).
        assert new == old
        for table, rows in old.items():
            assert rows.keys() == new[table].keys()
        assert Invoice.objects.get(pk=usd_draft.pk).total == D("27.50")
        assert Invoice.objects.get(pk=usd_large.pk).total == D("999999999999.99")
        assert Invoice.objects.get(pk=usd_paid.pk).amount_paid == D("0.53")
        assert Invoice.objects.get(pk=eur_sent.pk).total == D("6.33")
        assert Invoice.objects.get(pk=eur_paid.pk).total == D("12.50")
        assert sorted(Payment.objects.filter(invoice_id=eur_paid.pk).values_list("amount", flat=True)) == [
            D("2.49"),
            D("10.01"),
        ]
        if connection.vendor == "postgresql":
            types = column_types()
            assert types.pop(PRICE_COLUMN) == NEW_PRICE_TYPE
            assert set(types.values()) == {NEW_MONEY_TYPE}

        # InvoiceTotals: renamed to minor units and refilled from the invoices.
        assert {"total_minor", "paid_minor"} <= totals_columns()
        assert not {"total_cents", "paid_cents"} & totals_columns()
        kept = kept_totals()
        assert kept == expected_totals(new)
        # Cents for 2-place currencies: the old rows, unchanged (total_minor == total * 100).
        two_places = {row for row in kept if currencies.minor_units(row[1]) == 2}
        assert two_places == {row for row in old_totals if currencies.minor_units(row[1]) == 2}
        assert totals_of(books.organization.pk, "USD", "sent") == (1, 99999999999999, 29)
        # Yen and fils: no longer hundredths.
        jpy = Invoice.objects.get(pk=jpy_sent.pk)
        assert jpy.total == D("1100")
        assert totals_of(books.organization.pk, "JPY", "sent") == (1, 1100, 500)
        assert totals_of(books.organization.pk, "KWD", "sent") == (1, 1250, 750)
        assert list(totals_mismatches()) == []

        # The triggers work after the migration: an insert, an update and a delete are counted.
        if connection.vendor == "sqlite":
            assert sqlite_triggers() >= TOTALS_TRIGGERS | REFERENCE_TRIGGERS
        organization = Organization.objects.get(pk=books.organization.pk)
        before = totals_of(organization.pk, "USD", "sent")
        Invoice.objects.create(
            organization=organization,
            customer_id=books.customer.pk,
            number="NEW-1",
            status="sent",
            currency="USD",
            issue_date=TODAY,
            due_date=TODAY,
            subtotal=D("7.77"),
            total=D("7.77"),
            sent_at=timezone.now(),
            public_token="new-1-token",  # an issued invoice has its hosted page's token (issue 15)
        )
        assert totals_of(organization.pk, "USD", "sent") == (before[0] + 1, before[1] + 777, before[2])
        payment_record(organization=organization, invoice_id=usd_large.pk, amount=D("0.01"), method="card")
        assert totals_of(organization.pk, "USD", "sent") == (before[0] + 1, before[1] + 777, before[2] + 1)
        payment_record(organization=organization, invoice_id=kwd_sent.pk, amount=D("0.001"), method="card")
        assert totals_of(organization.pk, "KWD", "sent") == (1, 1250, 751)
        Invoice.objects.get(pk=usd_draft.pk).delete()
        assert totals_of(organization.pk, "USD", "draft") == (0, 0, 0)
        assert list(totals_mismatches()) == []

        # The references of payments/0002 hold on the rebuilt tables (on SQLite: their triggers).
        other = books.other_organization.pk
        with pytest.raises(IntegrityError, match="payment_invoice_same_org"), transaction.atomic():
            Payment.objects.create(
                organization_id=other, invoice_id=eur_sent.pk, amount=D("1.00"), method="card", paid_at=TODAY
            )
        with pytest.raises(IntegrityError, match="line_invoice_same_org"), transaction.atomic():
            Line.objects.create(
                organization_id=other,
                invoice_id=eur_sent.pk,
                position=9,
                description="Not theirs",
                quantity=D("1"),
                unit_price=D("1.00"),
                amount=D("1.00"),
                tax_amount=D("0.00"),
            )
        with pytest.raises(IntegrityError, match="invoice_customer_same_org"), transaction.atomic():
            Invoice.objects.filter(pk=eur_sent.pk).update(customer_id=books.other_customer.pk)
        # Moved with a customer of the other organization, the invoice leaves its lines and payment behind.
        with pytest.raises(IntegrityError, match=r"(line|payment)_invoice_same_org"), transaction.atomic():
            Invoice.objects.filter(pk=eur_sent.pk).update(
                organization_id=other, customer_id=books.other_customer.pk
            )
        assert Invoice.objects.get(pk=eur_sent.pk).organization_id == books.organization.pk
        assert list(totals_mismatches()) == []


# --- 2. an amount its currency cannot hold: the migration stops, naming it ----------------------------------


def assert_names(message: str, table: str, pk: int, currency: str, field: str, value: str) -> None:
    """One line (or clause) of `message` names the row: table, id, currency, field and value."""
    pattern = rf"{table}\b.*?\b{pk}\b.*?\b{currency}\b.*?\b{field}\b.*?(?<![\d.]){re.escape(value)}0*(?![\d])"
    assert re.search(pattern, message), f"{table} {pk} {currency} {field} {value} not named in: {message}"


@pytest.mark.parametrize("offending", ["invoice", "payment"])
@pytest.mark.django_db(transaction=True)
def test_an_amount_its_currency_cannot_hold_stops_the_migration_before_anything_changes(offending):
    with before_the_money_migrations() as apps:
        books = OldBooks(apps)
        books.invoice("USD", "sent", [("1", "12.50", "0")], payments=["2.50"])
        if offending == "invoice":
            # 12.50 yen, as the old code accepted: the invoice's subtotal and total, and its line.
            bad = books.invoice("JPY", "sent", [("1", "12.50", "0")])
            bad_line = books.Line.objects.get(invoice=bad)
        else:
            # Whole-yen totals, paid with 999.50 + 0.50 yen.
            bad = books.invoice("JPY", "sent", [("1", "2000", "0")], payments=["999.50", "0.50"])
            bad_payments = list(books.Payment.objects.filter(invoice=bad).order_by("pk"))
        old = books.old_snapshot()
        old_totals = books.old_totals()
        old_applied = applied()
        old_triggers = sqlite_triggers() if connection.vendor == "sqlite" else set()

        with pytest.raises(Exception) as refused:  # noqa: PT011 (the message is what is asserted)
            migrate(latest_nodes())

        message = str(refused.value)
        if offending == "invoice":
            assert_names(message, "invoices_invoice", bad.pk, "JPY", "total", "12.5")
            assert_names(message, "invoices_invoice", bad.pk, "JPY", "subtotal", "12.5")
            assert_names(message, "invoices_line", bad_line.pk, "JPY", "amount", "12.5")
        else:
            assert_names(message, "payments_payment", bad_payments[0].pk, "JPY", "amount", "999.5")
            assert_names(message, "payments_payment", bad_payments[1].pk, "JPY", "amount", "0.5")
            assert "invoices_invoice" not in message  # its amounts are whole yen
        # Nothing changed: no migration recorded, the columns, the rows, the totals and the triggers as they were.
        assert applied() == old_applied
        assert not (applied() & MONEY_MIGRATIONS)
        if connection.vendor == "postgresql":
            assert set(column_types().values()) == {OLD_TYPE}
        else:
            assert sqlite_triggers() == old_triggers
        assert {"total_cents", "paid_cents"} <= totals_columns()
        assert books.old_snapshot() == old
        assert books.old_totals() == old_totals

        # Fixed, the books migrate.
        if offending == "invoice":
            books.Line.objects.filter(pk=bad_line.pk).update(unit_price=D("13"), amount=D("13"))
            books.Invoice.objects.filter(pk=bad.pk).update(subtotal=D("13"), total=D("13"))
        else:
            books.Payment.objects.filter(pk=bad_payments[0].pk).update(amount=D("999"))
            books.Payment.objects.filter(pk=bad_payments[1].pk).update(amount=D("1"))
        fixed = books.old_snapshot()

        migrate(latest_nodes())

        assert applied() >= MONEY_MIGRATIONS
        assert new_snapshot(books) == fixed
        assert kept_totals() == expected_totals(fixed)
        assert list(totals_mismatches()) == []


# --- 3. a currency's places never change under stored data -----------------------------------------------


def test_changed_minor_units_names_each_code_whose_places_differ_from_the_recorded_ones():
    later_iso = {**currencies.ISO_MINOR_UNITS, "JPY": 2, "XYZ": 0}
    assert currencies.changed_minor_units(iso=later_iso) == {"JPY": (0, 2), "XYZ": (2, 0)}
    # A new code with 2 places changes nothing recorded.
    assert currencies.changed_minor_units(iso={**currencies.ISO_MINOR_UNITS, "XYY": 2}) == {}
    assert currencies.changed_minor_units() == {}
    assert currencies.changed_minor_units(iso=currencies.ISO_MINOR_UNITS) == {}


def test_an_accepted_code_whose_iso_places_leave_the_accepted_range_is_named_too():
    """KWD with 4 places in a later table: KWD invoices are stored with 3, so the change is named, never
    silently dropped (the code would otherwise fall out of the accepted list, its amounts unexplained)."""
    later_iso = {**currencies.ISO_MINOR_UNITS, "KWD": 4, "JPY": 4}
    assert currencies.changed_minor_units(iso=later_iso) == {"JPY": (0, 4), "KWD": (3, 4)}


def money_errors() -> list[checks.CheckMessage]:
    return [message for message in checks.run_checks() if message.id == "billing.E020"]


def test_the_system_check_names_a_currency_whose_iso_places_changed():
    assert money_errors() == []
    later_iso = {**currencies.ISO_MINOR_UNITS, "JPY": 2}
    with mock.patch.object(currencies, "ISO_MINOR_UNITS", later_iso):
        errors = money_errors()
    assert len(errors) == 1
    assert errors[0].level == checks.ERROR
    assert "JPY" in errors[0].msg
    assert money_errors() == []


def test_the_migration_records_the_same_places_as_billing_currencies():
    """The migration's literal copy of the non-2-place currencies (its triggers and the CHECK scale by
    it) is billing.currencies' recorded table: a later change to one must come with the other."""
    migration = import_module(MONEY_MIGRATION_MODULE)
    recorded = {**dict.fromkeys(migration.ZERO_PLACES, 0), **dict.fromkeys(migration.THREE_PLACES, 3)}
    assert len(recorded) == len(migration.ZERO_PLACES) + len(migration.THREE_PLACES)  # no code in both
    assert recorded == currencies.RECORDED_MINOR_UNITS
    assert recorded["JPY"] == 0
    assert recorded["KWD"] == recorded["BHD"] == 3
    # Every recorded code is accepted, with its recorded places.
    assert {code: places for code, places in currencies.MINOR_UNITS.items() if places != 2} == recorded


# --- 4. the model's and the database's refusals --------------------------------------------------------------


@pytest.mark.parametrize(
    "code", ["HRK", "SLL", "ZWL", "CLF", "UYW", "XAU", "XDR", "XTS", "XXX", "usd", "EURO"]
)
def test_withdrawn_and_unaccepted_codes_are_refused_by_the_model(code):
    with pytest.raises(BusinessRuleViolation) as refused:
        Invoice(currency=code).check_fields()
    assert refused.value.field == "currency"
    assert code in refused.value.message
    assert code not in currencies.CURRENCY_CODES


@pytest.mark.parametrize(("code", "places"), [("XCG", 2), ("ZWG", 2), ("JPY", 0), ("KWD", 3), ("BHD", 3)])
def test_new_and_current_codes_are_accepted_by_the_model(code, places):
    Invoice(currency=code).check_fields()
    assert currencies.minor_units(code) == places


@pytest.mark.django_db
def test_the_database_refuses_amounts_with_more_places_than_their_currency(alice, make_invoice):
    def set_amounts(invoice, amount: str) -> None:
        Invoice.objects.filter(pk=invoice.pk).update(subtotal=D(amount), tax_total=D("0"), total=D(amount))

    def refused(invoice, amount: str) -> None:
        with pytest.raises(IntegrityError, match="invoice_amounts_in_minor_units"), transaction.atomic():
            set_amounts(invoice, amount)

    jpy = make_invoice(alice, amount="1250", currency="JPY", send=False)
    usd = make_invoice(alice, amount="12.50", currency="USD", send=False)
    kwd = make_invoice(alice, amount="1.250", currency="KWD", send=False)

    refused(jpy, "12.50")
    refused(jpy, "0.5")
    refused(usd, "12.505")
    set_amounts(jpy, "13")
    set_amounts(usd, "12.500")
    set_amounts(kwd, "1.255")
    assert Invoice.objects.get(pk=jpy.pk).total == D("13")
    assert Invoice.objects.get(pk=usd.pk).total == D("12.50")
    assert Invoice.objects.get(pk=kwd.pk).total == D("1.255")
    # Values whose places a float gets wrong (SQLite stores REAL and rounds in floating point), up to
    # the largest amount of each: accepted, as they are.
    for invoice, amounts in [
        (usd, ["0.29", "1.15", "4.35", "0.07", "123456789.07", "999999999999.99"]),
        (jpy, ["1", "999999999999"]),
        (kwd, ["0.001", "4.355", "999999999999.999"]),
    ]:
        for amount in amounts:
            set_amounts(invoice, amount)
            assert Invoice.objects.get(pk=invoice.pk).total == D(amount)
    refused(usd, "999999999999.999")
    refused(jpy, "999999999999.5")
    # The amount paid too (of a sent invoice, which may have one).
    sent = make_invoice(alice, amount="1250", currency="JPY")
    with pytest.raises(IntegrityError, match="invoice_amounts_in_minor_units"), transaction.atomic():
        Invoice.objects.filter(pk=sent.pk).update(amount_paid=D("0.5"))
    Invoice.objects.filter(pk=sent.pk).update(amount_paid=D("1"))
    # A withdrawn code, written past the model: the database's own list refuses it.
    with pytest.raises(IntegrityError, match="invoice_currency_valid"), transaction.atomic():
        Invoice.objects.filter(pk=usd.pk).update(currency="HRK")
    Invoice.objects.filter(pk=usd.pk).update(currency="XCG")
    assert Invoice.objects.get(pk=usd.pk).currency == "XCG"
