"""The database refuses a row whose references belong to another organization, and an issued invoice's delete.

- An invoice's customer, a line's invoice and a payment's invoice have the row's own organization.
  PostgreSQL: composite foreign keys, (customer_id, organization_id) -> customers (id, organization_id) and
  (invoice_id, organization_id) -> invoices (id, organization_id), onto the (id, organization) unique keys of the
  customers and invoices migrations; they also refuse moving a referenced customer or invoice to
  another organization. SQLite (no composite keys onto a non-primary key without rebuilding the tables):
  triggers that do the same, raising "foreign_key: <name>".
- PostgreSQL refuses deleting an invoice that is not a draft (a trigger). SQLite has no such
  trigger: Django's `flush` empties tables with DELETE, which it would refuse; there the
  services' locked guard (every write transaction is serialized) and `Invoice.delete()` hold it.

The names are the ones the exception handler reports (billing.errors.integrity_violation). On
SQLite a later migration that rebuilds one of these tables drops its triggers and must create them
again (tests/test_owner_references.py checks that they exist).
"""

from django.db import migrations

REFERENCES = [
    # (constraint, table, columns, referenced table)
    ("invoice_customer_same_org", "invoices_invoice", "customer_id", "customers_customer"),
    ("line_invoice_same_org", "invoices_line", "invoice_id", "invoices_invoice"),
    ("payment_invoice_same_org", "payments_payment", "invoice_id", "invoices_invoice"),
    ("status_change_invoice_same_org", "invoices_invoicestatuschange", "invoice_id", "invoices_invoice"),
]

POSTGRES = [
    *(
        f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({column}, organization_id) "
        f"REFERENCES {target} (id, organization_id)"
        for name, table, column, target in REFERENCES
    ),
    """
    CREATE FUNCTION invoice_refuse_issued_delete() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'invoice % is %: only a draft can be deleted', OLD.id, OLD.status
            USING ERRCODE = 'restrict_violation', CONSTRAINT = 'invoice_issued_never_deleted';
    END
    $$;
    """,
    """
    CREATE TRIGGER invoice_issued_never_deleted BEFORE DELETE ON invoices_invoice
        FOR EACH ROW WHEN (OLD.status <> 'draft') EXECUTE FUNCTION invoice_refuse_issued_delete();
    """,
]

POSTGRES_REVERSE = [
    "DROP TRIGGER IF EXISTS invoice_issued_never_deleted ON invoices_invoice",
    "DROP FUNCTION IF EXISTS invoice_refuse_issued_delete()",
    *(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}" for name, table, _, _ in REFERENCES),
]


def _sqlite_reference_triggers(name: str, table: str, column: str, target: str) -> list[str]:
    mismatch = f"EXISTS (SELECT 1 FROM {target} WHERE id = NEW.{column} AND organization_id IS NOT NEW.organization_id)"
    refuse = f"BEGIN SELECT RAISE(ABORT, 'foreign_key: {name}'); END"
    return [
        f"CREATE TRIGGER {name}_insert BEFORE INSERT ON {table} WHEN {mismatch} {refuse}",
        f"CREATE TRIGGER {name}_update BEFORE UPDATE OF {column}, organization_id ON {table} WHEN {mismatch} {refuse}",
        # The referenced row may not move to another organization while it is referenced.
        f"""CREATE TRIGGER {name}_target BEFORE UPDATE OF organization_id ON {target}
        WHEN NEW.organization_id IS NOT OLD.organization_id AND EXISTS (SELECT 1 FROM {table} WHERE {column} = OLD.id)
        {refuse}""",
    ]


SQLITE_TRIGGERS = [f"{name}_{kind}" for name, *_ in REFERENCES for kind in ("insert", "update", "target")]
SQLITE = [statement for reference in REFERENCES for statement in _sqlite_reference_triggers(*reference)]
SQLITE_REVERSE = [f"DROP TRIGGER IF EXISTS {trigger}" for trigger in SQLITE_TRIGGERS]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        if vendor not in statements_by_vendor:
            raise RuntimeError(
                f"no organization-reference constraints for {vendor}; add them to this migration"
            )
        for statement in statements_by_vendor[vendor]:
            schema_editor.execute(statement, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0001_initial"),
        ("invoices", "0002_invoice_totals"),
        ("customers", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(
            _run({"postgresql": POSTGRES, "sqlite": SQLITE}),
            _run({"postgresql": POSTGRES_REVERSE, "sqlite": SQLITE_REVERSE}),
        ),
    ]
