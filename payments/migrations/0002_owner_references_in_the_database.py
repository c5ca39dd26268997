"""The database refuses a row whose references belong to another owner, and an issued invoice's delete.

- An invoice's customer, a line's invoice and a payment's invoice have the row's own owner.
  PostgreSQL: composite foreign keys, (customer_id, owner_id) -> customers (id, owner_id) and
  (invoice_id, owner_id) -> invoices (id, owner_id), onto the (id, owner) unique keys of the
  customers and invoices migrations; they also refuse moving a referenced customer or invoice to
  another owner. SQLite (no composite keys onto a non-primary key without rebuilding the tables):
  triggers that do the same, raising "foreign_key: <name>".
- PostgreSQL refuses deleting an invoice that is not a draft (a trigger). SQLite has no such
  trigger: Django's `flush` empties tables with DELETE, which it would refuse; there the
  services' locked guard (every write transaction is serialized) and `Invoice.delete()` hold it.

The names are the ones the exception handler reports (billing.errors.integrity_violation). On
SQLite a later migration that rebuilds one of these tables drops its triggers and must create them
again (tests/test_owner_references.py checks that they exist).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

REFERENCES = [
    # (constraint, table, columns, referenced table)
    ("invoice_customer_same_owner", "invoices_invoice", "customer_id", "customers_customer"),
    ("line_invoice_same_owner", "invoices_line", "invoice_id", "invoices_invoice"),
    ("payment_invoice_same_owner", "payments_payment", "invoice_id", "invoices_invoice"),
]

POSTGRES = [
    *(
        f"ALTER TABLE {table} ADD CONSTRAINT {name} FOREIGN KEY ({column}, owner_id) "
        f"REFERENCES {target} (id, owner_id)"
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
    mismatch = f"EXISTS (SELECT 1 FROM {target} WHERE id = NEW.{column} AND owner_id IS NOT NEW.owner_id)"
    refuse = f"BEGIN SELECT RAISE(ABORT, 'foreign_key: {name}'); END"
    return [
        f"CREATE TRIGGER {name}_insert BEFORE INSERT ON {table} WHEN {mismatch} {refuse}",
        f"CREATE TRIGGER {name}_update BEFORE UPDATE OF {column}, owner_id ON {table} WHEN {mismatch} {refuse}",
        # The referenced row may not move to another owner while it is referenced.
        f"""CREATE TRIGGER {name}_target BEFORE UPDATE OF owner_id ON {target}
        WHEN NEW.owner_id IS NOT OLD.owner_id AND EXISTS (SELECT 1 FROM {table} WHERE {column} = OLD.id)
        {refuse}""",
    ]


SQLITE_TRIGGERS = [f"{name}_{kind}" for name, *_ in REFERENCES for kind in ("insert", "update", "target")]
SQLITE = [statement for reference in REFERENCES for statement in _sqlite_reference_triggers(*reference)]
SQLITE_REVERSE = [f"DROP TRIGGER IF EXISTS {trigger}" for trigger in SQLITE_TRIGGERS]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        if vendor not in statements_by_vendor:
            raise RuntimeError(f"no owner-reference constraints for {vendor}; add them to this migration")
        for statement in statements_by_vendor[vendor]:
            schema_editor.execute(statement, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("payments", "0001_initial"),
        ("invoices", "0004_owner_references"),
        ("customers", "0002_owner_references"),
    ]

    operations = [
        migrations.AlterField(
            model_name="payment",
            name="owner",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.RunPython(
            _run({"postgresql": POSTGRES, "sqlite": SQLITE}),
            _run({"postgresql": POSTGRES_REVERSE, "sqlite": SQLITE_REVERSE}),
        ),
    ]
