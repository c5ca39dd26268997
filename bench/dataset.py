"""The data set in `billing_bench`: reused when it matches the profile's plan (after undoing a
previous run's writes), else dropped, migrated and seeded (bench/seed.py); its sizes; verify_ledger.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace

from bench.config import DB_NAME, ROOT, _pg, bench_env, log
from bench.seed import Plan, check_integrity, restore, seed, seeded_plan

# --- database -----------------------------------------------------------------------------------


def _db_exists() -> bool:
    with _pg("postgres") as conn:
        cur = conn.cursor()
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME])
        return cur.fetchone() is not None


def _same_plan(meta: dict | None, plan: Plan) -> bool:
    if not meta:
        return False
    seeded = dict(meta["plan"])
    seeded_day = dt.date.fromisoformat(seeded.pop("today"))
    wanted = asdict(plan)
    wanted.pop("today")
    # Due dates are relative to the seeding day: reuse data at most a week old.
    return seeded == wanted and (dt.date.today() - seeded_day).days <= 7


def sizes() -> dict:
    with _pg(DB_NAME) as conn:
        cur = conn.cursor()
        cur.execute("SELECT pg_database_size(current_database())")
        total = cur.fetchone()[0]
        cur.execute(
            "SELECT relname, pg_total_relation_size(oid), pg_relation_size(oid), reltuples::bigint "
            "FROM pg_class WHERE relname IN ('invoices_invoice', 'invoices_line', 'payments_payment')"
        )
        tables = {
            name: {"total_mb": round(t / 2**20, 1), "heap_mb": round(h / 2**20, 1), "rows": n}
            for name, t, h, n in cur.fetchall()
        }
    return {"database_mb": round(total / 2**20, 1), "tables": tables}


def _migrate() -> None:
    """Bring billing_bench to the current schema (reused data too: new indexes must be measured)."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT,
        env=os.environ | bench_env(),
        check=True,
        timeout=600,
    )


def ensure_dataset(plan: Plan, *, reseed: bool) -> dict:
    """The data of `plan` in billing_bench: reused if already there (after undoing a previous run's
    writes), else the database is dropped, migrated and seeded."""
    from django.db import connections

    if not reseed and _db_exists():
        with _pg(DB_NAME, autocommit=False) as conn:
            meta = seeded_plan(conn)
            if _same_plan(meta, plan):
                log(
                    f"reusing {DB_NAME} (seeded {meta['seeded_at']}); migrating, undoing the last run's writes"
                )
                _migrate()
                # A run killed inside bench/triggers.py leaves them off; the check below then fails.
                conn.cursor().execute("ALTER TABLE invoices_invoice ENABLE TRIGGER USER")
                restore(conn)
                check_integrity(conn)
                conn.commit()
                _check_kept_totals()
                conn.autocommit = True
                conn.cursor().execute("VACUUM (ANALYZE)")
                return {"reused": True, "seeded_at": meta["seeded_at"], **sizes()}
    connections.close_all()
    log(f"(re)creating {DB_NAME}")
    with _pg("postgres") as conn:
        cur = conn.cursor()
        cur.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        cur.execute(f"CREATE DATABASE {DB_NAME}")
    t0 = time.monotonic()
    _migrate()
    migrate_s = time.monotonic() - t0
    plan = replace(plan, today=dt.date.today().isoformat())
    log(
        f"seeding {plan.tenants} tenants x {plan.invoices:,} invoices (+ a tenant of {plan.tiny_invoices}) with COPY"
    )
    with _pg(DB_NAME, autocommit=False) as conn:
        timing = seed(conn, plan)
    info = {"reused": False, "migrate_s": round(migrate_s, 1), **timing, **sizes()}
    log(
        f"seeded {timing['rows']['invoices']:,} invoices, {timing['rows']['lines']:,} lines, "
        f"{timing['rows']['payments']:,} payments in {timing['total_s']} s; database {info['database_mb']} MB"
    )
    return info


def _check_kept_totals() -> None:
    """InvoiceTotals against the invoices, whole table (seconds at a million rows): a reused dataset
    loaded without its triggers would give the list and the summary wrong figures."""
    from payments.ledger import totals_mismatches

    mismatches = list(totals_mismatches())
    if mismatches:
        raise RuntimeError(
            f"{DB_NAME}: {len(mismatches)} InvoiceTotals rows disagree, e.g. {mismatches[0]}; --reseed"
        )


def verify_ledger(organization_id: int) -> dict:
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "manage.py", "verify_ledger", "--organization", str(organization_id)],
        cwd=ROOT,
        env=os.environ | bench_env(),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    result = {
        "organization": organization_id,
        "ok": out.returncode == 0,
        "output": (out.stdout + out.stderr).strip().splitlines()[-1:],
        "seconds": round(time.monotonic() - t0, 1),
    }
    log(
        f"verify_ledger --organization {organization_id}: {'ok' if result['ok'] else 'MISMATCHES'} {result['output']}"
    )
    if not result["ok"]:
        raise RuntimeError(f"verify_ledger failed: {out.stdout[-2000:]}")
    return result
