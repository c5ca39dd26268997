"""The database refuses a document or an email of another organization's invoice: composite foreign
keys (invoice_id, organization_id) -> invoices (id, organization_id) on PostgreSQL, triggers on
SQLite (as payments 0002_organization_references does for lines and payments). On SQLite a later
migration that rebuilds invoices_invoice or these tables must drop these triggers first and create
them again (SQLITE, SQLITE_REVERSE)."""

from importlib import import_module

from django.db import migrations

references = import_module("payments.migrations.0002_organization_references")
totals = import_module("invoices.migrations.0002_invoice_totals")

REFERENCES = [
    ("document_invoice_same_org", "delivery_document", "invoice_id", "invoices_invoice"),
    ("email_invoice_same_org", "delivery_outboundemail", "invoice_id", "invoices_invoice"),
]
POSTGRES = [
    f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({column}, organization_id) "
    f"REFERENCES {target} (id, organization_id)"
    for name, table, column, target in REFERENCES
]
POSTGRES_REVERSE = [
    f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}" for name, table, _, _ in REFERENCES
]
SQLITE = [
    statement for reference in REFERENCES for statement in references._sqlite_reference_triggers(*reference)
]
SQLITE_REVERSE = [
    f"DROP TRIGGER IF EXISTS {name}_{kind}"
    for name, *_ in REFERENCES
    for kind in ("insert", "update", "target")
]


class Migration(migrations.Migration):
    dependencies = [
        ("delivery", "0001_initial"),
        ("invoices", "0004_public_token"),
    ]

    operations = [
        migrations.RunPython(
            totals.run_statements({"postgresql": POSTGRES, "sqlite": SQLITE}),
            totals.run_statements({"postgresql": POSTGRES_REVERSE, "sqlite": SQLITE_REVERSE}),
        ),
    ]
