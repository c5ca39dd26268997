"""Money per currency: every amount with its currency's ISO 4217 minor units (JPY 0, USD 2, KWD 3).

- First, before anything changes: every stored amount must fit its currency. The columns held two
  places, which every 2- and 3-place currency holds as they are; an amount of a 0-place currency (JPY,
  KRW, ...) with cents cannot be held, and the migration stops naming each such row (table, id,
  currency, field, value), changing nothing. Correct those rows and run it again.
- The money columns widen to numeric(15, 3) (unit prices numeric(16, 4)): every value is kept as it
  is (12.50 stays 12.50; no amount is rescaled). PostgreSQL rewrites the tables once, under their lock.
- The database refuses an invoice amount with more places than its currency
  (invoice_amounts_in_minor_units).
- InvoiceTotals moves from hundredths to each currency's minor units: its triggers are written again
  with the places recorded below and the table refilled from the invoices, under the same lock.
  On SQLite the rebuilt invoice and line tables lose their triggers, which are created again (the
  totals' and those of payments 0002_organization_references).
"""

from decimal import Decimal
from importlib import import_module

import django.db.models.expressions
import django.db.models.functions.math
from django.db import migrations, models

totals = import_module("invoices.migrations.0002_invoice_totals")
references = import_module("payments.migrations.0002_organization_references")

# The places of the currencies whose amounts do not have 2, as this migration writes them
# (billing.currencies.RECORDED_MINOR_UNITS; a test pins the two equal).
ZERO_PLACES = (
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND", "VUV",
    "XAF", "XOF", "XPF",
)  # fmt: skip
THREE_PLACES = ("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND")


def _codes(codes) -> str:
    return ", ".join(f"'{code}'" for code in codes)


def minor_unit_scale(currency: str) -> str:
    """SQL: how many minor units one major unit of the row's `currency` has."""
    return (
        f"CASE WHEN {currency} IN ({_codes(ZERO_PLACES)}) THEN 1 "
        f"WHEN {currency} IN ({_codes(THREE_PLACES)}) THEN 1000 ELSE 100 END"
    )


MINOR = totals.build(scale=minor_unit_scale, total="total_minor", paid="paid_minor")
FILL = MINOR["fill"]

# Amounts of 0-place currencies with a fraction (2- and 3-place currencies hold every 2-place value).
OFFENDING = [
    (
        "invoices_invoice",
        f"""SELECT id, currency, field, value FROM (
            SELECT id, currency, 'subtotal' AS field, subtotal AS value FROM invoices_invoice
            UNION ALL SELECT id, currency, 'tax_total', tax_total FROM invoices_invoice
            UNION ALL SELECT id, currency, 'total', total FROM invoices_invoice
            UNION ALL SELECT id, currency, 'amount_paid', amount_paid FROM invoices_invoice
        ) AS amounts WHERE currency IN ({_codes(ZERO_PLACES)}) AND value <> round(value) ORDER BY id, field""",
    ),
    (
        "invoices_line",
        f"""SELECT id, currency, field, value FROM (
            SELECT l.id, i.currency, 'amount' AS field, l.amount AS value
            FROM invoices_line l JOIN invoices_invoice i ON i.id = l.invoice_id
            UNION ALL SELECT l.id, i.currency, 'tax_amount', l.tax_amount
            FROM invoices_line l JOIN invoices_invoice i ON i.id = l.invoice_id
        ) AS amounts WHERE currency IN ({_codes(ZERO_PLACES)}) AND value <> round(value) ORDER BY id, field""",
    ),
    (
        "payments_payment",
        f"""SELECT p.id, i.currency, 'amount', p.amount FROM payments_payment p
        JOIN invoices_invoice i ON i.id = p.invoice_id
        WHERE i.currency IN ({_codes(ZERO_PLACES)}) AND p.amount <> round(p.amount) ORDER BY p.id""",
    ),
]
NAMED = 50  # rows named in the message; the rest are counted


class AmountsDoNotFit(Exception):
    """Stored amounts that their currency cannot hold: the migration changes nothing."""


def check_amounts_fit(apps, schema_editor) -> None:
    offending = []
    with schema_editor.connection.cursor() as cursor:
        for table, sql in OFFENDING:
            cursor.execute(sql)
            offending += [
                f"{table} {row_id} ({currency}): {field} {value}"
                for row_id, currency, field, value in cursor.fetchall()
            ]
    if offending:
        more = f"\n... and {len(offending) - NAMED} more" if len(offending) > NAMED else ""
        raise AmountsDoNotFit(
            f"{len(offending)} stored amount(s) have more decimal places than their currency's ISO 4217 minor "
            "units (0 for these currencies), so this migration would have to change them; it changes nothing. "
            "Correct them (a credit, a new invoice) and migrate again:\n"
            + "\n".join(offending[:NAMED])
            + more
        )


# Migrating back to two places: an amount or unit price with finer places would be rounded away.
FINER_THAN_CENTS = [
    ("invoices_invoice", "SELECT id FROM invoices_invoice WHERE subtotal <> round(subtotal, 2) OR tax_total <> "
     "round(tax_total, 2) OR total <> round(total, 2) OR amount_paid <> round(amount_paid, 2) ORDER BY id"),
    ("invoices_line", "SELECT id FROM invoices_line WHERE amount <> round(amount, 2) OR tax_amount <> "
     "round(tax_amount, 2) OR unit_price <> round(unit_price, 2) ORDER BY id"),
    ("payments_payment", "SELECT id FROM payments_payment WHERE amount <> round(amount, 2) ORDER BY id"),
]  # fmt: skip


def check_amounts_fit_cents(apps, schema_editor) -> None:
    offending = []
    with schema_editor.connection.cursor() as cursor:
        for table, sql in FINER_THAN_CENTS:
            cursor.execute(sql)
            offending += [f"{table} {row_id}" for (row_id,) in cursor.fetchall()]
    if offending:
        raise AmountsDoNotFit(
            "These rows hold amounts finer than cents, which the earlier schema would round: "
            + ", ".join(offending[:NAMED])
            + (" ..." if len(offending) > NAMED else "")
        )


def _if_not_exists(statement: str) -> str:
    return statement.replace("CREATE TRIGGER ", "CREATE TRIGGER IF NOT EXISTS ", 1)


def _run(postgresql: list[str], sqlite: list[str]):
    return totals.run_statements({"postgresql": postgresql, "sqlite": sqlite})


# The reference triggers of payments 0002 that a rebuild of a table drops (SQLite only).
SQLITE_REFERENCES = [_if_not_exists(statement) for statement in references.SQLITE]
CLEAR = f"DELETE FROM {totals.TABLE}"


class Migration(migrations.Migration):
    dependencies = [
        ("invoices", "0002_invoice_totals"),
        ("payments", "0002_organization_references"),
    ]

    operations = [
        migrations.RunPython(check_amounts_fit, check_amounts_fit_cents),
        # The hundredths triggers go (and come back, with the hundredths refilled, when migrating
        # back); on SQLite the reference triggers too, which name the tables being rebuilt.
        migrations.RunPython(
            _run([totals.POSTGRES_REVERSE], [*totals.SQLITE_REVERSE, *references.SQLITE_REVERSE]),
            _run(
                [totals.CENTS["postgresql"], CLEAR, totals.FILL["postgresql"]],
                [*totals.CENTS["sqlite"], *SQLITE_REFERENCES, CLEAR, totals.FILL["sqlite"]],
            ),
        ),
        migrations.RemoveConstraint(
            model_name="invoice",
            name="invoice_total_is_subtotal_plus_tax",
        ),
        migrations.RenameField(
            model_name="invoicetotals",
            old_name="paid_cents",
            new_name="paid_minor",
        ),
        migrations.RenameField(
            model_name="invoicetotals",
            old_name="total_cents",
            new_name="total_minor",
        ),
        migrations.AlterField(
            model_name="invoice",
            name="amount_paid",
            field=models.DecimalField(decimal_places=3, default=Decimal("0"), max_digits=15),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="subtotal",
            field=models.DecimalField(decimal_places=3, default=Decimal("0"), max_digits=15),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="tax_total",
            field=models.DecimalField(decimal_places=3, default=Decimal("0"), max_digits=15),
        ),
        migrations.AlterField(
            model_name="invoice",
            name="total",
            field=models.DecimalField(decimal_places=3, default=Decimal("0"), max_digits=15),
        ),
        migrations.AlterField(
            model_name="line",
            name="amount",
            field=models.DecimalField(decimal_places=3, max_digits=15),
        ),
        migrations.AlterField(
            model_name="line",
            name="tax_amount",
            field=models.DecimalField(decimal_places=3, max_digits=15),
        ),
        migrations.AlterField(
            model_name="line",
            name="unit_price",
            field=models.DecimalField(decimal_places=4, max_digits=16),
        ),
        migrations.AddConstraint(
            model_name="invoice",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("subtotal__gte", 0),
                    ("tax_total__gte", 0),
                    (
                        "total__gt",
                        django.db.models.expressions.CombinedExpression(
                            django.db.models.expressions.CombinedExpression(
                                models.F("subtotal"), "+", models.F("tax_total")
                            ),
                            "-",
                            models.Value(Decimal("0.0005")),
                        ),
                    ),
                    (
                        "total__lt",
                        django.db.models.expressions.CombinedExpression(
                            django.db.models.expressions.CombinedExpression(
                                models.F("subtotal"), "+", models.F("tax_total")
                            ),
                            "+",
                            models.Value(Decimal("0.0005")),
                        ),
                    ),
                ),
                name="invoice_total_is_subtotal_plus_tax",
            ),
        ),
        migrations.AddConstraint(
            model_name="invoice",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(
                        ("currency__in", ["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"]),
                        models.Q(
                            (
                                "amount_paid",
                                django.db.models.functions.math.Round(models.F("amount_paid"), 2),
                            ),
                            ("subtotal", django.db.models.functions.math.Round(models.F("subtotal"), 2)),
                            ("tax_total", django.db.models.functions.math.Round(models.F("tax_total"), 2)),
                            ("total", django.db.models.functions.math.Round(models.F("total"), 2)),
                        ),
                        _connector="OR",
                    ),
                    models.Q(
                        models.Q(
                            (
                                "currency__in",
                                [
                                    "BIF",
                                    "CLP",
                                    "DJF",
                                    "GNF",
                                    "ISK",
                                    "JPY",
                                    "KMF",
                                    "KRW",
                                    "PYG",
                                    "RWF",
                                    "UGX",
                                    "UYI",
                                    "VND",
                                    "VUV",
                                    "XAF",
                                    "XOF",
                                    "XPF",
                                ],
                            ),
                            _negated=True,
                        ),
                        models.Q(
                            (
                                "amount_paid",
                                django.db.models.functions.math.Round(models.F("amount_paid"), 0),
                            ),
                            ("subtotal", django.db.models.functions.math.Round(models.F("subtotal"), 0)),
                            ("tax_total", django.db.models.functions.math.Round(models.F("tax_total"), 0)),
                            ("total", django.db.models.functions.math.Round(models.F("total"), 0)),
                        ),
                        _connector="OR",
                    ),
                ),
                name="invoice_amounts_in_minor_units",
            ),
        ),
        # Each currency's minor units: new triggers and a refill (from the invoices, under the lock).
        migrations.RunPython(
            _run(
                [MINOR["postgresql"], CLEAR, FILL["postgresql"]],
                [*MINOR["sqlite"], *SQLITE_REFERENCES, CLEAR, FILL["sqlite"]],
            ),
            _run(
                [totals.POSTGRES_REVERSE, CLEAR], [*totals.SQLITE_REVERSE, *references.SQLITE_REVERSE, CLEAR]
            ),
        ),
    ]
