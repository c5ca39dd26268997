"""The benchmark: seed `billing_bench`, count queries, load-test gunicorn with wrk beside pgbench on
the same SQL, profile, check the scale targets, write bench/results/<date>.json and bench/README.md.

    .venv/bin/python bench/run.py --profile quick    # make bench: < 5 minutes
    .venv/bin/python bench/run.py --profile full     # make bench-full: 10 x 100k invoices and 1 x 100k

Options: --reseed (drop and seed even when the data is there), --workers N (skip the choice),
--sweep-workers (measure 2, 4 and 5 workers and take the best; always on in full), --no-profile.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

from bench import load, report  # noqa: E402
from bench.seed import Plan, check_integrity, restore, seed, seeded_plan  # noqa: E402

DB_NAME = "billing_bench"  # the only database this harness touches
DB_URL = f"postgres://{load.PG['user']}@{load.PG['host']}:{load.PG['port']}/{DB_NAME}"
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / ".work"
# 2 cores: 4 sync workers. Measured with --sweep-workers (ping, list, payment at 16 connections):
# 2 workers leave the CPU idle while a worker waits on PostgreSQL, 5 add context switches and
# memory for no throughput (see bench/README.md). Elsewhere: 2 x cores.
DEFAULT_WORKERS_PER_CORE = 2


@dataclass(frozen=True)
class Profile:
    name: str
    plan: Plan  # the data the load run and the scale checks use
    compare: Plan | None  # the same tenant with 10x less data in the table, for growth
    levels: tuple[int, ...]  # wrk connections = pgbench clients
    duration: int  # seconds per endpoint and level
    warmup: int
    profile_seconds: int
    scale_repeats: int
    overdue_repeats: int
    sweep_workers: bool
    sweep_duration: int = 5


PROFILES = {
    "quick": Profile(
        name="quick",
        # Ten tenants, as the full profile has: each is a tenth of the table, as in a deployment many
        # businesses share (with two, the measured tenant was half the table, and PostgreSQL rightly
        # read the whole table instead of an index, which no shared deployment would see).
        plan=Plan(tenants=10, invoices=5_000, customers=50, tiny_invoices=40),
        compare=None,
        levels=(4, 16),
        duration=5,
        warmup=1,
        profile_seconds=8,
        scale_repeats=7,
        overdue_repeats=3,
        sweep_workers=False,
    ),
    "full": Profile(
        name="full",
        plan=Plan(tenants=10, invoices=100_000, customers=500, tiny_invoices=40),
        # 1 tenant x 100k: the same 100k-invoice tenant in a table 10x smaller, so what grows is
        # the table, not the tenant (10 x 10k would shrink the tenant too).
        compare=Plan(tenants=1, invoices=100_000, customers=500, tiny_invoices=40),
        levels=(1, 8, 32),
        duration=20,
        warmup=3,
        profile_seconds=20,
        scale_repeats=15,
        overdue_repeats=3,
        sweep_workers=True,
        sweep_duration=10,
    ),
}

ENDPOINTS = ("ping", "list20", "list100", "detail", "summary", "create", "payment")
TARGET_QUERIES = {"list": 4, "detail": 4, "summary": 3, "payment": 8, "create": 10, "mark_overdue": 1}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- environment --------------------------------------------------------------------------------


def check_tools(need_py_spy: bool) -> None:
    missing = {
        tool: pkg
        for tool, pkg in (("wrk", "wrk"), ("pgbench", "postgresql-client"))
        if not shutil.which(tool)
    }
    if missing and os.geteuid() == 0:
        log(f"installing {', '.join(missing.values())} (Debian packages)")
        subprocess.run(["apt-get", "update", "-qq"], check=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing.values()], check=True, timeout=600)
        missing = {t: p for t, p in missing.items() if not shutil.which(t)}
    if missing:
        sys.exit(f"missing {', '.join(missing)}: sudo apt-get install -y {' '.join(missing.values())}")
    if need_py_spy and not (ROOT / ".venv" / "bin" / "py-spy").exists():
        log("py-spy not installed: profiling skipped (.venv/bin/pip install py-spy==0.4.3)")


def bench_env() -> dict:
    return {
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": DB_URL,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50),
        "PYTHONPATH": str(ROOT),
    }


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def machine(workers: int | None) -> dict:
    import django
    import gunicorn
    import rest_framework

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    with _pg("postgres") as conn:
        cur = conn.cursor()
        cur.execute("SELECT version()")
        pg_version = cur.fetchone()[0].split(" on ")[0]
        cur.execute(
            "SELECT name, setting || COALESCE(unit, '') FROM pg_settings WHERE name IN ('shared_buffers', "
            "'work_mem', 'synchronous_commit', 'fsync', 'jit', 'random_page_cost', 'effective_cache_size', "
            "'max_parallel_workers_per_gather')"
        )
        pg_settings = dict(cur.fetchall())
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "postgresql": pg_version,
        "postgresql_settings": pg_settings,
        "python": platform.python_version(),
        "django": django.get_version(),
        "djangorestframework": rest_framework.VERSION,
        "gunicorn": gunicorn.__version__,
        "gunicorn_workers": workers,
        "wrk": _version(["wrk", "-v"]).split(" Copyright")[0],
        "pgbench": _version(["pgbench", "--version"]),
        "load_average_at_start": list(os.getloadavg()),
    }


# --- database -----------------------------------------------------------------------------------


class _pg:
    def __init__(self, dbname: str, autocommit: bool = True):
        self.dbname, self.autocommit = dbname, autocommit

    def __enter__(self):
        self.conn = psycopg2.connect(dbname=self.dbname, **load.PG)
        self.conn.autocommit = self.autocommit
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()


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
                restore(conn)
                check_integrity(conn)
                conn.commit()
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


def verify_ledger(owner_id: int) -> dict:
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "manage.py", "verify_ledger", "--owner", str(owner_id)],
        cwd=ROOT,
        env=os.environ | bench_env(),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    result = {
        "owner": owner_id,
        "ok": out.returncode == 0,
        "output": (out.stdout + out.stderr).strip().splitlines()[-1:],
        "seconds": round(time.monotonic() - t0, 1),
    }
    log(f"verify_ledger --owner {owner_id}: {'ok' if result['ok'] else 'MISMATCHES'} {result['output']}")
    if not result["ok"]:
        raise RuntimeError(f"verify_ledger failed: {out.stdout[-2000:]}")
    return result


# --- the Django side ----------------------------------------------------------------------------


def tokens() -> dict[str, str]:
    from django.contrib.auth import get_user_model
    from knox.models import AuthToken

    AuthToken.objects.all().delete()
    return {
        user.username: AuthToken.objects.create(user=user)[1]
        for user in get_user_model().objects.filter(username__startswith="bench_").order_by("id")
    }


def pools() -> dict[str, list[int]]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT kind, invoice_id FROM bench_pool ORDER BY kind, k")
        out: dict[str, list[int]] = {}
        for kind, invoice_id in cur.fetchall():
            out.setdefault(kind, []).append(invoice_id)
    return out


def create_body(customer_id: int, n_lines: int = 3) -> dict:
    items = [
        ("Consulting hours", "2", "150.00", "20"),
        ("Software licence", "1", "499.00", "20"),
        ("Travel", "3", "37.50", "0"),
    ]
    return {
        "customer": customer_id,
        "currency": "EUR",
        "due_date": (dt.date.today() + dt.timedelta(days=30)).isoformat(),
        "notes": "bench",
        "lines": [
            dict(zip(("description", "quantity", "unit_price", "tax_rate"), items[i % 3], strict=True))
            for i in range(n_lines)
        ],
    }


def requests_for(ctx: dict) -> dict:
    """The benchmark's requests, for the in-process measurements (same paths and bodies as wrk's)."""
    from bench.inproc import Req

    return {
        "ping": Req("GET", "/bench/ping/"),
        "list20": Req("GET", "/api/invoices/?page_size=20"),
        "list100": Req("GET", "/api/invoices/?page_size=100"),
        "detail": Req("GET", f"/api/invoices/{ctx['pools']['detail'][0]}/"),
        "summary": Req("GET", "/api/invoices/summary/"),
        "create": Req(
            "POST", "/api/invoices/", create_body(ctx["customer"]), f"capture-create-{secrets.token_hex(6)}"
        ),
        "payment": Req(
            "POST",
            "/api/payments/",
            {"invoice": ctx["pools"]["pay"][-1], "amount": "0.01", "method": "card"},
            f"capture-payment-{secrets.token_hex(6)}",
        ),
    }


def query_counts(ctx: dict) -> dict:
    """Queries per request (Django's count, as the tests count them) at two page sizes, two data
    sizes and two line counts; the targets apply to the largest; "independent" asks that they agree."""
    from django.db import connection

    from bench.inproc import Req, api_client, count_mark_overdue_queries, count_queries

    big, tiny = api_client(ctx["tokens"]["bench_t01"]), api_client(ctx["tokens"]["bench_tiny"])
    n_big, n_tiny = ctx["plan"].invoices, ctx["plan"].tiny_invoices
    with connection.cursor() as cur:
        cur.execute(
            "SELECT i.id, count(DISTINCT l.id), count(DISTINCT p.id) FROM invoices_invoice i "
            "JOIN invoices_line l ON l.invoice_id = i.id LEFT JOIN payments_payment p ON p.invoice_id = i.id "
            "WHERE i.owner_id = 1 AND i.id <= 5000 GROUP BY i.id "
            "ORDER BY count(DISTINCT l.id) + 3 * count(DISTINCT p.id), i.id"
        )
        rows = cur.fetchall()
    small_inv, large_inv = rows[0], rows[-1]
    pay = ctx["pools"]["pay"]
    out: dict[str, dict] = {}

    def record(
        name: str, variants: dict[str, int], target: int | None, independent: bool = True, exact=False
    ):
        worst = max(variants.values())
        ok = None if target is None else (worst == target if exact else worst <= target)
        same = len(set(variants.values())) == 1 if independent else None
        out[name] = {
            "variants": variants,
            "max": worst,
            "target": target,
            "exact": exact,
            "independent": same,
            "pass": None if ok is None else bool(ok and same is not False),
        }

    record("ping", {"authenticated DRF view": count_queries(big, Req("GET", "/bench/ping/"))}, None)
    record(
        "list",
        {
            f"page_size=20, tenant of {n_big:,}": count_queries(
                big, Req("GET", "/api/invoices/?page_size=20")
            ),
            f"page_size=100, tenant of {n_big:,}": count_queries(
                big, Req("GET", "/api/invoices/?page_size=100")
            ),
            f"page_size=20, tenant of {n_tiny}": count_queries(
                tiny, Req("GET", "/api/invoices/?page_size=20")
            ),
            f"page_size=100, tenant of {n_tiny}": count_queries(
                tiny, Req("GET", "/api/invoices/?page_size=100")
            ),
        },
        TARGET_QUERIES["list"],
    )
    record(
        "detail",
        {
            f"{small_inv[1]} line(s), {small_inv[2]} payment(s)": count_queries(
                big, Req("GET", f"/api/invoices/{small_inv[0]}/")
            ),
            f"{large_inv[1]} lines, {large_inv[2]} payments": count_queries(
                big, Req("GET", f"/api/invoices/{large_inv[0]}/")
            ),
        },
        TARGET_QUERIES["detail"],
    )
    record(
        "summary",
        {
            f"tenant of {n_big:,}": count_queries(big, Req("GET", "/api/invoices/summary/")),
            f"tenant of {n_tiny}": count_queries(tiny, Req("GET", "/api/invoices/summary/")),
            "status=sent&status=overdue&search=Acme": count_queries(
                big, Req("GET", "/api/invoices/summary/?status=sent&status=overdue&search=Acme")
            ),
        },
        TARGET_QUERIES["summary"],
    )
    key = secrets.token_hex(4)
    record(
        "create",
        {
            f"{n} line(s), Idempotency-Key": count_queries(
                big,
                Req("POST", "/api/invoices/", create_body(ctx["customer"], n), f"qc-{key}-{n}"),
                expect=201,
            )
            for n in (1, 3, 100)
        }
        | {
            "3 lines, no key": count_queries(
                big, Req("POST", "/api/invoices/", create_body(ctx["customer"], 3)), expect=201
            )
        },
        TARGET_QUERIES["create"],
        independent=False,
    )
    # independence in the number of lines: compare the keyed variants only
    keyed = [v for k, v in out["create"]["variants"].items() if "Idempotency-Key" in k]
    out["create"]["independent"] = len(set(keyed)) == 1
    out["create"]["pass"] = out["create"]["pass"] and out["create"]["independent"]
    body = {"amount": "0.01", "method": "card"}
    record(
        "payment",
        {
            "Idempotency-Key": count_queries(
                big, Req("POST", "/api/payments/", body | {"invoice": pay[0]}, f"qc-{key}-pay"), expect=201
            ),
            "no key": count_queries(
                big, Req("POST", "/api/payments/", body | {"invoice": pay[1]}), expect=201
            ),
        },
        TARGET_QUERIES["payment"],
        independent=False,
    )
    record(
        "mark_overdue",
        {"whole table": count_mark_overdue_queries()},
        TARGET_QUERIES["mark_overdue"],
        exact=True,
    )
    for name, row in out.items():
        log(f"queries {name:<12} {row['variants']} target {row['target']} pass {row['pass']}")
    return out


def pgbench_scripts(ctx: dict, workdir: Path) -> dict:
    """Each endpoint's SQL, captured from one real request, as a pgbench script.

    Exactly the statements Django sent (parameters interpolated, the CONN_HEALTH_CHECKS `SELECT 1`,
    BEGIN/COMMIT where Django's transactions are), with these variables so each transaction is a new
    request: the invoice id (payment: cycled through the same pool as wrk's, so no two clients pay
    one invoice at once; detail: random from the same pool, looked up in `bench_pool`, one extra
    primary-key query), the Idempotency-Key and its advisory lock id (unique per transaction), the
    created invoice's id (`\\gset` from its INSERT ... RETURNING), and for payment
    `amount_paid = amount_paid + 0.01` for the captured absolute value, so the books stay exact.
    """
    from bench.inproc import api_client, capture, replace_outside_quotes

    client = api_client(ctx["tokens"]["bench_t01"])
    reqs = requests_for(ctx)
    out = {}
    for name in ENDPOINTS:
        req = reqs[name]
        expect = 201 if req.method == "POST" else 200
        events, response = capture(client, req, expect)
        created = response.json()["id"] if name == "create" else None
        lines: list[str] = []
        defines: dict[str, str | int] = {}
        invoice_literal = None
        if name == "payment":
            invoice_literal = str(req.body["invoice"])
            lines += [
                r"\set bk_n :bk_n + 1",
                r"\set bk_k (:client_id + :bk_clients * :bk_n) % :bk_pool",
                r"SELECT invoice_id AS bk_inv FROM bench_pool WHERE kind = 'pay' AND k = :bk_k \gset",
            ]
            defines = {"bk_pool": len(ctx["pools"]["pay"])}
        elif name == "detail":
            invoice_literal = str(ctx["pools"]["detail"][0])
            lines += [
                r"\set bk_k random(0, :bk_pool - 1)",
                r"SELECT invoice_id AS bk_inv FROM bench_pool WHERE kind = 'detail' AND k = :bk_k \gset",
            ]
            defines = {"bk_pool": len(ctx["pools"]["detail"])}
        elif name == "create":
            lines.append(r"\set bk_n :bk_n + 1")
        if req.idempotency_key:
            lines.append(r"\set bk_lock random(1, 4000000000000000000)")
            defines |= {"bk_n": 0, "bk_nonce": f"pgb{time.time_ns()}"}
        counts = {"invoice": 0, "key": 0, "lock": 0, "amount_paid": 0, "created": 0}
        statements = 0
        for kind, sql in events:
            if kind == "health":
                lines.append("SELECT 1;")
                continue
            if kind != "sql":
                lines.append(f"{kind.upper()};")
                continue
            statements += 1
            text = sql.strip().rstrip(";")
            if req.idempotency_key and req.idempotency_key in text:
                counts["key"] += text.count(req.idempotency_key)
                text = text.replace(req.idempotency_key, ":bk_nonce-:client_id-:bk_n")
            if "pg_try_advisory_xact_lock(" in text:
                head, _, tail = text.partition("pg_try_advisory_xact_lock(")
                text = head + "pg_try_advisory_xact_lock(:bk_lock)" + tail.split(")", 1)[1]
                counts["lock"] += 1
            if invoice_literal:
                text, n = replace_outside_quotes(text, invoice_literal, ":bk_inv")
                counts["invoice"] += n
            if name == "payment" and text.startswith('UPDATE "invoices_invoice"'):
                text, n = re.subn(r'"amount_paid" = [\d.]+', '"amount_paid" = "amount_paid" + 0.01', text)
                counts["amount_paid"] += n
            if created is not None:
                if text.startswith('INSERT INTO "invoices_invoice"'):
                    lines.append(f"{text} \\gset bk_")
                    continue
                text, n = replace_outside_quotes(text, str(created), ":bk_id")
                counts["created"] += n
            lines.append(f"{text};")
        expected = {
            "payment": {"invoice": 3, "key": 2, "lock": 1, "amount_paid": 1},
            "detail": {"invoice": 3},
            "create": {"key": 2, "lock": 1, "created": 1},
        }.get(name, {})
        short = {k: counts[k] for k, v in expected.items() if counts[k] < v}
        if short:
            raise RuntimeError(
                f"pgbench script for {name}: substitutions missing {short}:\n" + "\n".join(lines)
            )
        path = workdir / f"{name}.sql"
        path.write_text("\n".join(lines) + "\n")
        smoke_defines = defines | ({"bk_clients": 1} if name == "payment" else {})
        load.pgbench(
            script=path, connections=1, transactions=2, dbname=DB_NAME, defines=smoke_defines, workdir=workdir
        )
        out[name] = {
            "script": path,
            "defines": defines,
            "queries": statements,
            # every statement, BEGIN and COMMIT is a round trip; so is the health check
            "round_trips": len(events),
            "sql": [("-- " if kind != "sql" else "") + (sql or kind.upper()) for kind, sql in events],
        }
    log(
        "pgbench scripts: "
        + ", ".join(f"{n} {s['queries']} queries/{s['round_trips']} round trips" for n, s in out.items())
    )
    return out


# --- the load run -------------------------------------------------------------------------------


def wrk_spec(name: str, ctx: dict, workdir: Path) -> dict:
    token = ctx["tokens"]["bench_t01"]
    if name == "ping":
        return {"mode": "get", "path": "/bench/ping/", "token": token}
    if name in ("list20", "list100"):
        return {"mode": "get", "path": f"/api/invoices/?page_size={name[4:]}", "token": token}
    if name == "summary":
        return {"mode": "get", "path": "/api/invoices/summary/", "token": token}
    if name == "detail":
        pool = workdir / "pool_detail.txt"
        pool.write_text("\n".join(map(str, ctx["pools"]["detail"])) + "\n")
        return {"mode": "detail", "path": "/api/invoices/", "token": token, "pool": pool}
    if name == "create":
        body = json.dumps(create_body(ctx["customer"]))
        return {"mode": "create", "path": "/api/invoices/", "token": token, "body": body}
    pool = workdir / "pool_pay.txt"
    pool.write_text("\n".join(map(str, ctx["pools"]["pay"])) + "\n")
    body = '{"invoice": %s, "amount": "0.01", "method": "card"}'
    return {"mode": "payment", "path": "/api/payments/", "token": token, "pool": pool, "body": body}


def sweep_workers(ctx: dict, profile: Profile, workdir: Path, rounds: int = 2) -> dict:
    """Throughput of ping, list20 and payment at 16 connections for 2, 4 and 5 workers, in
    interleaved rounds (2, 4, 5, 2, 4, 5) so that a burst of outside load hits every setting alike;
    each setting keeps its best round per endpoint. The best geometric mean wins, the fewer workers
    when within 3%."""
    candidates = (2, 4, 5)
    runs: dict[int, list[dict]] = {w: [] for w in candidates}
    for _ in range(rounds):
        for workers in candidates:
            with load.Gunicorn(workers=workers, env=os.environ | bench_env(), log=workdir / "gunicorn.log"):
                load.wrk(connections=16, duration=2, **wrk_spec("ping", ctx, workdir))
                rps = {
                    name: load.wrk(
                        connections=16, duration=profile.sweep_duration, **wrk_spec(name, ctx, workdir)
                    )["rps"]
                    for name in ("ping", "list20", "payment")
                }
            runs[workers].append(rps)
            log(f"workers {workers}: {rps}")
    results = {}
    for workers, rounds_rps in runs.items():
        best = {name: max(r[name] for r in rounds_rps) for name in rounds_rps[0]}
        best["geomean"] = round(math.exp(statistics.mean(math.log(max(v, 0.1)) for v in best.values())), 1)
        results[workers] = best
    top = max(results, key=lambda w: results[w]["geomean"])
    chosen = min(w for w in results if results[w]["geomean"] >= 0.97 * results[top]["geomean"])
    return {"measured": results, "rounds": runs, "chosen": chosen}


def load_run(
    ctx: dict, profile: Profile, scripts: dict, workers: int, workdir: Path, do_profile: bool, only: list[str]
) -> dict:
    endpoints: dict[str, dict] = {}
    hotspots: dict[str, dict] = {}
    with load.Gunicorn(workers=workers, env=os.environ | bench_env(), log=workdir / "gunicorn.log") as server:
        load.wrk(connections=max(profile.levels), duration=2, **wrk_spec("ping", ctx, workdir))
        ping_spec = wrk_spec("ping", ctx, workdir)
        pair = max(2, profile.duration // 2)
        for name in only:
            spec = wrk_spec(name, ctx, workdir)
            load.wrk(connections=max(profile.levels), duration=profile.warmup, **spec)
            row: dict = {"http": {}, "pgbench": {}}
            for level in profile.levels:
                paired = None
                if name != "ping":  # the ceiling again, right before: outside load drifts
                    paired = load.wrk(connections=level, duration=pair, **ping_spec)["rps"]
                row["http"][level] = load.wrk(connections=level, duration=profile.duration, **spec)
                row["http"][level]["paired_ping_rps"] = paired
                log(
                    f"wrk     {name:<8} c={level:<3} {_fmt(row['http'][level])} (ceiling just before: {paired})"
                )
            for level in profile.levels:
                script = scripts[name]
                row["pgbench"][level] = load.pgbench(
                    script=script["script"],
                    connections=level,
                    duration=profile.duration,
                    dbname=DB_NAME,
                    defines=script["defines"]
                    | ({"bk_clients": level} if name == "payment" else {})
                    | ({"bk_nonce": f"pgb{time.time_ns()}"} if "bk_nonce" in script["defines"] else {}),
                    workdir=workdir,
                )
                log(f"pgbench {name:<8} c={level:<3} {row['pgbench'][level]}")
            endpoints[name] = row
        if do_profile and (ROOT / ".venv" / "bin" / "py-spy").exists():
            level = profile.levels[-1] if len(profile.levels) < 3 else profile.levels[1]
            for name in [n for n in ("list20", "payment") if n in only]:
                spec = wrk_spec(name, ctx, workdir)
                hotspots[name] = load.py_spy(
                    pid=server.pid,
                    seconds=profile.profile_seconds,
                    out=workdir / f"py-spy-{name}.txt",
                    load=lambda spec=spec, level=level: load.wrk(
                        connections=level, duration=profile.profile_seconds - 3, **spec
                    ),
                )
                hotspots[name]["connections"] = level
                log(
                    f"py-spy  {name}: {hotspots[name].get('samples')} samples; top self {hotspots[name].get('self', [])[:3]}"
                )
    return {"endpoints": endpoints, "hotspots": hotspots}


def _fmt(r: dict) -> str:
    err = f" errors {r['errors']} {r['error_detail']}" if r["errors"] else ""
    return f"{r['rps']:>8.1f} req/s  p50 {r['p50_ms']:>7.2f} ms  p99 {r['p99_ms']:>7.2f} ms{err}"


# --- scale checks -------------------------------------------------------------------------------


def reset_statuses() -> None:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute(
            "UPDATE invoices_invoice i SET status = s.status FROM bench_seed_status s "
            "WHERE i.id = s.id AND i.status <> s.status"
        )
        cur.execute("VACUUM (ANALYZE) invoices_invoice")


def scale_checks(ctx: dict, profile: Profile, label: str) -> dict:
    """For tenant 1: the summary and the first list page (server time, in-process), their plans,
    and mark_overdue over the whole table (reset to the seeded statuses between runs)."""
    from bench.inproc import Req, api_client, capture, explain, plan_summary, server_time, time_mark_overdue

    client = api_client(ctx["tokens"]["bench_t01"])
    summary_req, list_req = Req("GET", "/api/invoices/summary/"), Req("GET", "/api/invoices/")
    out: dict = {
        "label": label,
        "tenant_invoices": ctx["plan"].invoices,
        "table_invoices": ctx["plan"].total_invoices,
        "summary": server_time(client, summary_req, repeat=profile.scale_repeats),
        "list_first_page": server_time(client, list_req, repeat=profile.scale_repeats),
        "explain": {},
    }
    for name, req in (("summary", summary_req), ("list_first_page", list_req)):
        for i, (_, sql) in enumerate(e for e in capture(client, req, 200)[0] if e[0] == "sql"):
            if "invoices_invoice" not in sql:
                continue
            plan = explain(sql)
            kind = "aggregate" if name == "summary" else ("count" if "COUNT(*)" in sql else "page")
            key = f"{name} {kind} (query {i + 1})"
            out["explain"][key] = {"sql": sql, "plan": plan, **plan_summary(plan)}
    runs = []
    for _ in range(profile.overdue_repeats):
        reset_statuses()
        seconds, moved, statements = time_mark_overdue()
        runs.append({"seconds": round(seconds, 3), "moved": moved, "statements": statements})
    reset_statuses()
    out["mark_overdue"] = {
        "median_s": round(statistics.median(r["seconds"] for r in runs), 3),
        "moved": runs[0]["moved"],
        "statements": runs[0]["statements"],
        "runs": runs,
    }
    log(
        f"scale {label}: summary {out['summary']['median_ms']} ms, first page {out['list_first_page']['median_ms']} ms, "
        f"mark_overdue {out['mark_overdue']['median_s']} s for {out['mark_overdue']['moved']:,} rows"
    )
    return out


# --- main ---------------------------------------------------------------------------------------


def context_for(plan: Plan) -> dict:
    from customers.models import Customer

    return {
        "plan": plan,
        "tokens": tokens(),
        "pools": pools(),
        "customer": Customer.objects.filter(owner__username="bench_t01")
        .order_by("id")
        .values_list("id", flat=True)
        .first(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument(
        "--reseed", action="store_true", help="drop and seed billing_bench even if the data is there"
    )
    parser.add_argument(
        "--workers", type=int, help="gunicorn workers (default: measured in full, 2 x cores in quick)"
    )
    parser.add_argument(
        "--sweep-workers", action="store_true", help="measure 2, 4 and 5 workers and take the best"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--no-readme", action="store_true", help="write the JSON only, leave bench/README.md")
    parser.add_argument("--duration", type=int, help="seconds per endpoint and level (overrides the profile)")
    parser.add_argument(
        "--levels", help="comma-separated connection counts (overrides the profile), e.g. 4,16"
    )
    parser.add_argument("--seed-only", action="store_true", help="seed the profile's data set, report, stop")
    parser.add_argument(
        "--endpoints",
        help=f"comma-separated subset of {','.join(ENDPOINTS)} for the load run (ping is always run)",
    )
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    if args.duration:
        profile = replace(
            profile, duration=args.duration, sweep_duration=min(profile.sweep_duration, args.duration)
        )
    if args.levels:
        profile = replace(profile, levels=tuple(int(c) for c in args.levels.split(",")))
    only = list(ENDPOINTS)
    if args.endpoints:
        wanted = set(args.endpoints.split(",")) | {"ping"}
        if wanted - set(ENDPOINTS):
            parser.error(f"unknown endpoints: {', '.join(sorted(wanted - set(ENDPOINTS)))}")
        only = [n for n in ENDPOINTS if n in wanted]
    check_tools(need_py_spy=not args.no_profile)
    os.environ.update(bench_env())
    import logging
    import warnings

    import django

    django.setup()
    # In-process requests would print their access-log line to this terminal; gunicorn keeps it.
    logging.getLogger("billing.request").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="No directory at")
    RESULTS.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    if args.seed_only:
        info = ensure_dataset(profile.plan, reseed=args.reseed)
        print(json.dumps(info, indent=2))
        return 0
    for old in WORK.iterdir():  # the previous run's scripts, pools and logs
        shutil.rmtree(old, ignore_errors=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{profile.name}-", dir=WORK))
    started = time.monotonic()
    result: dict = {
        "profile": profile.name,
        "date": dt.date.today().isoformat(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": {
            "levels": list(profile.levels),
            "duration_s": profile.duration,
            "warmup_s": profile.warmup,
            "plan": asdict(profile.plan),
            "compare": asdict(profile.compare) if profile.compare else None,
            "gunicorn": "sync workers, 127.0.0.1:8301, DB_CONN_MAX_AGE default (persistent), CONN_HEALTH_CHECKS on",
            "pgbench": "-M simple, one connection per client, same client count as wrk connections",
        },
        "datasets": {},
        "machine": machine(None),
    }
    # Full: measure the dataset already in the database first, so a rerun reseeds only one of the two.
    plans = [("load", profile.plan)]
    if profile.compare:
        plans.append(("compare", profile.compare))
        if _db_exists() and not args.reseed:
            with _pg(DB_NAME, autocommit=False) as conn:
                if _same_plan(seeded_plan(conn), profile.compare):
                    plans.reverse()
    try:
        for role, plan in plans:
            info = ensure_dataset(plan, reseed=args.reseed)
            result["datasets"][role] = info
            ctx = context_for(plan)
            if role == "load":
                if profile.name == "quick" or not info["reused"]:
                    result["verify_ledger_after_seed"] = verify_ledger(owner_id=1)
                result["query_counts"] = query_counts(ctx)
                scripts = pgbench_scripts(ctx, workdir)
                result["sql"] = {n: s["sql"] for n, s in scripts.items()}
                result["round_trips"] = {n: s["round_trips"] for n, s in scripts.items()}
                _restore_now()
                workers = args.workers
                if workers is None and (profile.sweep_workers or args.sweep_workers):
                    result["worker_sweep"] = sweep_workers(ctx, profile, workdir)
                    workers = result["worker_sweep"]["chosen"]
                    _restore_now()
                workers = workers or DEFAULT_WORKERS_PER_CORE * (os.cpu_count() or 1)
                result["machine"]["gunicorn_workers"] = workers
                result.update(load_run(ctx, profile, scripts, workers, workdir, not args.no_profile, only))
                _restore_now()
                result["scale"] = result.get("scale", {}) | {"load": scale_checks(ctx, profile, _label(plan))}
                if profile.name == "quick":
                    result["verify_ledger_after_run"] = verify_ledger(owner_id=1)
            else:
                result["scale"] = result.get("scale", {}) | {
                    "compare": scale_checks(ctx, profile, _label(plan))
                }
    finally:
        from django.db import connections

        connections.close_all()
        if _db_exists():
            with _pg(DB_NAME, autocommit=False) as conn:
                if seeded_plan(conn):
                    restore(conn)
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    result["duration_s"] = round(time.monotonic() - started, 1)
    report.finish(result, ROOT, write_readme=not args.no_readme)
    log(f"done in {result['duration_s']} s")
    return 0


def _label(plan: Plan) -> str:
    return f"{plan.tenants} x {plan.invoices:,} invoices"


def _restore_now() -> None:
    from django.db import connections

    connections.close_all()
    with _pg(DB_NAME, autocommit=False) as conn:
        restore(conn)
        conn.autocommit = True
        conn.cursor().execute("VACUUM (ANALYZE)")


if __name__ == "__main__":
    sys.exit(main())
