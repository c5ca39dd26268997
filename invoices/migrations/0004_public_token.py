"""The hosted invoice page's token: every issued invoice has one (192 random bits, set when it is
issued); those issued before this migration receive theirs here. On SQLite the invoice table is
rebuilt, so its triggers (InvoiceTotals' and the references') are dropped first and created again."""

import secrets
from importlib import import_module

from django.db import migrations, models

money = import_module("invoices.migrations.0003_money_per_currency")
totals = import_module("invoices.migrations.0002_invoice_totals")
references = import_module("payments.migrations.0002_organization_references")

SQLITE_DROP = [*totals.SQLITE_REVERSE, *references.SQLITE_REVERSE]
SQLITE_CREATE = [*money.MINOR["sqlite"], *money.SQLITE_REFERENCES]


def _sqlite(statements):
    return totals.run_statements({"postgresql": [], "sqlite": statements})


def give_tokens(apps, schema_editor) -> None:
    Invoice = apps.get_model("invoices", "Invoice")
    issued = Invoice.objects.exclude(status="draft").filter(public_token__isnull=True)
    for pk in issued.values_list("pk", flat=True).iterator():
        # .update(): no save(), so InvoiceTotals' triggers see a change of neither money nor status.
        Invoice.objects.filter(pk=pk).update(public_token=secrets.token_urlsafe(24))


class Migration(migrations.Migration):
    dependencies = [
        ("invoices", "0003_money_per_currency"),
        ("payments", "0003_money_per_currency"),
    ]

    operations = [
        migrations.RunPython(_sqlite(SQLITE_DROP), _sqlite(SQLITE_CREATE)),
        migrations.AddField(
            model_name="invoice",
            name="public_token",
            field=models.CharField(blank=True, editable=False, max_length=43, null=True, unique=True),
        ),
        migrations.RunPython(give_tokens, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="invoice",
            constraint=models.CheckConstraint(
                condition=models.Q(("status", "draft"), ("public_token__isnull", False), _connector="OR"),
                name="invoice_issued_has_public_token",
            ),
        ),
        migrations.RunPython(_sqlite(SQLITE_CREATE), _sqlite(SQLITE_DROP)),
    ]
