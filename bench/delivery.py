"""The delivery benchmark (issue 15), on PostgreSQL: what rendering an invoice's PDF costs, how many
emails a second the worker hands to an SMTP server, and what the delivery outbox adds to a send.

    .venv/bin/python bench/delivery.py      # about 4 minutes on the 2-core box (under 5)
    .venv/bin/python bench/delivery.py --emails 20 --renders 5 --duration 2 --rounds 1 --no-readme  # smoke
    .venv/bin/python bench/delivery.py --only emails    # part 2 alone

1. **PDF render time**: `delivery.documents.render_pdf` in this process, for an issued invoice of 5
   lines and one of 100, loaded as the worker loads it (organization and customer joined, lines
   prefetched; only the render is timed): 3 warm-up renders, then `--renders` (30) timed ones each;
   p50 and p99 (nearest rank), the PDF's size and pages.
2. **Emails per second**: an aiosmtpd server on 127.0.0.1 in this process, with a bare handler that
   notes when each message arrived and its Message-ID (tests/smtp_helpers.py's server also parses
   every message, which would take CPU from the worker being measured). `--emails` (200) drafts of
   5 lines are issued with `delivery.services.invoice_send_and_deliver` (each queues its email with
   one job, `deliver_invoice`, whose worker writes, renders and stores PDF version 1 first when it is
   not stored, as `POST /send/` does), then drained by one, and by two,
   `manage.py run_worker --interval 0.05 --no-scheduler --no-startup-delay` processes, started once
   every job is queued. Twice: with the PDFs stored before the workers start (version 1 of each
   written, then rendered with `delivery.services.document_render`, as the worker would, in one forked process a core, not
   timed, so the figure is the SMTP path: claim, read the stored
   PDF, build and send the message, record it) and with them not stored yet (the worker renders,
   then sends). Messages/s counts from the first message received to the last, (N - 1) / span;
   start to last (with the worker's start-up) is reported too, and each job's run time as the
   task table records it (`started_at`, `finished_at`). Every email row must end `sent` after one
   attempt, every job done, each Message-ID received exactly once.
3. **Send throughput**: `POST /api/invoices/{id}/send/` (the delivery app's view: issue, and queue
   the PDF version and the email in the same transaction) against the invoices app's own send view
   (`invoices.services.invoice_send`: status and number only), mounted for the run at `/bench/plain/`
   by a settings module and URLconf written to the run's temporary directory (bench.settings, and
   bench.urls plus `invoices.urls`; nothing of the app changes). gunicorn as the harness starts it
   (`bench.load.gunicorn`: ./gunicorn.conf.py, sync workers, one a core), wrk closed loop at
   `--connections` (4) for `--duration` (5 s) a run, plain and delivery interleaved over `--rounds`
   (3), each request a fresh draft of 3 lines (none sent twice; a non-2xx answer stops the run).
   First every send is one organization's (as the harness's requests are tenant 1's: its sends
   queue on the organization's number-sequence row lock, held to the commit), then round robin
   over `--organizations` (8). The ratio is delivery's median over plain's; target ≥ 0.90. The two
   services are also timed in-process (one thread, fresh drafts, interleaved rounds).

The drafts are made by `invoice_create` once per batch and copied row for row in SQL (`drafts`), so
thousands cost a second. It only ever touches the database `billing_bench_delivery` (dropped,
created and migrated at each start), or the one BENCH_DELIVERY_DATABASE names (with `bench` in it);
the stored PDFs go to a temporary MEDIA_ROOT, removed at the end. Results:
bench/results/<date>-delivery.md (kept in git), bench/results/raw/<date>-delivery.json
(git-ignored) and the table of bench/README.md between its `results:delivery` markers (unless
--no-readme).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

from bench import load  # noqa: E402
from bench.config import RAW_RESULTS, RESULTS, bench_env, check_tools, log, machine  # noqa: E402
from tests.live.server import HOST, free_port  # noqa: E402

DB_NAME = os.environ.get("BENCH_DELIVERY_DATABASE") or "billing_bench_delivery"
if not re.fullmatch(r"[a-z_][a-z0-9_]*", DB_NAME) or "bench" not in DB_NAME:
    sys.exit(f"BENCH_DELIVERY_DATABASE={DB_NAME!r}: a lower-case identifier with 'bench' in it")
DB_URL = f"postgres://{load.PG['user']}@{load.PG['host']}:{load.PG['port']}/{DB_NAME}"
TARGET_RATIO = 0.90  # delivery's sends/s at least 90 % of the plain send's
WARMUP_RENDERS = 3
README_START, README_END = "<!-- results:delivery:start -->", "<!-- results:delivery:end -->"

SEND_LUA = r"""
-- POST <prefix><id>/send/ with a fresh draft each time. BENCH_POOL: one "<token> <id>" a line (the
-- token of the draft's organization's owner); thread t takes lines t, t + n, t + 2n, ... so no
-- draft is sent twice.
local prefix = os.getenv("BENCH_PATH")
local pool_file = os.getenv("BENCH_POOL")
local nthreads = tonumber(os.getenv("BENCH_THREADS") or "1")
local next_tid = 0
function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
local tokens = {}
local ids = {}
local counter = 0
local headers = {}
function init(args)
  headers["Content-Type"] = "application/json"
  for line in io.lines(pool_file) do
    local token, id = line:match("^(%S+) (%d+)$")
    tokens[#tokens + 1] = token
    ids[#ids + 1] = id
  end
end
function request()
  local i = tid + nthreads * counter + 1
  counter = counter + 1
  if i > #ids then i = #ids end  -- exhausted: the pool's last draft again, a 409 that stops the run
  headers["Authorization"] = "Token " .. tokens[i]
  return wrk.format("POST", prefix .. ids[i] .. "/send/", headers, "{}")
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

# The run's own settings and URLconf, written to its temporary directory (on gunicorn's PYTHONPATH):
# the benchmark's settings, with the invoices app's own viewset mounted at /bench/plain/ (its names
# namespaced, so reversing the app's routes is unchanged).
SETTINGS_PY = 'from bench.settings import *  # noqa: F403\n\nROOT_URLCONF = "bench_delivery_urls"\n'
URLS_PY = """from django.urls import include, path

urlpatterns = [
    path("bench/plain/", include(("invoices.urls", "plain"))),
    path("", include("bench.urls")),
]
"""


def percentile(values: list[float], p: float) -> float:
    return load.percentile(sorted(values), p)


# --- set-up -------------------------------------------------------------------------------------


def recreate_database() -> None:
    conn = psycopg2.connect(dbname="postgres", **load.PG)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{DB_NAME}"')
    conn.close()


def environment(workdir: Path, smtp_port: int) -> dict:
    """The app's environment, as the harness's (bench.settings, DEBUG off), on this run's database,
    its SMTP server and a temporary MEDIA_ROOT."""
    return bench_env() | {
        "DATABASE_URL": DB_URL,
        "EMAIL_URL": f"smtp://{HOST}:{smtp_port}",
        "MEDIA_ROOT": str(workdir / "media"),
        "PUBLIC_URL": "https://billing.example.com",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": f"{workdir}{os.pathsep}{ROOT}",
    }


def seed(organizations: int) -> list[dict]:
    """`organizations` organizations with their seller's details, each with its owner, a token of
    theirs and two customers; the first is the one every measure but the spread send runs uses."""
    from django.contrib.auth import get_user_model
    from knox.models import get_token_model

    from customers.services import customer_create
    from users.models import Membership
    from users.services import organization_create

    out = []
    for k in range(1, organizations + 1):
        owner = get_user_model().objects.create_user(
            username=f"bench_delivery_{k}", email=f"owner{k}@studio.example", password=None
        )
        organization = organization_create(
            name="Northwind Studio" if k == 1 else f"Northwind Studio {k}",
            owner=owner,
            legal_name="Northwind Studio GmbH",
            address="Torstraße 101\n10119 Berlin\nGermany",
            tax_id="DE123456789",
            phone="+49 30 1234567",
            invoice_footer="Bank: Example Bank · IBAN DE89 3704 0044 0532 0130 00 · BIC COBADEFFXXX",
            default_currency="EUR",
        )
        membership = Membership.objects.get(user=owner, organization=organization)
        _, token = get_token_model().objects.create(user=owner, membership=membership)
        customers = [
            customer_create(
                organization=organization,
                name=f"Acme Corporation {n}",
                email=f"ap{n}@acme.example",
                address="1 Market Street\nSan Francisco, CA 94105",
                tax_id="US-99-1234567",
            )
            for n in (1, 2)
        ]
        out.append({"organization": organization, "owner": owner, "token": token, "customers": customers})
    return out


def lines(count: int) -> list[dict]:
    return [
        {
            "description": f"Consulting, week {n + 1}: design review and implementation",
            "quantity": Decimal(1 + n % 4),
            "unit_price": Decimal("125.50") + n,
            "tax_rate": Decimal("19"),
        }
        for n in range(count)
    ]


LARGEST = 500  # lines (invoices.models.MAX_LINES), each of 500 characters (Line.description's most)


def largest_lines() -> list[dict]:
    """The largest draft the contract accepts: 500 lines of 500 characters, wide figures."""
    words = [
        "consulting",
        "design",
        "audit",
        "review",
        "travel",
        "hosting",
        "licence",
        "support",
        "maintenance",
    ]
    return [
        {
            "description": " ".join(words[(n + k) % len(words)] for k in range(60))[:500],
            "quantity": Decimal("12345.678"),
            "unit_price": Decimal("98765.4321"),
            "tax_rate": Decimal("20"),
        }
        for n in range(LARGEST)
    ]


def drafts(ctx: dict, count: int, n_lines: int) -> list[int]:
    """`count` drafts of `n_lines` lines of the organization: one made by `invoice_create`, the
    others copies of it, row for row, in two INSERT ... SELECT statements (the invoice table's
    triggers keep InvoiceTotals as for any insert), so that thousands cost a second, not a minute."""
    from django.db import connection, transaction

    from invoices.models import Invoice, Line
    from invoices.services import invoice_create

    template = invoice_create(
        organization=ctx["organization"],
        customer_id=ctx["customers"][0].pk,
        lines=lines(n_lines),
        notes="Thank you for your business.",
        actor=ctx["owner"],
    ).pk
    if count == 1:
        return [template]
    invoice_columns = ", ".join(f.column for f in Invoice._meta.concrete_fields if not f.primary_key)
    line_columns = [f.column for f in Line._meta.concrete_fields if not f.primary_key]
    copied = ", ".join("new.id" if c == "invoice_id" else f"l.{c}" for c in line_columns)
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {Invoice._meta.db_table} ({invoice_columns}) SELECT {invoice_columns} "
            f"FROM {Invoice._meta.db_table} CROSS JOIN generate_series(1, %s) WHERE id = %s RETURNING id",
            [count - 1, template],
        )
        ids = [row[0] for row in cur.fetchall()]
        cur.execute(
            f"INSERT INTO {Line._meta.db_table} ({', '.join(line_columns)}) SELECT {copied} "
            f"FROM unnest(%s::bigint[]) AS new(id) CROSS JOIN {Line._meta.db_table} l WHERE l.invoice_id = %s",
            [ids, template],
        )
    return [template, *ids]


def for_rendering(invoice_id: int):
    """The invoice as the worker loads it (delivery.services: organization and customer joined,
    lines prefetched)."""
    from invoices.models import Invoice

    return (
        Invoice.objects.select_related("organization", "customer")
        .prefetch_related("lines")
        .get(pk=invoice_id)
    )


# --- 1. PDF render time -------------------------------------------------------------------------


def render_times(ctx: dict, renders: int) -> dict:
    import io

    from pypdf import PdfReader

    from delivery import documents
    from invoices.services import invoice_send

    out = {}
    from invoices.services import invoice_create

    for n_lines in (5, 100, LARGEST):
        if n_lines == LARGEST:  # a draft, as a request renders it: seconds each, so a few renders
            invoice_id = invoice_create(
                organization=ctx["organization"],
                customer_id=ctx["customers"][0].pk,
                lines=largest_lines(),
                actor=ctx["owner"],
            ).pk
            warmup, timed = 1, max(3, renders // 10)
        else:
            (invoice_id,) = drafts(ctx, 1, n_lines)
            invoice_send(organization=ctx["organization"], invoice_id=invoice_id, actor=ctx["owner"])
            warmup, timed = WARMUP_RENDERS, renders
        invoice = for_rendering(invoice_id)
        list(invoice.lines.all())
        for _ in range(warmup):
            pdf = documents.render_pdf(invoice)
        times = []
        for _ in range(timed):
            started = time.perf_counter()
            pdf = documents.render_pdf(invoice)
            times.append((time.perf_counter() - started) * 1000)
        out[n_lines] = {
            "renders": timed,
            "warmup": warmup,
            "p50_ms": round(percentile(times, 50), 1),
            "p99_ms": round(percentile(times, 99), 1),
            "mean_ms": round(statistics.mean(times), 1),
            "min_ms": round(min(times), 1),
            "max_ms": round(max(times), 1),
            "pdf_bytes": len(pdf),
            "pages": len(PdfReader(io.BytesIO(pdf)).pages),
        }
        log(f"render {n_lines:>3} lines: {out[n_lines]}")
    return out


# --- 2. emails per second -----------------------------------------------------------------------


class Smtp:
    """aiosmtpd on 127.0.0.1: notes when each message arrived and its Message-ID, nothing more."""

    def __init__(self):
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.lock = threading.Lock()
        self.received: list[tuple[float, str]] = []
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                head = envelope.content.split(b"\r\n\r\n", 1)[0]
                match = re.search(rb"^Message-ID:\s*(\S+)", head, re.MULTILINE | re.IGNORECASE)
                with outer.lock:
                    outer.received.append((time.monotonic(), match.group(1).decode() if match else ""))
                return "250 Message accepted for delivery"

        self.controller = Controller(Handler(), hostname=HOST, port=self.port, ready_timeout=10)

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()

    def take(self) -> list[tuple[float, str]]:
        with self.lock:
            taken, self.received = self.received, []
        return taken

    def count(self) -> int:
        with self.lock:
            return len(self.received)


def start_worker(env: dict, log_path: Path) -> tuple[subprocess.Popen, object]:
    output = log_path.open("wb")
    process = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "manage.py",
            "run_worker",
            "--interval",
            "0.05",
            "--no-scheduler",
            "--no-startup-delay",
        ],
        cwd=ROOT,
        env=os.environ | env | {"DJANGO_SETTINGS_MODULE": "billing.settings", "PYTHONUNBUFFERED": "1"},
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, output


def stop_worker(process: subprocess.Popen, output) -> int | None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    output.close()
    return process.returncode


def _render_document(pk: int) -> None:
    from delivery.services import document_render

    document_render(pk)


def prerender(documents: list[int]) -> None:
    """Render and store the PDF versions `documents` as the worker would (`document_render`), in
    one forked process a core (set-up, not measured: it only saves time)."""
    import multiprocessing

    from django.db import connections

    connections.close_all()  # each child opens its own
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 1) as pool:
        pool.map(_render_document, documents, chunksize=5)


def email_run(ctx: dict, smtp: Smtp, env: dict, workdir: Path, *, n: int, workers: int, stored: bool) -> dict:
    from django.db import connections
    from django.utils import timezone
    from django_tasks_db.models import DBTaskResult

    from delivery import services
    from delivery.models import Document, OutboundEmail

    label = f"{'stored' if stored else 'not stored'}, {workers} worker{'s' if workers > 1 else ''}"
    ids = drafts(ctx, n, 5)
    since = timezone.now()
    started = time.monotonic()
    for invoice_id in ids:
        services.invoice_send_and_deliver(
            organization=ctx["organization"], invoice_id=invoice_id, actor=ctx["owner"]
        )
    queue_s = time.monotonic() - started
    # An emailed send writes the email, not the PDF's version: its worker writes version 1 first.
    queued = Document.objects.filter(invoice_id__in=ids).count()
    emails = dict(OutboundEmail.objects.filter(invoice_id__in=ids).values_list("message_id", "pk"))
    if (queued, len(emails)) != (0, n):
        raise RuntimeError(f"emails {label}: {queued} documents, {len(emails)} emails queued for {n} sends")
    render_s = None
    if stored:  # version 1 of each, written and rendered as the worker would (its render job's way)
        Document.objects.bulk_create(
            [
                Document(organization_id=ctx["organization"].pk, invoice_id=i, version=1, reason="issued")
                for i in ids
            ]
        )
        documents = list(Document.objects.filter(invoice_id__in=ids).values_list("pk", flat=True))
        started = time.monotonic()
        prerender(documents)
        render_s = time.monotonic() - started
        assert Document.objects.filter(pk__in=documents, status="stored").count() == n
    connections.close_all()
    smtp.take()
    procs = []
    started = time.monotonic()
    try:
        for k in range(workers):
            procs.append(start_worker(env, workdir / f"worker-{'s' if stored else 'r'}{workers}-{k}.log"))
        deadline = started + 60 + n * 0.5
        while smtp.count() < n and time.monotonic() < deadline:
            if any(p.poll() is not None for p, _ in procs):
                break
            time.sleep(0.02)
        # Drained: every email row sent and no job left (a render job may still be running when
        # its email went out, the other worker having rendered the PDF for it); then room for a
        # duplicate to arrive, if one were coming.
        wait_until = time.monotonic() + 30
        while time.monotonic() < wait_until:
            sent = OutboundEmail.objects.filter(pk__in=emails.values(), status="sent").count()
            if sent == n and not DBTaskResult.objects.filter(status__in=("READY", "RUNNING")).exists():
                break
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        codes = [stop_worker(p, o) for p, o in procs]
    received = smtp.take()
    connections.close_all()
    if len(received) < n:
        tails = "\n".join(
            (workdir / f).read_text()[-1500:] for f in os.listdir(workdir) if f.startswith("worker-")
        )
        raise RuntimeError(f"emails {label}: {len(received)} of {n} received\n{tails}")
    ids_received = [m for _, m in received]
    rows = OutboundEmail.objects.filter(pk__in=emails.values())
    outcome = sorted(set(rows.values_list("status", "attempts")))
    leftover = DBTaskResult.objects.exclude(status="SUCCESSFUL").count()
    jobs = {}
    for path in ("delivery.tasks.render_document", "delivery.tasks.deliver_invoice"):
        took = [
            (finished - begun).total_seconds() * 1000
            for begun, finished in DBTaskResult.objects.filter(
                task_path=path, enqueued_at__gte=since
            ).values_list("started_at", "finished_at")
        ]
        jobs[path.rpartition(".")[2]] = {
            "jobs": len(took),
            "p50_ms": round(percentile(took, 50), 1),
            "p90_ms": round(percentile(took, 90), 1),
        }
    times = sorted(t for t, _ in received)
    span = times[-1] - times[0]
    result = {
        "workers": workers,
        "pdf_stored_before": stored,
        "emails": n,
        "received": len(received),
        "duplicates": len(ids_received) - len(set(ids_received)),
        "unknown_message_ids": len(set(ids_received) - set(emails)),
        "rows": [list(o) for o in outcome],
        "jobs_not_successful": leftover,
        "first_to_last_s": round(span, 3),
        "messages_per_s": round((len(times) - 1) / span, 1) if span > 0 else None,
        "start_to_first_s": round(times[0] - started, 3),
        "start_to_last_s": round(times[-1] - started, 3),
        "messages_per_s_from_start": round(len(times) / (times[-1] - started), 1),
        "queue_s": round(queue_s, 2),
        "prerender_s": round(render_s, 2) if render_s is not None else None,
        "documents_stored": Document.objects.filter(invoice_id__in=ids, status="stored").count(),
        "job_duration": jobs,
        "worker_exit_codes": codes,
    }
    log(
        f"emails {label}: {result['messages_per_s']} msg/s over {result['first_to_last_s']} s "
        f"(start to last {result['start_to_last_s']} s); rows {outcome}, duplicates {result['duplicates']}"
    )
    if result["duplicates"] or result["unknown_message_ids"] or outcome != [("sent", 1)] or leftover:
        raise RuntimeError(f"emails {label}: not every email sent exactly once: {result}")
    return result


def only_report(result: dict, part: str, begun: float, workdir: Path) -> int:
    """The end of an `--only` run: its raw figures under their own name, a line a run on stdout."""
    from django.db import connections

    connections.close_all()
    result["duration_s"] = round(time.monotonic() - begun, 1)
    RAW_RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RAW_RESULTS / f"{result['date']}-delivery-{part}.json"
    raw.write_text(json.dumps(result, indent=2, default=str))
    for run in result.get("emails", []):
        print(
            f"{'stored' if run['pdf_stored_before'] else 'not stored'}, {run['workers']} worker(s): "
            f"{run['messages_per_s']} msg/s, job p50 {run['job_duration']}"
        )
    if "http" in result:
        print(f"in-process: {result['inprocess']}")
        for key in ("one", "spread"):
            row = result["http"][key]
            print(
                f"HTTP {row['organizations']} organization(s): plain {row['plain']['median_rps']}/s, "
                f"delivery {row['delivery']['median_rps']}/s: {row['ratio']}"
            )
        print(f"statements a send: {result['queries']}")
    shutil.rmtree(workdir, ignore_errors=True)
    log(f"done in {result['duration_s']} s: {raw.relative_to(ROOT)}")
    return 0


# --- 3. send throughput -------------------------------------------------------------------------


def inprocess_sends(ctx: dict, per_round: int, rounds: int) -> dict:
    """The two services in turn on fresh drafts of 3 lines, one thread: ms a send."""
    from django.db import reset_queries

    from delivery.services import invoice_send_and_deliver
    from invoices.services import invoice_send

    services = {"plain": invoice_send, "delivery": invoice_send_and_deliver}
    times: dict[str, list[float]] = {name: [] for name in services}
    for _ in range(rounds):
        for name, service in services.items():
            ids = drafts(ctx, per_round, 3)
            reset_queries()
            started = time.perf_counter()
            for invoice_id in ids:
                service(organization=ctx["organization"], invoice_id=invoice_id, actor=ctx["owner"])
            times[name].append((time.perf_counter() - started) * 1000 / per_round)
    out = {name: {"ms_per_send": [round(t, 3) for t in ts]} for name, ts in times.items()}
    for name in out:
        out[name]["median_ms"] = round(statistics.median(times[name]), 3)
        out[name]["sends_per_s"] = round(1000 / statistics.median(times[name]), 1)
    out["ratio"] = round(out["delivery"]["sends_per_s"] / out["plain"]["sends_per_s"], 3)
    out["sends_per_round"] = per_round
    out["rounds"] = rounds
    log(
        f"in-process: plain {out['plain']['median_ms']} ms, delivery {out['delivery']['median_ms']} ms a send; "
        f"ratio {out['ratio']}"
    )
    return out


def wrk_sends(*, port: int, prefix: str, pool: Path, lua: Path, connections: int, duration: float) -> dict:
    threads = min(2, connections)
    env = os.environ | {"BENCH_PATH": prefix, "BENCH_POOL": str(pool), "BENCH_THREADS": str(threads)}
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s", "--timeout", "10s"]
    cmd += ["-s", str(lua), f"http://{HOST}:{port}{prefix}"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=duration + 60, check=False)
    match = re.search(r"^BENCH_JSON (.*)$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout[-800:]} {out.stderr[-800:]}")
    data = json.loads(match.group(1))
    lat = data["latency_us"]
    return {
        "rps": round(data["requests"] / (data["duration_us"] / 1e6), 1),
        "requests": data["requests"],
        "p50_ms": round(lat["p50"] / 1000, 2),
        "p99_ms": round(lat["p99"] / 1000, 2),
        "errors": {k: v for k, v in data["errors"].items() if v},
    }


PREFIXES = {"plain": "/bench/plain/invoices/", "delivery": "/api/invoices/"}


def send_pool(orgs: list[dict], size: int, workdir: Path, name: str) -> tuple[Path, list[int]]:
    """`size` fresh drafts of 3 lines spread round robin over `orgs`: consecutive requests (and so
    the connections in flight) are for different organizations when there are several."""
    per_org = [drafts(ctx, -(-size // len(orgs)), 3) for ctx in orgs]
    rows = [(orgs[k]["token"], per_org[k][i]) for i in range(len(per_org[0])) for k in range(len(orgs))]
    pool = workdir / f"pool-{name}.txt"
    pool.write_text("".join(f"{token} {invoice_id}\n" for token, invoice_id in rows))
    return pool, [invoice_id for _, invoice_id in rows]


def http_sends(
    orgs: list[dict], env: dict, workdir: Path, *, connections: int, duration: float, rounds: int
) -> dict:
    """wrk on both send views through gunicorn, interleaved (plain, delivery, plain, ...): all
    sends of the first organization, then spread over every organization."""
    from django.db import connections as db_connections

    from invoices.models import Invoice

    lua = workdir / "send.lua"
    lua.write_text(SEND_LUA)
    workers = os.cpu_count() or 1  # one a core, as the harness (DEFAULT_WORKERS_PER_CORE)
    port = free_port()
    server_env = os.environ | env | {"DJANGO_SETTINGS_MODULE": "bench_delivery_settings"}
    out: dict = {
        "connections": connections,
        "duration_s": duration,
        "rounds": rounds,
        "gunicorn_workers": workers,
    }
    # Pools sized for 50 % more than the fastest run so far (the first from a short probe).
    fastest = 0.0
    with load.gunicorn(workers=workers, port=port, env=server_env, log=workdir / "gunicorn.log"):
        for name, prefix in PREFIXES.items():  # warm-up and probe: both routes, every worker
            pool, _ = send_pool(orgs, 200, workdir, f"warm-{name}")
            db_connections.close_all()
            probe = wrk_sends(
                port=port, prefix=prefix, pool=pool, lua=lua, connections=connections, duration=1
            )
            fastest = max(fastest, probe["rps"])
        for key, group in (("one", orgs[:1]), ("spread", orgs)):
            spread = f"{len(group)} organization{'s' if len(group) > 1 else ''}"
            runs: dict[str, list[dict]] = {name: [] for name in PREFIXES}
            for r in range(rounds):
                for name, prefix in PREFIXES.items():
                    size = int(fastest * duration * 1.5) + 100
                    pool, ids = send_pool(group, size, workdir, f"{name}-{len(group)}-{r}")
                    db_connections.close_all()
                    run = wrk_sends(
                        port=port,
                        prefix=prefix,
                        pool=pool,
                        lua=lua,
                        connections=connections,
                        duration=duration,
                    )
                    sent = Invoice.objects.filter(pk__in=ids, status="sent").count()
                    run |= {"drafts_sent": sent, "pool": len(ids)}
                    log(f"wrk send {name:<8} {spread}, round {r + 1}: {run}")
                    # wrk stops counting at its deadline: the requests then in flight may still send.
                    if run["errors"] or not run["requests"] <= sent <= run["requests"] + connections:
                        raise RuntimeError(
                            f"wrk {name}: {run['errors']}, {sent} drafts sent for {run['requests']} requests "
                            f"(pool of {len(ids)}); see {workdir / 'gunicorn.log'}"
                        )
                    runs[name].append(run)
                    fastest = max(fastest, run["rps"])
            row: dict = {"organizations": len(group)}
            for name, rs in runs.items():
                row[name] = {
                    "runs": rs,
                    "median_rps": round(statistics.median(r["rps"] for r in rs), 1),
                    "median_p50_ms": round(statistics.median(r["p50_ms"] for r in rs), 2),
                    "median_p99_ms": round(statistics.median(r["p99_ms"] for r in rs), 2),
                }
            row["ratio"] = round(row["delivery"]["median_rps"] / row["plain"]["median_rps"], 3)
            out[key] = row
            log(
                f"HTTP, {spread}: plain {row['plain']['median_rps']}/s, delivery "
                f"{row['delivery']['median_rps']}/s, ratio {row['ratio']}"
            )
    return out


def send_queries(ctx: dict) -> dict:
    """Statements a send sends (Django's test client, as tests/test_query_counts.py counts them)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext, override_settings
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {ctx['token']}")
    out = {}
    with override_settings(ROOT_URLCONF="bench_delivery_urls", ALLOWED_HOSTS=["*"]):
        for name, prefix in (("plain", "/bench/plain/invoices/"), ("delivery", "/api/invoices/")):
            counts = []
            for n_lines in (3, 100):
                (invoice_id,) = drafts(ctx, 1, n_lines)
                with CaptureQueriesContext(connection) as captured:
                    response = client.post(f"{prefix}{invoice_id}/send/", {}, format="json")
                assert response.status_code == 200, response.content[:500]
                # A held statement (billing.db.held_writes) is logged without text: it went with the next one.
                queries = captured.captured_queries
                counts.append((len(queries), sum(q["sql"] is not None for q in queries)))
            out[name] = {
                "3 lines": counts[0][0],
                "100 lines": counts[1][0],
                "round trips, 3 lines": counts[0][1],
                "round trips, 100 lines": counts[1][1],
            }
    log(f"queries a send: {out}")
    return out


# --- report -------------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    m = result["machine"]
    r, e, h, p = result["render"], result["emails"], result["http"], result["inprocess"]
    lines_ = [
        f"# Delivery benchmark — {result['date']}",
        "",
        f"Machine: {m['nproc']} x {m['cpu']}, {m['memory_gib']} GiB, Linux {m['kernel']}; {m['postgresql']} "
        f"(synchronous_commit {m['postgresql_settings'].get('synchronous_commit')}); Python {m['python']}, "
        f"Django {m['django']}, gunicorn {m['gunicorn']} ({h['gunicorn_workers']} sync workers); WeasyPrint "
        f"{result['weasyprint']}; {m['wrk']}. Load average {'/'.join(f'{x:.1f}' for x in m['load_average_at_start'])} "
        f"at start, {'/'.join(f'{x:.1f}' for x in m['load_average_at_end'])} at the end. Run took {result['duration_s']} s.",
        "",
        "Method: `.venv/bin/python bench/delivery.py` (its docstring has the details); database `"
        + result["database"]
        + "`, dropped, created and migrated at the start. Percentiles are nearest-rank: with 30 renders, p99 is "
        "the slowest one.",
        "",
        "## PDF render time (`delivery.documents.render_pdf`, in-process)",
        "",
        f"{WARMUP_RENDERS} warm-up renders, then {r['5']['renders']} timed ones per invoice; only the render is timed "
        "(the invoice loaded as the worker loads it).",
        "",
        "| invoice | p50 ms | p99 ms | mean ms | min-max ms | PDF | pages |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for k in ("5", "100", str(LARGEST)):
        x = r[k]
        label = (
            f"{k} lines"
            if k != str(LARGEST)
            else f"{k} lines of 500 characters, a draft ({x['renders']} timed)"
        )
        lines_.append(
            f"| {label} | {x['p50_ms']} | {x['p99_ms']} | {x['mean_ms']} | {x['min_ms']}-{x['max_ms']} | "
            f"{x['pdf_bytes'] / 1024:.0f} KiB | {x['pages']} |"
        )
    lines_ += [
        "",
        f"## Emails per second, worker → aiosmtpd on 127.0.0.1 ({e[0]['emails']} invoice emails, 5 lines each)",
        "",
        "`manage.py run_worker --interval 0.05 --no-scheduler --no-startup-delay`, started once all the jobs are "
        "queued (`invoice_send_and_deliver`: one job an invoice, its email's, which renders the PDF first when it is not stored). Messages/s from the first "
        "message received to the last, (N - 1) / span; start to last includes the worker's start-up (Django, "
        "WeasyPrint's import).",
        "",
        "| PDFs | workers | messages/s | first → last s | start → first s | start → last s | render job p50 ms "
        "| email job p50 / p90 ms | rows | duplicates |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|--:|",
    ]
    for x in e:
        rows = ", ".join(f"{s} after {a} attempt{'s' if a != 1 else ''}: all" for s, a in x["rows"])
        lines_.append(
            f"| {'stored before' if x['pdf_stored_before'] else 'not stored yet'} | {x['workers']} | "
            f"**{x['messages_per_s']}** | {x['first_to_last_s']} | {x['start_to_first_s']} | {x['start_to_last_s']} | "
            f"{x['job_duration']['render_document']['p50_ms']} | {x['job_duration']['deliver_invoice']['p50_ms']} / "
            f"{x['job_duration']['deliver_invoice']['p90_ms']} | {rows} | {x['duplicates']} |"
        )
    stored = [x for x in e if x["pdf_stored_before"]]
    if stored:
        lines_ += [
            "",
            f"Pre-rendering the {stored[0]['emails']} PDFs (`document_render`, one forked process a core; not in the "
            "figures) took "
            + ", ".join(f"{x['prerender_s']} s" for x in stored)
            + f"; queueing the {e[0]['emails']} sends (`invoice_send_and_deliver`, in-process) "
            + ", ".join(f"{x['queue_s']} s" for x in e)
            + ".",
        ]
    lines_ += [
        "",
        "## `POST /send/` throughput: delivery outbox vs. the invoices app's plain send",
        "",
        f"gunicorn ({h['gunicorn_workers']} sync workers, ./gunicorn.conf.py, bench.settings), wrk at "
        f"{h['connections']} connections for {h['duration_s']:g} s, {h['rounds']} interleaved rounds (plain, delivery, "
        "plain, ...), each request a fresh draft of 3 lines. Plain: the invoices app's viewset (`invoice_send`: status, "
        "number) mounted at `/bench/plain/` for the run; delivery: `/api/invoices/{id}/send/` (the same, plus the PDF "
        "version (written before the number's lock), the email rendered from its templates and its job, in one transaction; no PDF rendering). "
        "One organization: every send takes that organization's number-sequence row lock, held to the commit. "
        f"{h['spread']['organizations']} organizations: consecutive requests round robin over them.",
        "",
        "| sends of | send | sends/s (median) | each round | p50 ms | p99 ms | delivery / plain |",
        "|---|---|--:|---|--:|--:|--:|",
    ]
    for key in ("one", "spread"):
        row = h[key]
        for name in ("plain", "delivery"):
            x = row[name]
            met = "✅" if row["ratio"] >= TARGET_RATIO else "❌"
            ratio = f"**{row['ratio']:.3f}** {met}" if name == "delivery" else ""
            lines_.append(
                f"| {row['organizations']} organization{'s' if row['organizations'] > 1 else ''} | {name} | "
                f"**{x['median_rps']}** | {', '.join(str(rr['rps']) for rr in x['runs'])} | "
                f"{x['median_p50_ms']} | {x['median_p99_ms']} | {ratio} |"
            )
    lines_ += [
        "",
        f"Target: delivery at most 10 % fewer sends a second than plain (ratio ≥ {TARGET_RATIO:.2f}).",
        "",
        f"In-process, the services alone (one thread, {p['sends_per_round']} fresh drafts a round, {p['rounds']} "
        f"interleaved rounds): plain `invoice_send` {p['plain']['median_ms']} ms a send ({p['plain']['sends_per_s']}/s), "
        f"`invoice_send_and_deliver` {p['delivery']['median_ms']} ms ({p['delivery']['sends_per_s']}/s): ratio "
        f"{p['ratio']:.3f}.",
        "",
        "Statements a request sends (test client, counted as tests/test_query_counts.py counts them): "
        + "; ".join(
            f"{name}: {', '.join(f'{k} {v}' for k, v in result['queries'][name].items())}"
            for name in ("plain", "delivery")
        )
        + ".",
        "",
    ]
    return "\n".join(lines_)


def readme_table(result: dict) -> str:
    r, e, h, p = result["render"], result["emails"], result["http"], result["inprocess"]
    m = result["machine"]
    rate = {(x["pdf_stored_before"], x["workers"]): x["messages_per_s"] for x in e}

    def sends(row: dict) -> str:
        met = "✅" if row["ratio"] >= TARGET_RATIO else "❌"
        return f"plain {row['plain']['median_rps']}, delivery {row['delivery']['median_rps']}: **{row['ratio']:.2f}** {met}"

    return "\n".join(
        [
            README_START,
            f"{result['date']}, {m['nproc']} x {m['cpu']}, {m['postgresql']}, load average "
            f"{m['load_average_at_start'][0]:.1f} at start; `.venv/bin/python bench/delivery.py`, "
            f"{result['duration_s']:.0f} s (details: `bench/results/{result['date']}-delivery.md`).",
            "",
            "| measure | method | result |",
            "|---|---|---|",
            f"| PDF render, 5 lines ({r['5']['pages']} page) | `render_pdf` in-process, {r['5']['renders']} renders after "
            f"{WARMUP_RENDERS} warm-up | p50 {r['5']['p50_ms']} ms, p99 {r['5']['p99_ms']} ms |",
            f"| PDF render, 100 lines ({r['100']['pages']} pages) | same | p50 {r['100']['p50_ms']} ms, p99 "
            f"{r['100']['p99_ms']} ms |",
            f"| PDF render, the largest draft: {LARGEST} lines of 500 characters ({r[str(LARGEST)]['pages']} pages) | "
            f"same, {r[str(LARGEST)]['renders']} renders after 1 | p50 {r[str(LARGEST)]['p50_ms']:,.0f} ms, max "
            f"{r[str(LARGEST)]['max_ms']:,.0f} ms |",
            f"| emails/s, PDFs stored | {e[0]['emails']} invoice emails queued by `invoice_send_and_deliver`, `run_worker "
            f"--interval 0.05 --no-scheduler --no-startup-delay` → aiosmtpd on 127.0.0.1, first to last received | 1 worker "
            f"{rate.get((True, 1))}, 2 workers {rate.get((True, 2))} |",
            f"| emails/s, PDFs not stored yet | same, the worker renders each PDF first | 1 worker "
            f"{rate.get((False, 1))}, 2 workers {rate.get((False, 2))} |",
            f"| `POST /send/` sends/s, one organization | gunicorn ({h['gunicorn_workers']} sync workers), wrk "
            f"{h['connections']} connections, {h['duration_s']:g} s x {h['rounds']} interleaved rounds, fresh drafts; "
            f"plain = `invoice_send`'s view at a bench-only URL | {sends(h['one'])} (target ≥ {TARGET_RATIO:.2f}) |",
            f"| `POST /send/` sends/s, {h['spread']['organizations']} organizations | same, requests round robin over "
            f"the organizations | {sends(h['spread'])} |",
            f"| the services alone | in-process, one thread | `invoice_send` {p['plain']['median_ms']} ms, "
            f"`invoice_send_and_deliver` {p['delivery']['median_ms']} ms: {p['ratio']:.2f} |",
            README_END,
        ]
    )


def write_readme(result: dict) -> None:
    path = ROOT / "bench" / "README.md"
    text = path.read_text()
    table = readme_table(result)
    if README_START in text and README_END in text:
        before, rest = text.split(README_START, 1)
        after = rest.split(README_END, 1)[1]
        text = before + table + after
    else:
        text = text.rstrip("\n") + "\n\n## Delivery\n\n" + table + "\n"
    path.write_text(text)


# --- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--renders", type=int, default=30, help="timed renders per invoice (after 3 warm-up)")
    parser.add_argument("--emails", type=int, default=200, help="emails queued per worker run")
    parser.add_argument("--connections", type=int, default=4, help="wrk connections for the send runs")
    parser.add_argument("--duration", type=float, default=5, help="seconds per wrk send run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved plain/delivery wrk rounds")
    parser.add_argument(
        "--organizations", type=int, default=8, help="organizations the spread send runs go round robin over"
    )
    parser.add_argument("--no-readme", action="store_true", help="leave bench/README.md as it is")
    parser.add_argument(
        "--only",
        choices=["emails", "sends"],
        help="run only this part (its figures go to bench/results/raw/<date>-delivery-<part>.json and "
        "stdout; the summary and bench/README.md are left as they are)",
    )
    args = parser.parse_args()

    check_tools(need_py_spy=False)
    begun = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="bench-delivery-"))
    smtp = Smtp().start()
    env = environment(workdir, smtp.port)
    os.environ.update(env)
    sys.path.insert(0, str(workdir))
    (workdir / "bench_delivery_settings.py").write_text(SETTINGS_PY)
    (workdir / "bench_delivery_urls.py").write_text(URLS_PY)
    log(f"database {DB_NAME}: drop, create, migrate; work files in {workdir}")
    recreate_database()
    import logging
    import warnings

    import django

    django.setup()
    logging.getLogger("billing.request").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="No directory at")
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    import weasyprint

    from delivery import documents

    if not documents.pdf_available():
        sys.exit("WeasyPrint cannot be loaded here (Pango missing?): no PDF can be rendered")
    result: dict = {
        "date": dt.date.today().isoformat(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "database": DB_NAME,
        "weasyprint": weasyprint.__version__,
        "machine": machine(None),
        "config": vars(args),
    }
    try:
        orgs = seed(1 if args.only == "emails" else args.organizations)
        ctx = orgs[0]
        if args.only == "sends":
            result["inprocess"] = inprocess_sends(ctx, per_round=100, rounds=3)
            result["http"] = http_sends(
                orgs, env, workdir, connections=args.connections, duration=args.duration, rounds=args.rounds
            )
            result["queries"] = send_queries(ctx)
            return only_report(result, args.only, begun, workdir)
        if args.only:
            result["emails"] = [
                email_run(ctx, smtp, env, workdir, n=args.emails, workers=workers, stored=stored)
                for stored in (True, False)
                for workers in (1, 2)
            ]
            return only_report(result, args.only, begun, workdir)
        result["render"] = {str(k): v for k, v in render_times(ctx, args.renders).items()}
        result["emails"] = [
            email_run(ctx, smtp, env, workdir, n=args.emails, workers=workers, stored=stored)
            for stored in (True, False)
            for workers in (1, 2)
        ]
        result["inprocess"] = inprocess_sends(ctx, per_round=100, rounds=3)
        result["http"] = http_sends(
            orgs, env, workdir, connections=args.connections, duration=args.duration, rounds=args.rounds
        )
        result["queries"] = send_queries(ctx)
    finally:
        from django.db import connections

        connections.close_all()
        smtp.stop()
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    result["duration_s"] = round(time.monotonic() - begun, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    RAW_RESULTS.mkdir(parents=True, exist_ok=True)
    summary = RESULTS / f"{result['date']}-delivery.md"
    summary.write_text(markdown(result))
    raw = RAW_RESULTS / f"{result['date']}-delivery.json"
    raw.write_text(json.dumps(result, indent=2, default=str))
    if not args.no_readme:
        write_readme(result)
    shutil.rmtree(workdir, ignore_errors=True)
    log(f"done in {result['duration_s']} s: {summary.relative_to(ROOT)}, {raw.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
