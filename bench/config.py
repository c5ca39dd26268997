"""What a benchmark run is made of: the profiles (quick, full), the endpoints and their query targets,
paths, the environment the app runs in (bench.settings on `billing_bench`, or the database named by
BENCH_DATABASE), the tools it needs and the machine it reports.

Imported before `django.setup()`: nothing here imports Django at module level.
"""

from __future__ import annotations

import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from bench import load
from bench.seed import Plan
from tests.live.server import logger

ROOT = Path(__file__).resolve().parent.parent
# The only database this harness touches (dropped and created when seeding): `billing_bench`, or
# BENCH_DATABASE, so that two checkouts on one PostgreSQL do not seed over each other. The name must
# say "bench": a mistyped name never drops a database of the app's.
DB_NAME = os.environ.get("BENCH_DATABASE") or "billing_bench"
if not re.fullmatch(r"[a-z_][a-z0-9_]*", DB_NAME) or "bench" not in DB_NAME:
    sys.exit(f"BENCH_DATABASE={DB_NAME!r}: a lower-case identifier with 'bench' in it, e.g. billing_bench_2")
DB_URL = f"postgres://{load.PG['user']}@{load.PG['host']}:{load.PG['port']}/{DB_NAME}"
RESULTS = ROOT / "bench" / "results"  # the Markdown summaries, kept in git
RAW_RESULTS = RESULTS / "raw"  # the full JSON of each run, git-ignored
WORK = ROOT / "bench" / ".work"
# The stored PDFs the `pdf` and `hosted` endpoints serve (bench/capture.py `stored_documents` writes
# them at every run: WORK is emptied at the start of each).
MEDIA_ROOT = WORK / "media"
# One sync worker a core when no sweep chooses: wrk and PostgreSQL run on the same cores as
# gunicorn, and a worker waiting on PostgreSQL leaves its core to them, so workers beyond one a core
# have not paid off in the sweeps (--sweep-workers; the full profile sweeps on every run and its
# results say which count won).
DEFAULT_WORKERS_PER_CORE = 1


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

# Every endpoint is requested with tenant 1's owner's token, except `ping_key`: the ceiling with the
# organization's API key (its ratio is the key's ceiling over the token's), and `hosted`, the hosted
# invoice page, which needs no credential (the token is sent and ignored). `pdf` and `hosted` pick
# one of the invoices whose PDF the run stored (bench/capture.py `stored_documents`).
ENDPOINTS = (
    "ping",
    "ping_key",
    "me",
    "customers",
    "list20",
    "list100",
    "detail",
    "summary",
    "create",
    "payment",
    "pdf",
    "hosted",
)
# The writes carry an Idempotency-Key: the service's own transaction is a savepoint inside the
# idempotency layer's (SAVEPOINT and RELEASE, README "Code layout"), pinned in tests/test_query_counts.py.
# The same targets hold with an API key. The writes' include their events (issue 16: on PostgreSQL one
# statement, the events' INSERT with the read of the endpoints; the lines read for the invoice's
# representation), as tests/test_query_counts.py pins them. mark_overdue's is one statement per time
# zone in use after the read of those zones (bench/capture.py counts the zones), its events, their
# deliveries and job included (invoices.overdue_sql). A stored PDF: the credential,
# then the invoice with its latest version (tests/test_pdf_download.py).
TARGET_QUERIES = {"list": 4, "detail": 4, "summary": 3, "payment": 13, "create": 11, "pdf": 2}


log = logger("bench", clock=True)  # "[bench HH:MM:SS] message", as tests/live/server.py prints it


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
        "MEDIA_ROOT": str(MEDIA_ROOT),
        "PYTHONPATH": str(ROOT),
    }


# A psycopg2 connection of the harness's own (outside Django), closed on exit.
class _pg:
    def __init__(self, dbname: str, autocommit: bool = True):
        self.dbname, self.autocommit = dbname, autocommit

    def __enter__(self):
        self.conn = psycopg2.connect(dbname=self.dbname, **load.PG)
        self.conn.autocommit = self.autocommit
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()


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
