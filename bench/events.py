"""The events and webhooks benchmark (issue 16), on PostgreSQL: what recording events costs the
writers, how fast the event log is read, and how many webhook deliveries a second the worker sends.

    .venv/bin/python bench/events.py      # under 5 minutes on the 2-core box (287 s with other suites running)
    .venv/bin/python bench/events.py --duration 2 --rounds 1 --deliveries 200 --events 2000 --no-readme  # smoke
    .venv/bin/python bench/events.py --only deliveries    # part 3 alone

1. **Writes with events on and off**: `POST /api/payments/` (0.01 on a fresh sent invoice of 3
   lines, so no invoice is paid off and none carries more than the one payment) and
   `POST /api/invoices/` (3 lines), both with an `Idempotency-Key` as the main harness sends them,
   through gunicorn as the harness starts it (`bench.load.gunicorn`: ./gunicorn.conf.py, sync
   workers, one a core), wrk closed loop at `--connections` (4) for `--duration` (5 s) a run, over
   `--rounds` (3) interleaved rounds (off, on, on with an endpoint; payment then create), median
   reported. Two servers run side by side, only one loaded at a time: "on" is the app as it is
   (bench.settings); "off" is a settings module written to the run's temporary directory
   (bench.settings plus a bench-only app, `bench_events_off`, whose `ready()` replaces
   `events.services.events_record_many` and `events_record` with functions returning [] — in
   `events.services` and in every module that imported them by name: customers.services,
   invoices.services, payments.services). "Off" is the same app without the events' INSERT and the
   read of the endpoints; the services still build the objects' representations (and the
   `previous_attributes`), so "off" does not take out everything events cost (the in-process
   profile below does). "On with an endpoint": one enabled endpoint of the organization subscribed
   to "*" (each write then also inserts its deliveries and one job; no worker runs, nothing is
   sent). Every off run must leave the event table as it was, every on run add the events its
   requests wrote. Target: on ≥ 0.90 of off. Statements a request sends, counted in-process
   (Django's test client and CaptureQueriesContext, as tests/test_query_counts.py counts them), and
   the services alone timed in-process (one thread, interleaved rounds) with a cProfile of the
   "on" services: the share of their time in the events' parts.
2. **Events listed per second**: `GET /api/events/` at page_size 20 and 100 and
   `GET /api/events/?type=invoice.paid`, wrk as above over the rounds, for an organization of
   `--events` (10,000) events: real events of each type written by the services, copied in one
   `INSERT ... SELECT` with time-ordered ids (one a minute over the last week; the type mix of a
   billing business: invoice.updated and payment.created most, invoice.paid a tenth).
3. **Webhook deliveries per second**: a bare threaded `http.server` on 127.0.0.1 in this process
   answering 204 and noting when each request arrived, its `webhook-id` and what was signed;
   `WEBHOOKS_ALLOW_PRIVATE_NETWORKS=1`. `--deliveries` (1,000) events recorded (`events_record`,
   one write each: one event, one delivery, one job, as a write of one event queues them) for an
   organization with one endpoint subscribed to "*", then drained by one, and by two,
   `manage.py run_worker --interval 0.05 --no-scheduler --no-startup-delay` processes, started once
   all are queued. Deliveries/s from the first received to the last, (N - 1) / span; start to last
   (with the worker's start-up) too. Every delivery row must end `delivered` after one attempt,
   each `webhook-id` be received (duplicates counted) and every request verify with the
   `standardwebhooks` library. Target: ≥ 100/s (issue 17). Below it, one more 1-worker run under
   py-spy (wall time) says where the worker's time goes.

It only ever touches the database `billing_bench_events` (dropped, created and migrated at each
start), or the one BENCH_EVENTS_DATABASE names (with `bench` in it). Results:
bench/results/<date>-events.md (kept in git), bench/results/raw/<date>-events.json (git-ignored) and
the table of bench/README.md between its `results:events` markers (unless --no-readme).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime as dt
import json
import os
import pstats
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

from bench import load  # noqa: E402
from bench.config import RAW_RESULTS, RESULTS, bench_env, check_tools, log, machine  # noqa: E402
from bench.delivery import start_worker, stop_worker  # noqa: E402
from tests.live.server import HOST, free_port  # noqa: E402

DB_NAME = os.environ.get("BENCH_EVENTS_DATABASE") or "billing_bench_events"
if not re.fullmatch(r"[a-z_][a-z0-9_]*", DB_NAME) or "bench" not in DB_NAME:
    sys.exit(f"BENCH_EVENTS_DATABASE={DB_NAME!r}: a lower-case identifier with 'bench' in it")
DB_URL = f"postgres://{load.PG['user']}@{load.PG['host']}:{load.PG['port']}/{DB_NAME}"
TARGET_RATIO = 0.90  # writes with events at least 90 % of the requests/s without
TARGET_DELIVERIES = 100  # webhook deliveries a second (issue 17)
README_START, README_END = "<!-- results:events:start -->", "<!-- results:events:end -->"
VARIANTS = ("off", "on", "endpoint")  # the interleaving order of the write runs
VARIANT_NAMES = {"off": "events off", "on": "events on", "endpoint": "events on + 1 endpoint"}
WRITES = ("payment", "create")
WRITE_NAMES = {"payment": "`POST /api/payments/`", "create": "`POST /api/invoices/` (3 lines)"}
LISTS = {
    "list20": "/api/events/?page_size=20",
    "list100": "/api/events/?page_size=100",
    "paid": "/api/events/?type=invoice.paid",
}
LIST_NAMES = {
    "list20": "`GET /api/events/?page_size=20`",
    "list100": "`GET /api/events/?page_size=100`",
    "paid": "`GET /api/events/?type=invoice.paid` (20)",
}
# The type mix of the listed organization's events (weights): what a billing business writes most.
EVENT_MIX = {
    "invoice.updated": 25,
    "payment.created": 25,
    "invoice.created": 18,
    "invoice.sent": 16,
    "invoice.paid": 10,
    "invoice.overdue": 4,
    "customer.created": 2,
}
PAYMENT_BODY = '{"invoice": %s, "amount": "0.01", "method": "card"}'

# The "off" app, written to the run's temporary directory (a package on gunicorn's PYTHONPATH) and
# imported in this process too, for the in-process counts and timings (patch, then unpatch).
OFF_APP = '''"""Bench only: the app without recording events. ready() replaces events_record_many and
events_record, in events.services and in every module that imported them by name, with functions
that record nothing."""

import sys

from django.apps import AppConfig

NAMES = ("events_record", "events_record_many")
_saved = []


def events_record_many(changes, *, actor=None, system=False):
    return []


def events_record(*, organization_id, changes, actor=None, system=False):
    return []


def patch():
    """Replace the two functions everywhere they are bound; returns where ("module.name")."""
    import customers.services  # noqa: F401
    import invoices.services  # noqa: F401
    import payments.services  # noqa: F401
    from events import services

    originals = {name: getattr(services, name) for name in NAMES}
    replaced = []
    for module in list(sys.modules.values()):
        for name, original in originals.items():
            if module is not None and getattr(module, name, None) is original:
                _saved.append((module, name, original))
                setattr(module, name, globals()[name])
                replaced.append(f"{module.__name__}.{name}")
    return sorted(replaced)


def unpatch():
    while _saved:
        module, name, original = _saved.pop()
        setattr(module, name, original)


class EventsOff(AppConfig):
    name = "bench_events_off"
    label = "bench_events_off"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        patch()
'''
SETTINGS_OFF_PY = (
    "from bench.settings import *  # noqa: F403\n\n"
    'INSTALLED_APPS = [*INSTALLED_APPS, "bench_events_off.EventsOff"]  # noqa: F405\n'
)


def percentile(values: list[float], p: float) -> float:
    return load.percentile(sorted(values), p)


def median(values) -> float:
    return statistics.median(list(values))


# --- set-up -------------------------------------------------------------------------------------


def recreate_database() -> None:
    conn = psycopg2.connect(dbname="postgres", **load.PG)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{DB_NAME}"')
    conn.close()


def environment(workdir: Path) -> dict:
    """The app's environment, as the harness's (bench.settings, DEBUG off), on this run's database,
    with deliveries to 127.0.0.1 allowed."""
    return bench_env() | {
        "DATABASE_URL": DB_URL,
        "PUBLIC_URL": "https://billing.example.com",
        "LOG_LEVEL": "WARNING",
        "WEBHOOKS_ALLOW_PRIVATE_NETWORKS": "1",
        "PYTHONPATH": f"{workdir}{os.pathsep}{ROOT}",
    }


def seed(names: list[str]) -> dict[str, dict]:
    """An organization per name, each with its owner, a token of theirs and a customer."""
    from django.contrib.auth import get_user_model
    from knox.models import get_token_model

    from customers.services import customer_create
    from users.models import Membership
    from users.services import organization_create

    out = {}
    for k, name in enumerate(names, start=1):
        owner = get_user_model().objects.create_user(
            username=f"bench_events_{name}", email=f"owner{k}@studio.example", password=None
        )
        organization = organization_create(
            name=f"Northwind Studio ({name})",
            owner=owner,
            default_currency="EUR",
            legal_name="Northwind GmbH",
        )
        membership = Membership.objects.get(user=owner, organization=organization)
        _, token = get_token_model().objects.create(user=owner, membership=membership)
        customer = customer_create(
            organization=organization,
            name="Acme Corporation",
            email="ap@acme.example",
            address="1 Market Street\nSan Francisco, CA 94105",
            actor=owner,
        )
        out[name] = {"organization": organization, "owner": owner, "token": token, "customer": customer}
    return out


def create_body(customer_id: int) -> dict:
    from bench.capture import create_body as harness_body

    return harness_body(customer_id, 3)


def lines(count: int = 3) -> list[dict]:
    return [
        {
            "description": f"Consulting, week {n + 1}",
            "quantity": Decimal(1 + n % 3),
            "unit_price": Decimal("150.00") + n,
            "tax_rate": Decimal("20"),
        }
        for n in range(count)
    ]


_batch = iter(range(1, 10**6))


def sent_invoices(ctx: dict, count: int) -> list[int]:
    """`count` sent invoices of 3 lines, none paid: one created and sent by the services, the
    others copies of it, row for row, in two INSERT ... SELECT statements (each its own number and
    public token; the triggers keep InvoiceTotals as for any insert), so thousands cost a second."""
    from django.db import connection, transaction

    from invoices.models import Invoice, Line
    from invoices.services import invoice_create, invoice_send

    template = invoice_create(
        organization=ctx["organization"], customer_id=ctx["customer"].pk, lines=lines(), actor=ctx["owner"]
    ).pk
    invoice_send(organization=ctx["organization"], invoice_id=template, actor=ctx["owner"])
    if count == 1:
        return [template]
    batch = next(_batch)
    columns = [f.column for f in Invoice._meta.concrete_fields if not f.primary_key]
    chosen = {
        "number": f"'B{batch}-' || g",
        "public_token": "md5(random()::text || g::text)",
    }
    select = ", ".join(chosen.get(c, c) for c in columns)
    line_columns = [f.column for f in Line._meta.concrete_fields if not f.primary_key]
    copied = ", ".join("new.id" if c == "invoice_id" else f"l.{c}" for c in line_columns)
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {Invoice._meta.db_table} ({', '.join(columns)}) SELECT {select} "
            f"FROM {Invoice._meta.db_table} CROSS JOIN generate_series(1, %s) AS g WHERE id = %s RETURNING id",
            [count - 1, template],
        )
        ids = [row[0] for row in cur.fetchall()]
        cur.execute(
            f"INSERT INTO {Line._meta.db_table} ({', '.join(line_columns)}) SELECT {copied} "
            f"FROM unnest(%s::bigint[]) AS new(id) CROSS JOIN {Line._meta.db_table} l WHERE l.invoice_id = %s",
            [ids, template],
        )
    return [template, *ids]


def events_off_module():
    import bench_events_off

    return bench_events_off


@contextlib.contextmanager
def events_off():
    """This process without events, as the "off" server runs (the same patch)."""
    module = events_off_module()
    replaced = module.patch()
    try:
        yield replaced
    finally:
        module.unpatch()


def set_endpoint(endpoint, enabled: bool) -> None:
    from events.models import WebhookEndpoint

    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(enabled=enabled)


def event_count(organization) -> int:
    from events.models import Event

    return Event.objects.filter(organization=organization).count()


def delivery_count(organization) -> int:
    from events.models import WebhookDelivery

    return WebhookDelivery.objects.filter(organization=organization).count()


# --- 1. writes, events on and off ---------------------------------------------------------------


def write_queries(ctx: dict, endpoint) -> dict:
    """Statements each write sends, per variant (test client, as tests/test_query_counts.py counts
    them, with an Idempotency-Key as wrk sends it)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext, override_settings
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {ctx['token']}")
    out: dict = {}
    with override_settings(ALLOWED_HOSTS=["*"]):
        for variant in VARIANTS:
            set_endpoint(endpoint, variant == "endpoint")
            with events_off() if variant == "off" else contextlib.nullcontext():
                counts = {}
                for k, write in enumerate(WRITES):
                    # Two of each: the first warms what a worker would have warm (the token's
                    # last use, the content types); the second is counted.
                    for attempt in range(2):
                        key = f"q-{variant}-{write}-{k}-{attempt}-{time.time_ns()}"
                        if write == "payment":
                            (invoice_id,) = sent_invoices(ctx, 1)
                            body = json.loads(PAYMENT_BODY % invoice_id)
                            path = "/api/payments/"
                        else:
                            body, path = create_body(ctx["customer"].pk), "/api/invoices/"
                        with CaptureQueriesContext(connection) as captured:
                            response = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY=key)
                        assert response.status_code == 201, response.content[:500]
                    counts[write] = len(captured.captured_queries)
                out[variant] = counts
    set_endpoint(endpoint, False)
    log(f"statements a write: {out}")
    return out


def list_queries(ctx: dict) -> dict:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext, override_settings
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {ctx['token']}")
    out = {}
    with override_settings(ALLOWED_HOSTS=["*"]):
        for name, path in LISTS.items():
            client.get(path)
            with CaptureQueriesContext(connection) as captured:
                response = client.get(path)
            assert response.status_code == 200, response.content[:500]
            results = response.json()["results"]
            if name == "paid":
                assert results, response.content[:500]
                assert {e["type"] for e in results} == {"invoice.paid"}, results[:1]
            out[name] = {
                "queries": len(captured.captured_queries),
                "results": len(results),
                "bytes": len(response.content),
            }
    log(f"event lists: {out}")
    return out


def inprocess_writes(ctx: dict, endpoint, *, per_round: int, rounds: int) -> dict:
    """The services alone (payment_record, invoice_create), one thread, the three variants in turn
    over interleaved rounds: ms a write."""
    from invoices.services import invoice_create
    from payments.services import payment_record

    org, owner = ctx["organization"], ctx["owner"]

    def pay(ids):
        for invoice_id in ids:
            payment_record(
                organization=org, invoice_id=invoice_id, amount=Decimal("0.01"), method="card", actor=owner
            )

    def create(_ids):
        for _ in range(per_round):
            invoice_create(organization=org, customer_id=ctx["customer"].pk, lines=lines(), actor=owner)

    times: dict = {w: {v: [] for v in VARIANTS} for w in WRITES}
    for _ in range(rounds):
        for write, service in (("payment", pay), ("create", create)):
            for variant in VARIANTS:
                ids = sent_invoices(ctx, per_round) if write == "payment" else []
                set_endpoint(endpoint, variant == "endpoint")
                with events_off() if variant == "off" else contextlib.nullcontext():
                    started = time.perf_counter()
                    service(ids)
                    times[write][variant].append((time.perf_counter() - started) * 1000 / per_round)
    set_endpoint(endpoint, False)
    out: dict = {"per_round": per_round, "rounds": rounds}
    for write in WRITES:
        row = {
            v: {"ms": [round(t, 3) for t in times[write][v]], "median_ms": round(median(times[write][v]), 3)}
            for v in VARIANTS
        }
        for v in ("on", "endpoint"):
            row[v]["ratio"] = round(row["off"]["median_ms"] / row[v]["median_ms"], 3)
        out[write] = row
    log(
        "in-process ms a write: "
        + "; ".join(f"{w} " + ", ".join(f"{v} {out[w][v]['median_ms']}" for v in VARIANTS) for w in WRITES)
    )
    return out


# The parts of a write that are its events', by function (cProfile's cumulative time).
EVENT_PARTS = {
    "events_record_many": ("events/services.py", "events_record_many"),
    "  of which deliveries_queue (endpoint read, deliveries, job)": (
        "events/services.py",
        "deliveries_queue",
    ),
    "invoice_representation (object for the event)": ("invoices/services.py", "invoice_representation"),
    "invoice_attributes (previous_attributes)": ("invoices/services.py", "invoice_attributes"),
    "PaymentResultSerializer.data (payment.created)": ("rest_framework/serializers.py", "data"),
}


def profile_writes(ctx: dict, endpoint, *, count: int) -> dict:
    """cProfile of `count` payments and `count` creates with events on and one endpoint: the share
    of the service's time in each of the events' parts."""
    from invoices.services import invoice_create
    from payments.services import payment_record

    org, owner = ctx["organization"], ctx["owner"]
    set_endpoint(endpoint, True)
    out = {}
    try:
        for write in WRITES:
            ids = sent_invoices(ctx, count) if write == "payment" else []
            profiler = cProfile.Profile()
            started = time.perf_counter()
            profiler.enable()
            if write == "payment":
                for invoice_id in ids:
                    payment_record(
                        organization=org,
                        invoice_id=invoice_id,
                        amount=Decimal("0.01"),
                        method="card",
                        actor=owner,
                    )
            else:
                for _ in range(count):
                    invoice_create(
                        organization=org, customer_id=ctx["customer"].pk, lines=lines(), actor=owner
                    )
            profiler.disable()
            total = time.perf_counter() - started
            stats = pstats.Stats(profiler).stats
            service = "payment_record" if write == "payment" else "invoice_create"
            service_cum = max(
                (v[3] for (f, _, fn), v in stats.items() if fn == service and f.endswith("services.py")),
                default=total,
            )
            parts = {}
            for label, (suffix, func) in EVENT_PARTS.items():
                if write == "create" and "Payment" in label:
                    continue
                if func == "data":
                    # Only the serializer's .data called from payment_record itself.
                    cum = sum(
                        timing[3]
                        for (f, _, fn), (*_, callers) in stats.items()
                        if fn == "data" and f.endswith(suffix)
                        for caller, timing in callers.items()
                        if caller[2] == "payment_record"
                    )
                else:
                    cum = sum(v[3] for (f, _, fn), v in stats.items() if fn == func and f.endswith(suffix))
                parts[label] = {"ms": round(cum * 1000 / count, 3), "share": round(cum / service_cum, 3)}
            out[write] = {
                "writes": count,
                "ms_per_write": round(service_cum * 1000 / count, 3),
                "parts": parts,
            }
    finally:
        set_endpoint(endpoint, False)
    log(f"cProfile of the writes, events on + endpoint: {out}")
    return out


def http_writes(
    ctx: dict, endpoint, env: dict, workdir: Path, *, connections: int, duration: float, rounds: int
) -> dict:
    """wrk on the two writes through two gunicorns (events on, events off), interleaved."""
    from django.db import connections as db_connections

    from payments.models import Payment

    workers = os.cpu_count() or 1  # one a core, as the harness (DEFAULT_WORKERS_PER_CORE)
    ports = {"on": free_port()}
    ports["off"] = free_port()
    while ports["off"] == ports["on"]:
        ports["off"] = free_port()
    servers = {
        "on": load.gunicorn(
            workers=workers,
            port=ports["on"],
            env=os.environ | env | {"DJANGO_SETTINGS_MODULE": "bench.settings"},
            log=workdir / "gunicorn-on.log",
        ),
        "off": load.gunicorn(
            workers=workers,
            port=ports["off"],
            env=os.environ | env | {"DJANGO_SETTINGS_MODULE": "bench_events_off_settings"},
            log=workdir / "gunicorn-off.log",
        ),
    }
    org = ctx["organization"]
    create = json.dumps(create_body(ctx["customer"].pk))
    out: dict = {
        "connections": connections,
        "duration_s": duration,
        "rounds": rounds,
        "gunicorn_workers": workers,
    }
    fastest = 0.0

    def run(write: str, variant: str, seconds: float) -> dict:
        server = "off" if variant == "off" else "on"
        set_endpoint(endpoint, variant == "endpoint")
        pool = None
        if write == "payment":
            size = int(max(fastest, 100) * seconds * 1.5) + 200
            ids = sent_invoices(ctx, size)
            pool = workdir / f"pool-{variant}.txt"
            pool.write_text("\n".join(map(str, ids)) + "\n")
        events_before, deliveries_before = event_count(org), delivery_count(org)
        payments_before = Payment.objects.filter(organization=org).count()
        db_connections.close_all()
        result = load.wrk(
            base_url=f"http://{HOST}:{ports[server]}",
            connections=connections,
            duration=seconds,
            mode=write,
            path="/api/payments/" if write == "payment" else "/api/invoices/",
            token=ctx["token"],
            pool=pool,
            body=PAYMENT_BODY if write == "payment" else create,
        )
        time.sleep(0.5)  # the requests in flight at wrk's deadline finish
        events = event_count(org) - events_before
        deliveries = delivery_count(org) - deliveries_before
        writes = (
            Payment.objects.filter(organization=org).count() - payments_before if write == "payment" else None
        )
        set_endpoint(endpoint, False)
        result |= {"events_written": events, "deliveries_written": deliveries}
        if writes is not None:
            result["payments_written"] = writes
        per_request = 2 if write == "payment" else 1  # payment.created + invoice.updated; invoice.created
        lo, hi = result["requests"] * per_request, (result["requests"] + connections) * per_request
        expected_ok = (events == 0) if variant == "off" else (lo <= events <= hi)
        if variant == "endpoint":
            expected_ok = expected_ok and deliveries == events
        elif variant == "on":
            expected_ok = expected_ok and deliveries == 0
        if writes is not None:
            expected_ok = expected_ok and result["requests"] <= writes <= result["requests"] + connections
        if result["errors"] or not expected_ok:
            raise RuntimeError(f"wrk {write} {variant}: {result}; see {workdir}/gunicorn-{server}.log")
        return result

    with servers["on"], servers["off"]:
        for write in WRITES:  # warm-up and probe: every route, both servers, every worker
            for variant in VARIANTS:
                fastest = max(fastest, run(write, variant, 1)["rps"])
        runs: dict = {w: {v: [] for v in VARIANTS} for w in WRITES}
        for r in range(rounds):
            for write in WRITES:
                for variant in VARIANTS:
                    result = run(write, variant, duration)
                    fastest = max(fastest, result["rps"])
                    runs[write][variant].append(result)
                    log(
                        f"wrk {write:<7} {variant:<8} round {r + 1}: {result['rps']}/s p50 {result['p50_ms']} ms"
                    )
    for write in WRITES:
        row: dict = {}
        for variant in VARIANTS:
            rs = runs[write][variant]
            row[variant] = {
                "runs": rs,
                "median_rps": round(median(x["rps"] for x in rs), 1),
                "median_p50_ms": round(median(x["p50_ms"] for x in rs), 2),
                "median_p99_ms": round(median(x["p99_ms"] for x in rs), 2),
            }
        for variant in ("on", "endpoint"):
            row[variant]["ratio"] = round(row[variant]["median_rps"] / row["off"]["median_rps"], 3)
        out[write] = row
        log(
            f"HTTP {write}: off {row['off']['median_rps']}/s, on {row['on']['median_rps']}/s "
            f"({row['on']['ratio']}), with an endpoint {row['endpoint']['median_rps']}/s ({row['endpoint']['ratio']})"
        )
    return out


# --- 2. events listed per second ----------------------------------------------------------------


def seed_events(ctx: dict, count: int) -> dict:
    """The organization's `count` events: one real event of each type of EVENT_MIX written by the
    services, then copies in one INSERT ... SELECT, with time-ordered ids one a minute (older than
    the real ones), types drawn from EVENT_MIX."""
    from django.db import connection, transaction
    from django.utils import timezone

    from events import ids
    from events.models import Event
    from invoices.services import invoice_create, invoice_mark_overdue, invoice_send
    from payments.services import payment_record

    org, owner = ctx["organization"], ctx["owner"]
    started = time.monotonic()
    # The real events: invoice.created, .sent, payment.created, invoice.updated, invoice.paid, and
    # invoice.overdue (an invoice due in the past, moved by mark_overdue).
    invoice = invoice_create(organization=org, customer_id=ctx["customer"].pk, lines=lines(), actor=owner)
    invoice = invoice_send(organization=org, invoice_id=invoice.pk, actor=owner)
    payment_record(
        organization=org, invoice_id=invoice.pk, amount=Decimal("100.00"), method="card", actor=owner
    )
    invoice.refresh_from_db()
    payment_record(
        organization=org, invoice_id=invoice.pk, amount=invoice.balance_due, method="card", actor=owner
    )
    past = timezone.now().date() - dt.timedelta(days=40)
    late = invoice_create(
        organization=org,
        customer_id=ctx["customer"].pk,
        lines=lines(),
        actor=owner,
        issue_date=past,
        due_date=past,
    )
    invoice_send(organization=org, invoice_id=late.pk, actor=owner)
    invoice_mark_overdue()
    real = set(Event.objects.filter(organization=org).values_list("type", flat=True))
    missing = set(EVENT_MIX) - real
    if missing:
        raise RuntimeError(f"seeding events: no real event of {sorted(missing)}")
    rng = random.Random(16)
    types = rng.choices(
        list(EVENT_MIX),
        weights=list(EVENT_MIX.values()),
        k=count - Event.objects.filter(organization=org).count(),
    )
    now_ms = time.time_ns() // 1_000_000
    first_ms = now_ms - (len(types) + 1) * 60_000
    stamps = [first_ms + k * 60_000 for k in range(len(types))]
    event_ids = [f"evt_{ids._base32(ms, 10)}{ids._base32(rng.getrandbits(80), 16)}" for ms in stamps]
    created = [dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC) for ms in stamps]
    columns = [f.column for f in Event._meta.concrete_fields]
    fresh = {"id": "u.id", "type": "u.type", "created_at": "u.created_at"}
    select = ", ".join(fresh.get(c, f"t.{c}") for c in columns)
    table = Event._meta.db_table
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {select} "
            "FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS u(id, type, created_at) "
            f"JOIN (SELECT DISTINCT ON (type) * FROM {table} WHERE organization_id = %s ORDER BY type, id DESC) t "
            "ON t.type = u.type",
            [event_ids, types, created, org.pk],
        )
        inserted = cur.rowcount
    with connection.cursor() as cur:
        cur.execute(f"ANALYZE {table}")
        cur.execute(
            f"SELECT type, count(*) FROM {table} WHERE organization_id = %s GROUP BY type ORDER BY 2 DESC",
            [org.pk],
        )
        mix = dict(cur.fetchall())
        cur.execute(f"SELECT pg_size_pretty(pg_total_relation_size('{table}')), count(*) FROM {table}")
        size, table_rows = cur.fetchone()
    out = {
        "events": sum(mix.values()),
        "copied": inserted,
        "types": mix,
        "table_rows": table_rows,
        "table_size": size,
        "seconds": round(time.monotonic() - started, 2),
    }
    log(f"seeded events: {out}")
    return out


def http_lists(
    ctx: dict, env: dict, workdir: Path, *, connections: int, duration: float, rounds: int
) -> dict:
    from django.db import connections as db_connections

    workers = os.cpu_count() or 1
    port = free_port()
    server = load.gunicorn(
        workers=workers,
        port=port,
        env=os.environ | env | {"DJANGO_SETTINGS_MODULE": "bench.settings"},
        log=workdir / "gunicorn-lists.log",
    )
    db_connections.close_all()
    runs: dict = {name: [] for name in LISTS}

    def run(name: str, seconds: float) -> dict:
        result = load.wrk(
            base_url=f"http://{HOST}:{port}",
            connections=connections,
            duration=seconds,
            mode="get",
            path=LISTS[name],
            token=ctx["token"],
        )
        if result["errors"]:
            raise RuntimeError(f"wrk {name}: {result}; see {workdir}/gunicorn-lists.log")
        return result

    with server:
        for name in LISTS:
            run(name, 1)
        for r in range(rounds):
            for name in LISTS:
                result = run(name, duration)
                runs[name].append(result)
                log(f"wrk {name:<8} round {r + 1}: {result['rps']}/s p50 {result['p50_ms']} ms")
    out: dict = {
        "connections": connections,
        "duration_s": duration,
        "rounds": rounds,
        "gunicorn_workers": workers,
    }
    for name, rs in runs.items():
        out[name] = {
            "runs": rs,
            "median_rps": round(median(x["rps"] for x in rs), 1),
            "median_p50_ms": round(median(x["p50_ms"] for x in rs), 2),
            "median_p99_ms": round(median(x["p99_ms"] for x in rs), 2),
        }
    log("HTTP lists: " + ", ".join(f"{n} {out[n]['median_rps']}/s" for n in LISTS))
    return out


# --- 3. webhook deliveries per second -----------------------------------------------------------


class Receiver:
    """A bare threaded http.server on 127.0.0.1: 204 to every POST, noting when it arrived, its
    webhook-id, and the headers and body (verified after the run, not while it is measured)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.received: list[tuple[float, str, dict, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with outer.lock:
                    outer.received.append((time.monotonic(), headers.get("webhook-id", ""), headers, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server.server_address[1]}/hooks"

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def take(self) -> list:
        with self.lock:
            taken, self.received = self.received, []
        return taken

    def count(self) -> int:
        with self.lock:
            return len(self.received)


def invoice_payload(ctx: dict) -> tuple[dict, dict]:
    """An invoice of 3 lines as its detail shows it, and its attributes before a change: what each
    queued event carries (made before the organization's endpoint exists, so it queues nothing)."""
    from django.db import transaction

    from invoices.models import Invoice
    from invoices.services import invoice_attributes, invoice_representation

    (invoice_id,) = sent_invoices(ctx, 1)
    invoice = Invoice.objects.get(pk=invoice_id)
    with transaction.atomic():
        after = invoice_representation(invoice)
    return after, {"notes": invoice_attributes(invoice)["notes"] + " (before)"}


def queue_deliveries(ctx: dict, n: int, payload: tuple[dict, dict]) -> tuple[list[str], float]:
    """`n` events of the organization, one write each (its own transaction: one event, one delivery
    to the organization's endpoint, one job), carrying an invoice of 3 lines as its detail shows it."""
    from django.db import transaction

    from events.services import Change, events_record

    after, previous = payload
    started = time.monotonic()
    ids = []
    for _ in range(n):
        with transaction.atomic():
            (event,) = events_record(
                organization_id=ctx["organization"].pk,
                changes=[Change("invoice.updated", after, previous)],
                actor=ctx["owner"],
            )
        ids.append(event.pk)
    return ids, time.monotonic() - started


# Where a worker's time goes while it drains the deliveries: each sample goes to the first rule one
# of whose functions is on its stack (so the POST is the POST wherever it was called from).
WORKER_PARTS = (
    ("POST to the receiver (resolve, connect, send, read the answer)", ("post",), "webhook_transport.py"),
    ("claim the delivery (one UPDATE, commit)", ("claim",), "billing/models.py"),
    ("record it delivered (two UPDATEs)", ("_record_delivered",), "events/webhooks.py"),
    ("the body (EventSerializer, JSON)", ("event_body",), "events/webhooks.py"),
    ("signing (decrypt the secret, HMAC)", ("signed_headers", "active_secrets"), "events/webhooks.py"),
    ("load the delivery, event and endpoint (one SELECT)", ("delivery_send",), "events/webhooks.py"),
    ("the job's call, other", ("send_webhooks", "call"), ""),
    ("db_worker: find and claim the job, save its result", ("run_task", "run"), "db_worker.py"),
)


def worker_breakdown(raw: str) -> list[dict]:
    """Shares of the worker's main thread's wall-time samples, by WORKER_PARTS."""
    counts: dict[str, int] = {}
    total = other_threads = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            m = re.match(r"^(?P<func>.*) \((?P<file>.*?)(?::\d+)?\)$", frame.strip())
            if m:
                frames.append((m.group("func").rpartition(".")[2], m.group("file")))
        if not any(f.endswith(("db_worker.py", "run_worker.py")) for _, f in frames):
            # Another thread: the POST's watchdog timer (webhook_transport), waiting; py-spy --idle
            # samples every thread, and these are not the worker's time.
            other_threads += int(n)
            continue
        total += int(n)
        part = next(
            (
                label
                for label, funcs, file in WORKER_PARTS
                if any(func in funcs and f.endswith(file) for func, f in frames)
            ),
            "the worker's main thread outside Worker.run",
        )
        counts[part] = counts.get(part, 0) + int(n)
    return [
        {"part": k, "share": round(v / max(1, total), 3)}
        for k, v in sorted(counts.items(), key=lambda kv: -kv[1])
    ]


def delivery_run(
    ctx: dict,
    receiver: Receiver,
    secret: str,
    payload: tuple[dict, dict],
    env: dict,
    workdir: Path,
    *,
    n: int,
    workers: int,
    spy: bool = False,
) -> dict:
    from django.db import connections
    from django.utils import timezone
    from django_tasks_db.models import DBTaskResult
    from standardwebhooks import Webhook

    from events.models import WebhookDelivery

    label = f"{workers} worker{'s' if workers > 1 else ''}{' under py-spy' if spy else ''}"
    since = timezone.now()
    event_ids, queue_s = queue_deliveries(ctx, n, payload)
    deliveries = WebhookDelivery.objects.filter(event_id__in=event_ids)
    if deliveries.count() != n:
        raise RuntimeError(f"deliveries {label}: {deliveries.count()} queued for {n} events")
    connections.close_all()
    receiver.take()
    procs = []
    profile = None
    spy_proc = spy_out = None
    started = time.monotonic()
    try:
        for k in range(workers):
            procs.append(start_worker(env, workdir / f"worker-{workers}{'-spy' if spy else ''}-{k}.log"))
        deadline = started + 60 + n * 0.2
        if spy:
            # Attached once the first delivery arrived: the worker's steady state, not its start-up.
            while receiver.count() < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            spy_out = workdir / "worker-py-spy.txt"
            spy_proc = subprocess.Popen(
                [
                    str(ROOT / ".venv" / "bin" / "py-spy"),
                    "record",
                    "--pid",
                    str(procs[0][0].pid),
                    "--idle",
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--duration",
                    str(int(30 + n * 0.1)),
                    "--output",
                    str(spy_out),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        while receiver.count() < n and time.monotonic() < deadline:
            if any(p.poll() is not None for p, _ in procs):
                break
            time.sleep(0.02)
        wait_until = time.monotonic() + 30
        while time.monotonic() < wait_until:
            delivered = deliveries.filter(status=WebhookDelivery.Status.DELIVERED).count()
            if delivered == n and not DBTaskResult.objects.filter(status__in=("READY", "RUNNING")).exists():
                break
            time.sleep(0.05)
        time.sleep(0.5)  # room for a duplicate to arrive, if one were coming
    finally:
        if spy_proc is not None:
            spy_proc.send_signal(2)  # SIGINT: py-spy writes what it has
            try:
                spy_proc.wait(20)
            except subprocess.TimeoutExpired:
                spy_proc.kill()
                spy_proc.wait(5)
        codes = [stop_worker(p, o) for p, o in procs]
    received = receiver.take()
    connections.close_all()
    if spy_out is not None and spy_out.exists():
        raw_stacks = spy_out.read_text()
        profile = load.rank_stacks(raw_stacks, top=20) | {"worker": worker_breakdown(raw_stacks)}
    wanted = set(event_ids)
    got = [wid for _, wid, _, _ in received]
    if not wanted <= set(got):
        tails = "\n".join(
            (workdir / f).read_text()[-1500:]
            for f in os.listdir(workdir)
            if f.startswith("worker-") and f.endswith(".log")
        )
        raise RuntimeError(f"deliveries {label}: {len(wanted & set(got))} of {n} received\n{tails}")
    verifier = Webhook(secret)
    unverified = 0
    for _, _, headers, body in received:
        try:
            verifier.verify(body, headers)
        except Exception:
            unverified += 1
    outcome = sorted(set(deliveries.values_list("status", "attempts")))
    jobs = [
        (finished - begun).total_seconds() * 1000
        for begun, finished in DBTaskResult.objects.filter(
            task_path="events.tasks.send_webhooks",
            enqueued_at__gte=since,
        ).values_list("started_at", "finished_at")
        if begun and finished
    ]
    leftover = DBTaskResult.objects.exclude(status="SUCCESSFUL").count()
    times = sorted(t for t, *_ in received)
    span = times[-1] - times[0]
    result = {
        "workers": workers,
        "py_spy": spy,
        "deliveries": n,
        "received": len(received),
        "duplicates": len(got) - len(set(got)),
        "unknown_ids": len(set(got) - wanted),
        "unverified": unverified,
        "rows": [list(o) for o in outcome],
        "jobs_not_successful": leftover,
        "first_to_last_s": round(span, 3),
        "deliveries_per_s": round((len(times) - 1) / span, 1) if span > 0 else None,
        "start_to_first_s": round(times[0] - started, 3),
        "start_to_last_s": round(times[-1] - started, 3),
        "deliveries_per_s_from_start": round(len(times) / (times[-1] - started), 1),
        "queue_s": round(queue_s, 2),
        "job_ms": {
            "jobs": len(jobs),
            "p50": round(percentile(jobs, 50), 2),
            "p90": round(percentile(jobs, 90), 2),
        },
        "worker_exit_codes": codes,
    }
    if profile is not None:
        result["profile"] = profile
    log(
        f"deliveries {label}: {result['deliveries_per_s']}/s over {result['first_to_last_s']} s "
        f"(start to last {result['start_to_last_s']} s); rows {outcome}, duplicates {result['duplicates']}, "
        f"unverified {unverified}"
    )
    if result["unknown_ids"] or unverified or outcome != [("delivered", 1)] or leftover:
        raise RuntimeError(f"deliveries {label}: not every delivery delivered once and verified: {result}")
    return result


def deliveries_part(hooks: dict, receiver: Receiver, env: dict, workdir: Path, *, n: int) -> dict:
    """Part 3: one worker, two, and (below the target) one under py-spy."""
    from events.webhooks import endpoint_create

    payload = invoice_payload(hooks)
    _, secret = endpoint_create(organization_id=hooks["organization"].pk, url=receiver.url, events=["*"])
    runs = [delivery_run(hooks, receiver, secret, payload, env, workdir, n=n, workers=w) for w in (1, 2)]
    if (
        min(x["deliveries_per_s"] or 0 for x in runs) < TARGET_DELIVERIES
        and (ROOT / ".venv" / "bin" / "py-spy").exists()
    ):
        runs.append(delivery_run(hooks, receiver, secret, payload, env, workdir, n=n, workers=1, spy=True))
    return {"runs": runs}


def only_report(result: dict, part: str, begun: float, workdir: Path) -> int:
    """The end of an `--only` run: its raw figures under their own name, a line a run on stdout."""
    from django.db import connections

    connections.close_all()
    result["duration_s"] = round(time.monotonic() - begun, 1)
    RAW_RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RAW_RESULTS / f"{result['date']}-events-{part}.json"
    raw.write_text(json.dumps(result, indent=2, default=str))
    for run in result["deliveries"]["runs"]:
        print(
            f"{run['workers']} worker(s){' (py-spy)' if run['py_spy'] else ''}: "
            f"{run['deliveries_per_s']}/s, job p50 {run['job_ms']['p50']} ms"
        )
    shutil.rmtree(workdir, ignore_errors=True)
    log(f"done in {result['duration_s']} s: {raw.relative_to(ROOT)}")
    return 0


def clear_queue(organization) -> int:
    """Drop the jobs and deliveries the write runs queued (no worker ran then), so that the
    delivery runs' workers find only their own."""
    from django_tasks_db.models import DBTaskResult

    from events.models import WebhookDelivery

    jobs = DBTaskResult.objects.filter(status="READY").delete()[0]
    WebhookDelivery.objects.filter(organization=organization).delete()
    return jobs


# --- report -------------------------------------------------------------------------------------


def _la(values: list[float]) -> str:
    return "/".join(f"{x:.1f}" for x in values)


def busiest() -> list[str]:
    """The processes using the most CPU now (other work on the machine skews every figure)."""
    out = subprocess.run(
        ["ps", "-eo", "pcpu,args", "--sort=-pcpu", "--no-headers"],
        capture_output=True,
        text=True,
        check=False,
    )
    rows = []
    for line in out.stdout.splitlines()[:6]:
        cpu, _, args = line.strip().partition(" ")
        if float(cpu or 0) >= 5 and "bench/events.py" not in args:
            rows.append(f"{args.strip()[:80]} ({cpu} %)")
    return rows


def code_state() -> dict:
    """The commit measured, and the app files that differ from it in the working tree (read-only git)."""

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.rstrip("\n")  # not strip(): a porcelain line starts with a space

    modified = [
        line[3:]
        for line in git("status", "--porcelain").splitlines()
        if not line[3:].startswith(("bench/", "tests/")) and line[3:].endswith(".py")
    ]
    return {"commit": git("rev-parse", "--short", "HEAD"), "modified": modified}


def busy(result: dict) -> str:
    seen = result["machine"].get("busiest_at_start") or []
    return f" (busiest other processes at start, CPU since their start: {'; '.join(seen)})" if seen else ""


def markdown(result: dict) -> str:
    m, h, q, p, prof = (
        result["machine"],
        result["writes"],
        result["queries"],
        result["inprocess"],
        result["profile"],
    )
    lists, lq, seeded, d = (
        result["lists"],
        result["list_queries"],
        result["events_seeded"],
        result["deliveries"],
    )
    mark = lambda ok: "✅" if ok else "❌"  # noqa: E731
    out = [
        f"# Events and webhooks benchmark — {result['date']}",
        "",
        f"Machine: {m['nproc']} x {m['cpu']}, {m['memory_gib']} GiB, Linux {m['kernel']}; {m['postgresql']} "
        f"(synchronous_commit {m['postgresql_settings'].get('synchronous_commit')}); Python {m['python']}, "
        f"Django {m['django']}, gunicorn {m['gunicorn']} ({h['gunicorn_workers']} sync workers); {m['wrk']}. "
        f"Load average {_la(m['load_average_at_start'])} at start, {_la(m['load_average_at_end'])} at the end"
        f"{busy(result)}. Run took {result['duration_s']} s.",
        "",
        "Method: `.venv/bin/python bench/events.py` (its docstring has the details); database `"
        + result["database"]
        + "`, dropped, created and migrated at the start. Code: commit "
        + result["code"]["commit"]
        + (
            " with uncommitted changes to " + ", ".join(f"`{x}`" for x in result["code"]["modified"])
            if result["code"]["modified"]
            else ""
        )
        + '. "Off" is a second gunicorn whose settings add a bench-only '
        "app that replaces `events_record_many` and `events_record` with no-ops, in `events.services` and where they "
        "were imported by name ("
        + ", ".join(f"`{x}`" for x in result["off_patched"])
        + "); the representations the "
        "services build for their events are still built.",
        "",
        "## Writes with events on and off",
        "",
        f"gunicorn ({h['gunicorn_workers']} sync workers each, ./gunicorn.conf.py), wrk at {h['connections']} "
        f"connections for {h['duration_s']:g} s, {h['rounds']} interleaved rounds (off, on, on + endpoint; payment, "
        "then create), median of the rounds; each request with an `Idempotency-Key`. Payment: 0.01 on a fresh sent "
        "invoice of 3 lines. On + endpoint: one enabled endpoint of the organization subscribed to `*` (each write "
        "also inserts its deliveries and one job; no worker runs).",
        "",
        "| write | variant | req/s (median) | each round | p50 ms | p99 ms | statements | on / off |",
        "|---|---|--:|---|--:|--:|--:|--:|",
    ]
    for write in WRITES:
        for variant in VARIANTS:
            x = h[write][variant]
            if variant == "on":
                ratio = f"**{x['ratio']:.3f}** {mark(x['ratio'] >= TARGET_RATIO)}"
            else:  # off: the base; with an endpoint: what subscribing adds, reported (no target)
                ratio = f"{x['ratio']:.3f}" if variant == "endpoint" else ""
            out.append(
                f"| {WRITE_NAMES[write]} | {VARIANT_NAMES[variant]} | **{x['median_rps']}** | "
                f"{', '.join(str(r['rps']) for r in x['runs'])} | {x['median_p50_ms']} | {x['median_p99_ms']} | "
                f"{q[variant][write]} | {ratio} |"
            )
    out += [
        "",
        f"Target: events on at most 10 % fewer requests a second than off (ratio ≥ {TARGET_RATIO:.2f}): the cost of "
        "recording them. With an endpoint the ratio is reported, not a target: each such write also inserts its "
        "deliveries and their job, what an organization's subscription costs its writes. Statements: "
        "counted in-process with the test client, as tests/test_query_counts.py counts them (BEGIN, SAVEPOINT, "
        "RELEASE, COMMIT included).",
        "",
        f"In-process, the services alone (one thread, {p['per_round']} writes a round, {p['rounds']} interleaved "
        "rounds), ms a write:",
        "",
        "| service | off | on | on + endpoint | off / on | off / on + endpoint |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for write, service in (("payment", "payment_record"), ("create", "invoice_create (3 lines)")):
        x = p[write]
        out.append(
            f"| `{service}` | {x['off']['median_ms']} | {x['on']['median_ms']} | {x['endpoint']['median_ms']} | "
            f"{x['on']['ratio']:.3f} | {x['endpoint']['ratio']:.3f} |"
        )
    out += [
        "",
        f"cProfile of {prof['payment']['writes']} payments and {prof['create']['writes']} creates, events on + "
        "endpoint (cumulative time of each part, over the service's; cProfile slows Python, not PostgreSQL):",
        "",
        "| part | payment_record ms (share) | invoice_create ms (share) |",
        "|---|--:|--:|",
    ]
    for label in EVENT_PARTS:
        cells = []
        for write in WRITES:
            part = prof[write]["parts"].get(label)
            cells.append(f"{part['ms']} ({part['share']:.0%})" if part else "—")
        out.append(f"| {label} | {' | '.join(cells)} |")
    out.append(
        f"| the whole service | {prof['payment']['ms_per_write']} | {prof['create']['ms_per_write']} |"
    )
    out += [
        "",
        f"## Events listed per second ({seeded['events']:,} events in the organization)",
        "",
        f"Real events of each type written by the services, copied in one `INSERT ... SELECT` with time-ordered ids "
        f"(one a minute over the last week) in {seeded['seconds']} s; the table holds {seeded['table_rows']:,} events "
        f"({seeded['table_size']}, the write runs' too). Types: "
        + ", ".join(f"{t} {c:,}" for t, c in seeded["types"].items())
        + f". gunicorn, wrk at {lists['connections']} connections, {lists['duration_s']:g} s, {lists['rounds']} "
        "interleaved rounds.",
        "",
        "| request | req/s (median) | each round | p50 ms | p99 ms | statements | response |",
        "|---|--:|---|--:|--:|--:|--:|",
    ]
    for name in LISTS:
        x = lists[name]
        out.append(
            f"| {LIST_NAMES[name]} | **{x['median_rps']}** | {', '.join(str(r['rps']) for r in x['runs'])} | "
            f"{x['median_p50_ms']} | {x['median_p99_ms']} | {lq[name]['queries']} | "
            f"{lq[name]['results']} events, {lq[name]['bytes'] / 1024:.0f} KiB |"
        )
    out += [
        "",
        f"## Webhook deliveries per second, worker → http.server on 127.0.0.1 ({d['runs'][0]['deliveries']:,} deliveries)",
        "",
        "`manage.py run_worker --interval 0.05 --no-scheduler --no-startup-delay`, started once every delivery is "
        "queued (one event, one delivery, one job per write: `events_record` in its own transaction). Deliveries/s "
        "from the first received to the last, (N - 1) / span; start to last includes the worker's start-up. Every "
        "request verified with `standardwebhooks` after the run.",
        "",
        "| workers | deliveries/s | first → last s | start → first s | start → last s | job p50 / p90 ms | rows | "
        "duplicates | verified |",
        "|--:|--:|--:|--:|--:|--:|---|--:|---|",
    ]
    for x in d["runs"]:
        rows = ", ".join(f"{s} after {a} attempt{'s' if a != 1 else ''}: all" for s, a in x["rows"])
        out.append(
            f"| {x['workers']}{' (py-spy)' if x['py_spy'] else ''} | **{x['deliveries_per_s']}** | "
            f"{x['first_to_last_s']} | {x['start_to_first_s']} | {x['start_to_last_s']} | "
            f"{x['job_ms']['p50']} / {x['job_ms']['p90']} | {rows} | {x['duplicates']} | "
            f"{x['received'] - x['unverified']} of {x['received']} |"
        )
    out += [
        "",
        f"Target: ≥ {TARGET_DELIVERIES} deliveries a second (issue 17). Queueing each run's deliveries "
        "(in-process, one transaction each) took " + ", ".join(f"{x['queue_s']} s" for x in d["runs"]) + ".",
        "",
    ]
    spied = [x for x in d["runs"] if x.get("profile")]
    if spied:
        pr = spied[0]["profile"]
        out += [
            f"py-spy of the worker (wall time, {pr['samples']:,} samples in Django code): by category "
            + ", ".join(f"{c['category']} {c['share']:.0%}" for c in pr["breakdown"])
            + "; inclusive — "
            + ", ".join(f"`{f['function']}` {f['share']:.0%}" for f in pr["inclusive"][:14])
            + "; self — "
            + ", ".join(f"`{f['function']}` {f['share']:.0%}" for f in pr["self"][:8])
            + ".",
            "",
            f"The worker's main thread's samples by the part of its loop they are in ({spied[0]['deliveries']} "
            "deliveries, py-spy attached once the first was received; the other thread sampled, each POST's "
            "watchdog timer waiting, left out):",
            "",
            "| part | share of wall time |",
            "|---|--:|",
            *(f"| {x['part']} | {x['share']:.0%} |" for x in pr["worker"]),
            "",
        ]
    out += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for write in WRITES:
        for variant in ("on",):
            x = h[write][variant]
            out.append(
                f"| {WRITE_NAMES[write]}, {VARIANT_NAMES[variant]}: ≥ {TARGET_RATIO:.2f} of off's req/s | "
                f"{x['ratio']:.3f} ({x['median_rps']} / {h[write]['off']['median_rps']}) | {mark(x['ratio'] >= TARGET_RATIO)} |"
            )
    for x in d["runs"]:
        if x["py_spy"]:
            continue
        rate = x["deliveries_per_s"] or 0
        out.append(
            f"| webhook deliveries, {x['workers']} worker{'s' if x['workers'] > 1 else ''}: ≥ {TARGET_DELIVERIES}/s | "
            f"{rate}/s | {mark(rate >= TARGET_DELIVERIES)} |"
        )
    out += [
        "| every delivery delivered once, verified | "
        + "; ".join(
            f"{x['received']} received for {x['deliveries']}, {x['duplicates']} duplicates, {x['unverified']} unverified"
            for x in d["runs"]
        )
        + f" | {mark(all(not x['duplicates'] and not x['unverified'] for x in d['runs']))} |",
        "",
    ]
    return "\n".join(out)


def readme_table(result: dict) -> str:
    m, h, lists, d, q = (
        result["machine"],
        result["writes"],
        result["lists"],
        result["deliveries"],
        result["queries"],
    )
    rate = {x["workers"]: x["deliveries_per_s"] for x in d["runs"] if not x["py_spy"]}

    def writes(write: str) -> str:
        x = h[write]
        return (
            f"off {x['off']['median_rps']}, on {x['on']['median_rps']}: **{x['on']['ratio']:.2f}** "
            f"{'✅' if x['on']['ratio'] >= TARGET_RATIO else '❌'}; with an endpoint {x['endpoint']['median_rps']}: "
            f"{x['endpoint']['ratio']:.2f} (reported) "
            f"(statements {q['off'][write]} / {q['on'][write]} / {q['endpoint'][write]})"
        )

    ok = all(v is not None and v >= TARGET_DELIVERIES for v in rate.values())
    return "\n".join(
        [
            README_START,
            f"{result['date']}, {m['nproc']} x {m['cpu']}, {m['postgresql']}, load average "
            f"{m['load_average_at_start'][0]:.1f} at start; `.venv/bin/python bench/events.py`, "
            f"{result['duration_s']:.0f} s (details: `bench/results/{result['date']}-events.md`).",
            "",
            "| measure | method | result |",
            "|---|---|---|",
            f"| `POST /api/payments/` req/s, events off vs on | gunicorn ({h['gunicorn_workers']} sync workers), wrk "
            f"{h['connections']} connections, {h['duration_s']:g} s x {h['rounds']} interleaved rounds; off = the app "
            f"with `events_record_many` a no-op | {writes('payment')} (target ≥ {TARGET_RATIO:.2f}) |",
            f"| `POST /api/invoices/` (3 lines) req/s | same | {writes('create')} |",
            f"| `GET /api/events/` req/s, {result['events_seeded']['events']:,} events | same server, wrk "
            f"{lists['connections']} connections | page 20: {lists['list20']['median_rps']}, page 100: "
            f"{lists['list100']['median_rps']}, `?type=invoice.paid`: {lists['paid']['median_rps']} |",
            f"| webhook deliveries/s | {d['runs'][0]['deliveries']:,} deliveries (one a job), `run_worker --interval "
            "0.05 --no-scheduler --no-startup-delay` → http.server on 127.0.0.1 (204), first to last received | "
            f"1 worker {rate.get(1)}, 2 workers {rate.get(2)} (target ≥ {TARGET_DELIVERIES}) {'✅' if ok else '❌'} |",
            README_END,
        ]
    )


def write_readme(result: dict) -> None:
    path = ROOT / "bench" / "README.md"
    path.write_text(with_table(path.read_text(), readme_table(result)))


def with_table(text: str, table: str) -> str:
    """bench/README.md with the events table between its markers; the first time, the events
    section and its markers after the delivery block (before the next section)."""
    if README_START in text and README_END in text:
        before, rest = text.split(README_START, 1)
        return before + table + rest.split(README_END, 1)[1]
    section = "\n\n" + EVENTS_SECTION + "\n" + table
    anchor = "<!-- results:delivery:end -->"
    if anchor not in text:
        return text.rstrip("\n") + section + "\n"
    before, after = text.split(anchor, 1)
    head, sep, tail = after.partition("\n## ")
    return before + anchor + head.rstrip("\n") + section + "\n\n" + sep.lstrip("\n") + tail


EVENTS_SECTION = """## Events and webhooks

`bench/events.py` (issue 16), on its own: `.venv/bin/python bench/events.py` (under 5 minutes; its
docstring has every detail, `--help` the options). It drops, creates and migrates its own database,
`billing_bench_events` (or `BENCH_EVENTS_DATABASE`, a name with `bench` in it), and measures, on
PostgreSQL, each over 3 interleaved rounds (median):

1. **Writes with events on and off**: `POST /api/payments/` (0.01 on a fresh sent invoice) and
   `POST /api/invoices/` (3 lines), with an `Idempotency-Key`, through gunicorn as `bench/load.py` starts
   it, wrk at 4 connections, 5 s runs. "Off" is a second gunicorn whose settings module (written to the
   run's temporary directory) adds a bench-only app replacing `events_record_many`/`events_record` with
   no-ops: the app without the events' INSERT and the endpoints' read (the representations are still
   built). Also with one endpoint subscribed to `*` (deliveries and a job inserted too). Target: on ≥ 0.90
   of off. Statements per request counted in-process; the services timed in-process and profiled.
2. **Events listed per second**: `GET /api/events/` at page 20 and 100 and `?type=invoice.paid`, for an
   organization of 10,000 events (real events copied with time-ordered ids).
3. **Webhook deliveries per second**: 1,000 deliveries drained by one and by two `manage.py run_worker
   --interval 0.05 --no-scheduler --no-startup-delay` into a bare `http.server` on 127.0.0.1 answering 204,
   first to last received; every row must end delivered after one attempt, every `webhook-id` arrive and
   verify with `standardwebhooks`. Target ≥ 100/s (issue 17).

It writes `bench/results/<date>-events.md`, `bench/results/raw/<date>-events.json` and the table below
(`--no-readme` leaves this file alone).
"""


# --- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=4, help="wrk connections")
    parser.add_argument("--duration", type=float, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--events", type=int, default=10_000, help="events of the listed organization")
    parser.add_argument("--deliveries", type=int, default=1000, help="deliveries queued per worker run")
    parser.add_argument("--inprocess", type=int, default=50, help="writes per in-process round")
    parser.add_argument("--no-readme", action="store_true", help="leave bench/README.md as it is")
    parser.add_argument(
        "--only",
        choices=["deliveries"],
        help="run only this part (its figures go to bench/results/raw/<date>-events-<part>.json and "
        "stdout; the summary and bench/README.md are left as they are)",
    )
    args = parser.parse_args()
    if args.only:
        args.no_readme = True

    check_tools(need_py_spy=False)
    begun = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="bench-events-"))
    receiver = Receiver().start()
    env = environment(workdir)
    os.environ.update(env)
    sys.path.insert(0, str(workdir))
    (workdir / "bench_events_off").mkdir()
    (workdir / "bench_events_off" / "__init__.py").write_text(OFF_APP)
    (workdir / "bench_events_off_settings.py").write_text(SETTINGS_OFF_PY)
    log(f"database {DB_NAME}: drop, create, migrate; work files in {workdir}")
    recreate_database()
    import logging

    import django

    django.setup()
    logging.getLogger("billing.request").setLevel(logging.WARNING)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    result: dict = {
        "date": dt.date.today().isoformat(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "database": DB_NAME,
        "machine": machine(None) | {"busiest_at_start": busiest()},
        "config": vars(args),
        "code": code_state(),
    }
    try:
        from events.webhooks import endpoint_create

        if args.only:
            hooks = seed(["hooks"])["hooks"]
            result["deliveries"] = deliveries_part(hooks, receiver, env, workdir, n=args.deliveries)
            return only_report(result, args.only, begun, workdir)
        orgs = seed(["writes", "listing", "hooks"])
        writes, listing, hooks = orgs["writes"], orgs["listing"], orgs["hooks"]
        with events_off() as replaced:
            result["off_patched"] = replaced
        log(f"off: replaced {replaced}")
        endpoint, _ = endpoint_create(
            organization_id=writes["organization"].pk, url=receiver.url, events=["*"], enabled=False
        )
        result["queries"] = write_queries(writes, endpoint)
        result["writes"] = http_writes(
            writes,
            endpoint,
            env,
            workdir,
            connections=args.connections,
            duration=args.duration,
            rounds=args.rounds,
        )
        result["inprocess"] = inprocess_writes(writes, endpoint, per_round=args.inprocess, rounds=args.rounds)
        result["profile"] = profile_writes(writes, endpoint, count=2 * args.inprocess)
        result["events_seeded"] = seed_events(listing, args.events)
        result["list_queries"] = list_queries(listing)
        result["lists"] = http_lists(
            listing, env, workdir, connections=args.connections, duration=args.duration, rounds=args.rounds
        )
        result["jobs_cleared"] = clear_queue(writes["organization"])
        result["deliveries"] = deliveries_part(hooks, receiver, env, workdir, n=args.deliveries)
    finally:
        from django.db import connections

        connections.close_all()
        receiver.stop()
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    result["duration_s"] = round(time.monotonic() - begun, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    RAW_RESULTS.mkdir(parents=True, exist_ok=True)
    raw = RAW_RESULTS / f"{result['date']}-events.json"
    raw.write_text(json.dumps(result, indent=2, default=str))
    summary = RESULTS / f"{result['date']}-events.md"
    summary.write_text(markdown(result))
    if not args.no_readme:
        write_readme(result)
    shutil.rmtree(workdir, ignore_errors=True)
    log(f"done in {result['duration_s']} s: {summary.relative_to(ROOT)}, {raw.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
