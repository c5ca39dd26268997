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
KEY = "organization_id, currency, status, shard"
SHARD = "id % 16"  # InvoiceTotals.SHARDS


def build(*, scale, total: str, paid: str) -> dict:
    """The triggers' SQL, for the totals columns `total` and `paid` holding each invoice's total and
    amount paid times `scale(currency)` (an SQL expression of the row's currency column). This
    migration writes hundredths (`100`); invoices 0003 writes each currency's minor units."""
    columns = f"organization_id, currency, status, shard, count, {total}, {paid}"

    def pg_upsert(select: str) -> str:
        """Add (organization_id, currency, status, shard, count, total, paid) rows to their totals, in key order."""
        return f"""
        INSERT INTO {TABLE} AS t ({columns})
        {select}
        ORDER BY 1, 2, 3, 4
        ON CONFLICT ({KEY}) DO UPDATE SET
            count = t.count + EXCLUDED.count,
            {total} = t.{total} + EXCLUDED.{total},
            {paid} = t.{paid} + EXCLUDED.{paid};"""

    s = scale("currency")
    pg_sums = f"sum((total * {s})::bigint), sum((amount_paid * {s})::bigint)"
    pg_inserted = f"SELECT organization_id, currency, status, {SHARD}, count(*), {pg_sums} FROM new_rows GROUP BY 1, 2, 3, 4"
    pg_deleted = (
        f"SELECT organization_id, currency, status, {SHARD}, -count(*), -sum((total * {s})::bigint),"
        f" -sum((amount_paid * {s})::bigint) FROM old_rows GROUP BY 1, 2, 3, 4"
    )
    pg_updated = f"""SELECT organization_id, currency, status, shard, sum(n), sum({total}), sum({paid})
        FROM (
            SELECT organization_id, currency, status, {SHARD} AS shard, -1 AS n,
                   -(total * {s})::bigint AS {total}, -(amount_paid * {s})::bigint AS {paid}
            FROM old_rows
            UNION ALL
            SELECT organization_id, currency, status, {SHARD}, 1, (total * {s})::bigint, (amount_paid * {s})::bigint
            FROM new_rows
        ) AS delta
        GROUP BY organization_id, currency, status, shard
        HAVING sum(n) <> 0 OR sum({total}) <> 0 OR sum({paid}) <> 0"""

    postgres = f"""
CREATE FUNCTION invoice_totals_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {pg_upsert(pg_inserted)}
    ELSIF TG_OP = 'DELETE' THEN
        {pg_upsert(pg_deleted)}
    ELSE
        {pg_upsert(pg_updated)}
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
    fill = {
        "postgresql": f"""INSERT INTO {TABLE} ({columns})
    SELECT organization_id, currency, status, {SHARD}, count(*), {pg_sums}
    FROM invoices_invoice GROUP BY 1, 2, 3, 4""",
        "sqlite": f"""INSERT INTO {TABLE} ({columns})
    SELECT organization_id, currency, status, {SHARD}, count(*), sum(CAST(round(total * {s}) AS INTEGER)),
           sum(CAST(round(amount_paid * {s}) AS INTEGER))
    FROM invoices_invoice GROUP BY 1, 2, 3, 4""",
    }

    def sqlite_add(row: str) -> str:
        r = scale(f"{row}.currency")
        return f"""
    INSERT INTO {TABLE} ({columns}) VALUES (
        {row}.organization_id, {row}.currency, {row}.status, {row}.{SHARD}, 1,
        CAST(round({row}.total * {r}) AS INTEGER), CAST(round({row}.amount_paid * {r}) AS INTEGER)
    )
    ON CONFLICT ({KEY}) DO UPDATE SET
        count = count + excluded.count,
        {total} = {total} + excluded.{total},
        {paid} = {paid} + excluded.{paid};"""

    # A row being taken out has been added before, so its totals row exists: a plain UPDATE. (If the
    # totals were emptied first, as `flush` may do in any order, nothing is left behind below zero.)
    def sqlite_take_out(row: str) -> str:
        r = scale(f"{row}.currency")
        return f"""
    UPDATE {TABLE} SET
        count = count - 1,
        {total} = {total} - CAST(round({row}.total * {r}) AS INTEGER),
        {paid} = {paid} - CAST(round({row}.amount_paid * {r}) AS INTEGER)
    WHERE organization_id = {row}.organization_id AND currency = {row}.currency AND status = {row}.status
        AND shard = {row}.{SHARD};"""

    sqlite = [
        f"CREATE TRIGGER invoice_totals_insert AFTER INSERT ON invoices_invoice BEGIN {sqlite_add('NEW')} END",
        f"CREATE TRIGGER invoice_totals_delete AFTER DELETE ON invoices_invoice BEGIN {sqlite_take_out('OLD')} END",
        f"""CREATE TRIGGER invoice_totals_update AFTER UPDATE ON invoices_invoice
    WHEN OLD.id IS NOT NEW.id OR OLD.organization_id IS NOT NEW.organization_id OR OLD.currency IS NOT NEW.currency
        OR OLD.status IS NOT NEW.status OR OLD.total IS NOT NEW.total OR OLD.amount_paid IS NOT NEW.amount_paid
    BEGIN {sqlite_take_out("OLD")} {sqlite_add("NEW")} END""",
    ]
    return {"postgresql": postgres, "sqlite": sqlite, "fill": fill}


POSTGRES_REVERSE = """
DROP TRIGGER IF EXISTS invoice_totals_insert ON invoices_invoice;
DROP TRIGGER IF EXISTS invoice_totals_update ON invoices_invoice;
DROP TRIGGER IF EXISTS invoice_totals_delete ON invoices_invoice;
DROP TRIGGER IF EXISTS invoice_totals_truncate ON invoices_invoice;
DROP FUNCTION IF EXISTS invoice_totals_apply();
DROP FUNCTION IF EXISTS invoice_totals_truncate();
"""

SQLITE_REVERSE = [
    "DROP TRIGGER IF EXISTS invoice_totals_insert",
    "DROP TRIGGER IF EXISTS invoice_totals_delete",
    "DROP TRIGGER IF EXISTS invoice_totals_update",
]

# This migration's triggers: hundredths (amounts had two decimals then).
CENTS = build(scale=lambda currency: "100", total="total_cents", paid="paid_cents")
FILL = CENTS["fill"]


def run_statements(statements_by_vendor):
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
            run_statements(
                {
                    "postgresql": [CENTS["postgresql"], FILL["postgresql"]],
                    "sqlite": [*CENTS["sqlite"], FILL["sqlite"]],
                }
            ),
            run_statements({"postgresql": POSTGRES_REVERSE, "sqlite": SQLITE_REVERSE}),
        ),
    ]
