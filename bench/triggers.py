"""What keeping InvoiceTotals costs the writers: pgbench on the create and payment SQL of the run, with
the invoice table's triggers on and off in turn (interleaved rounds, so the machine's drift falls on
both), then the triggers back on and the table refilled from the invoices.

    .venv/bin/python -m bench.triggers    # on billing_bench, with the last run's scripts

run.py calls `trigger_cost` after the load run. The numbers are PostgreSQL's alone: one organization, many
clients, the row locks of the kept totals included.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from bench import load
from bench.capture import event_nonce
from bench.config import DB_NAME, WORK, _pg, log
from bench.seed import refill_totals

ENDPOINTS = ("payment", "create")


def trigger_cost(
    scripts: dict, workdir: Path, *, levels: tuple[int, ...], duration: int, rounds: int = 2
) -> dict:
    """{endpoint: {level: {"on": tps, "off": tps, "cost": 1 - on/off, "p99_on_ms", "p99_off_ms"}}}, the
    median over `rounds`."""
    runs: dict = {}
    with _pg(DB_NAME) as conn:
        cur = conn.cursor()
        try:
            for _ in range(rounds):
                for state in ("on", "off"):
                    cur.execute(
                        f"ALTER TABLE invoices_invoice {'ENABLE' if state == 'on' else 'DISABLE'} TRIGGER USER"
                    )
                    for name in ENDPOINTS:
                        for level in levels:
                            runs.setdefault((name, level, state), []).append(
                                _pgbench(scripts[name], name, level, duration, workdir)
                            )
        finally:
            cur.execute("BEGIN")
            cur.execute("ALTER TABLE invoices_invoice ENABLE TRIGGER USER")
            cur.execute("LOCK TABLE invoices_invoice IN SHARE MODE")
            refill_totals(cur)
            cur.execute("COMMIT")
    result: dict = {}
    for name in ENDPOINTS:
        for level in levels:
            on, off = runs[(name, level, "on")], runs[(name, level, "off")]
            row = {
                "on": statistics.median(r["tps"] for r in on),
                "off": statistics.median(r["tps"] for r in off),
                "p99_on_ms": statistics.median(r["p99_ms"] for r in on),
                "p99_off_ms": statistics.median(r["p99_ms"] for r in off),
            }
            row["cost"] = round(1 - row["on"] / row["off"], 3) if row["off"] else None
            result.setdefault(name, {})[level] = row
            log(f"triggers {name:<8} c={level:<3} {row}")
    return result


def _pgbench(script: dict, name: str, level: int, duration: int, workdir: Path) -> dict:
    defines = script["defines"] | {"bk_n": 0, "bk_nonce": f"trg{time.time_ns()}", "bk_ev": event_nonce()}
    if name == "payment":
        defines |= {"bk_clients": level}
    return load.pgbench(
        script=script["script"],
        connections=level,
        duration=duration,
        dbname=DB_NAME,
        defines=defines,
        workdir=workdir,
    )


def main() -> int:
    """On the dataset in billing_bench, with the scripts of the last run (bench/.work)."""
    workdir = max(WORK.iterdir(), key=lambda p: p.stat().st_mtime)
    with _pg(DB_NAME) as conn:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM bench_pool WHERE kind = 'pay'")
        pool = cur.fetchone()[0]
    scripts = {
        "payment": {"script": workdir / "payment.sql", "defines": {"bk_pool": pool}},
        "create": {"script": workdir / "create.sql", "defines": {}},
    }
    trigger_cost(scripts, workdir, levels=(8, 32), duration=8)
    return 0


if __name__ == "__main__":
    sys.exit(main())
