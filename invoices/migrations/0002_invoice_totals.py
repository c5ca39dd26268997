"""InvoiceTotals, and the triggers that keep it: every insert, update and delete of an invoice is
added to its (organization, currency, status, shard) row in the same statement, the shard being the
invoice id modulo 16.

PostgreSQL: statement-level triggers with transition tables, so a bulk UPDATE (mark_overdue) or a
COPY writes each affected row once, as one aggregated upsert taken in key order (two statements
never lock the same rows in opposite orders). An update that changes none of the key or the money
(notes, dates) writes nothing. SQLite: row-level triggers (it has no other kind; writes are
serialized there anyway). The table is filled from the invoices already there, under the triggers'
own table lock, so no write falls between the two.

Lock order is kept within a statement; a transaction that changes invoices of one organization in several
statements holds the rows of the first until it commits (every service writes one invoice per
statement; PostgreSQL would detect a deadlock and abort one side). On SQLite, a later migration
that rebuilds invoices_invoice drops these triggers with the old table and must create them again
(tests/test_invoice_totals.py checks that they exist).
"""

from django.db import migrations

TABLE = "invoices_invoicetotals"
COLUMNS = "organization_id, currency, status, shard, count, total_cents, paid_cents"
KEY = "organization_id, currency, status, shard"
SHARD = "id % 16"  # InvoiceTotals.SHARDS


def _pg_upsert(select: str) -> str:
    """Add (organization_id, currency, status, shard, count, total_cents, paid_cents) rows to their totals, in
    key order."""
    return f"""
        INSERT INTO {TABLE} AS t ({COLUMNS})
        {select}
        ORDER BY 1, 2, 3, 4
        ON CONFLICT ({KEY}) DO UPDATE SET
            count = t.count + EXCLUDED.count,
            total_cents = t.total_cents + EXCLUDED.total_cents,
            paid_cents = t.paid_cents + EXCLUDED.paid_cents;"""


PG_SUMS = "sum((total * 100)::bigint), sum((amount_paid * 100)::bigint)"
PG_INSERTED = f"SELECT organization_id, currency, status, {SHARD}, count(*), {PG_SUMS} FROM new_rows GROUP BY 1, 2, 3, 4"
PG_DELETED = (
    f"SELECT organization_id, currency, status, {SHARD}, -count(*), -sum((total * 100)::bigint),"
    " -sum((amount_paid * 100)::bigint) FROM old_rows GROUP BY 1, 2, 3, 4"
)
PG_UPDATED = f"""SELECT organization_id, currency, status, shard, sum(n), sum(total_cents), sum(paid_cents)
        FROM (
            SELECT organization_id, currency, status, {SHARD} AS shard, -1 AS n,
                   -(total * 100)::bigint AS total_cents, -(amount_paid * 100)::bigint AS paid_cents
            FROM old_rows
            UNION ALL
            SELECT organization_id, currency, status, {SHARD}, 1, (total * 100)::bigint, (amount_paid * 100)::bigint
            FROM new_rows
        ) AS delta
        GROUP BY organization_id, currency, status, shard
        HAVING sum(n) <> 0 OR sum(total_cents) <> 0 OR sum(paid_cents) <> 0"""

POSTGRES = f"""
CREATE FUNCTION invoice_totals_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_pg_upsert(PG_INSERTED)}
    ELSIF TG_OP = 'DELETE' THEN
        {_pg_upsert(PG_DELETED)}
    ELSE
        {_pg_upsert(PG_UPDATED)}
    END IF;
    RETURN NULL;
END
$$;

CREATE FUNCTION invoice_totals_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {TABLE};
    RETURN NULL;
END
$$;

CREATE TRIGGER invoice_totals_insert AFTER INSERT ON invoices_invoice
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION invoice_totals_apply();
CREATE TRIGGER invoice_totals_update AFTER UPDATE ON invoices_invoice
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION invoice_totals_apply();
CREATE TRIGGER invoice_totals_delete AFTER DELETE ON invoices_invoice
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION invoice_totals_apply();
CREATE TRIGGER invoice_totals_truncate AFTER TRUNCATE ON invoices_invoice
    FOR EACH STATEMENT EXECUTE FUNCTION invoice_totals_truncate();
"""

# Filling the table from the invoices already there (the triggers' table lock holds off writes).
FILL = {
    "postgresql": f"""INSERT INTO {TABLE} ({COLUMNS})
    SELECT organization_id, currency, status, {SHARD}, count(*), {PG_SUMS}
    FROM invoices_invoice GROUP BY 1, 2, 3, 4""",
    "sqlite": f"""INSERT INTO {TABLE} ({COLUMNS})
    SELECT organization_id, currency, status, {SHARD}, count(*), sum(CAST(round(total * 100) AS INTEGER)),
           sum(CAST(round(amount_paid * 100) AS INTEGER))
    FROM invoices_invoice GROUP BY 1, 2, 3, 4""",
}

POSTGRES_REVERSE = """
DROP TRIGGER IF EXISTS invoice_totals_insert ON invoices_invoice;
DROP TRIGGER IF EXISTS invoice_totals_update ON invoices_invoice;
DROP TRIGGER IF EXISTS invoice_totals_delete ON invoices_invoice;
DROP TRIGGER IF EXISTS invoice_totals_truncate ON invoices_invoice;
DROP FUNCTION IF EXISTS invoice_totals_apply();
DROP FUNCTION IF EXISTS invoice_totals_truncate();
"""


def _sqlite_add(row: str) -> str:
    return f"""
    INSERT INTO {TABLE} ({COLUMNS}) VALUES (
        {row}.organization_id, {row}.currency, {row}.status, {row}.{SHARD}, 1,
        CAST(round({row}.total * 100) AS INTEGER), CAST(round({row}.amount_paid * 100) AS INTEGER)
    )
    ON CONFLICT ({KEY}) DO UPDATE SET
        count = count + excluded.count,
        total_cents = total_cents + excluded.total_cents,
        paid_cents = paid_cents + excluded.paid_cents;"""


# A row being taken out has been added before, so its totals row exists: a plain UPDATE. (If the
# totals were emptied first, as `flush` may do in any order, nothing is left behind below zero.)
def _sqlite_take_out(row: str) -> str:
    return f"""
    UPDATE {TABLE} SET
        count = count - 1,
        total_cents = total_cents - CAST(round({row}.total * 100) AS INTEGER),
        paid_cents = paid_cents - CAST(round({row}.amount_paid * 100) AS INTEGER)
    WHERE organization_id = {row}.organization_id AND currency = {row}.currency AND status = {row}.status
        AND shard = {row}.{SHARD};"""


SQLITE = [
    f"CREATE TRIGGER invoice_totals_insert AFTER INSERT ON invoices_invoice BEGIN {_sqlite_add('NEW')} END",
    f"CREATE TRIGGER invoice_totals_delete AFTER DELETE ON invoices_invoice BEGIN {_sqlite_take_out('OLD')} END",
    f"""CREATE TRIGGER invoice_totals_update AFTER UPDATE ON invoices_invoice
    WHEN OLD.id IS NOT NEW.id OR OLD.organization_id IS NOT NEW.organization_id OR OLD.currency IS NOT NEW.currency
        OR OLD.status IS NOT NEW.status OR OLD.total IS NOT NEW.total OR OLD.amount_paid IS NOT NEW.amount_paid
    BEGIN {_sqlite_take_out("OLD")} {_sqlite_add("NEW")} END""",
]

SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS invoice_totals_insert",
    "DROP TRIGGER IF EXISTS invoice_totals_delete",
    "DROP TRIGGER IF EXISTS invoice_totals_update",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        vendor = schema_editor.connection.vendor
        if vendor not in statements_by_vendor:
            raise RuntimeError(f"InvoiceTotals has no triggers for {vendor}; add them to this migration")
        statements = statements_by_vendor[vendor]
        for statement in [statements] if isinstance(statements, str) else statements:
            schema_editor.execute(statement, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("invoices", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(
            _run({"postgresql": [POSTGRES, FILL["postgresql"]], "sqlite": [*SQLITE, FILL["sqlite"]]}),
            _run({"postgresql": POSTGRES_REVERSE, "sqlite": SQLITE_REVERSE}),
        ),
    ]
