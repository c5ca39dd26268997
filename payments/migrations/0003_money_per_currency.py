"""A payment's amount in numeric(15, 3), with its currency's places (invoices 0003_money_per_currency,
which checks every stored amount fits before anything changes, runs first). Values are kept as they
are. On SQLite the reference triggers (0002_organization_references) are dropped for the table's
rebuild (they name it) and created again, both ways."""

from importlib import import_module

from django.db import migrations, models

money = import_module("invoices.migrations.0003_money_per_currency")
references = import_module("payments.migrations.0002_organization_references")


def _sqlite(statements):
    def run(apps, schema_editor) -> None:
        if schema_editor.connection.vendor == "sqlite":
            for statement in statements:
                schema_editor.execute(statement, params=None)

    return run


DROP, CREATE = _sqlite(references.SQLITE_REVERSE), _sqlite(money.SQLITE_REFERENCES)


class Migration(migrations.Migration):
    dependencies = [
        ("invoices", "0003_money_per_currency"),
        ("payments", "0002_organization_references"),
    ]

    operations = [
        migrations.RunPython(DROP, CREATE),
        migrations.AlterField(
            model_name="payment",
            name="amount",
            field=models.DecimalField(decimal_places=3, max_digits=15),
        ),
        migrations.RunPython(CREATE, DROP),
    ]
