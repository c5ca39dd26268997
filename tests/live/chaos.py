#!/usr/bin/env python
"""Chaos run: gunicorn on PostgreSQL, concurrent clients with retries, SIGKILLed workers and masters.

    .venv/bin/python tests/live/chaos.py --duration 60               # `make chaos`
    .venv/bin/python tests/live/chaos.py --duration 20 --clients 3   # the short run in CI

What it does, in order:

1. Through tests/live/server.py (LiveServer): drops and creates the PostgreSQL database
   (`billing_chaos` by default; only databases named `billing_chaos*` or `*_chaos` are ever
   dropped) and migrates it; starts gunicorn (`billing.wsgi:application` with ./gunicorn.conf.py,
   `--workers N`, the options in SERVER_OPTIONS, DJANGO_DEBUG=0) on 127.0.0.1:<port> (`--port`,
   else a free one) in its own process group and waits for /api/health/.
2. Registers two users through the API (each a user and an organization it owns), logs them in
   (a token bound to that membership), creates two customers and an API key of each organization
   through the API; the operator's superuser through the ORM in this process.
3. Starts the client processes (tests/live/chaos_client.py): the first of each organization with
   its owner's token, any further one with the organization's API key (one key space for both:
   idempotency keys are the organization's): invoices with 1-5 lines, sent, paid in 1-3 partial
   payments, every create with an Idempotency-Key, every unknown outcome retried as the same
   request, some keys replayed on purpose. Every 2xx goes to a journal. Beside them an
   operator (tests/live/chaos_operator.py) works in the Django admin: saves the clients' invoices
   from forms read before the race, deletes drafts in the admin while the API sends them, and
   deletes drafts through the API from two threads at once.
4. Meanwhile, every `--kill-every MIN MAX` seconds, SIGKILLs a random worker (the master forks a
   new one) or, now and then (and at least once per run), the master with its whole process group,
   and starts gunicorn again.
5. At the deadline: lets the clients finish the invoice they are on, stops gunicorn, waits until no
   connection to the database is left, then checks the database against the journals:
   `verify_ledger` finds nothing; every acknowledged invoice exists once, in its client's
   organization, with the acknowledged lines and total, made by its client's credential (the user
   or the API key); every invoice has the lines its request had; every acknowledged payment exists
   once with its invoice and amount, made by its client's credential; no request (one key) was
   applied twice, and every payment or invoice in the database has the key row that says its
   request ran once; Σ payments = amount_paid ≤ total; each organization's issued numbers (its
   `invoice_prefix` + six digits) have no gaps or duplicates; no client got an answer the contract
   does not allow (a 5xx, a replay with another body, a refused request that should have passed).
6. Prints the figures and exits 1 on any mismatch, or if nothing was acknowledged or killed
   (2 if the run overran its time limit).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import random
import re
import secrets
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import chaos_client
import chaos_operator
import requests
from server import LiveServer, ServerError, droppable, live_env, logger

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/billing_chaos"
DROP_PREFIX = "billing_chaos"
USERS = ("alice", "bob")
OPERATOR = ("chaos-operator", "chaos-operator-password-0123")
SETUP_BUDGET = 60  # seconds for database, fixtures and the first start of gunicorn
CLIENT_GRACE = 15  # seconds the clients have after the deadline to finish their invoice
BOOT_TIMEOUT = 30
SERVER_OPTIONS = ["--timeout=20", "--graceful-timeout=5"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60, help="seconds of chaos (default 60)")
    parser.add_argument("--clients", type=int, default=4, help="client processes (default 4)")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn workers (default 3)")
    parser.add_argument(
        "--kill-every",
        nargs=2,
        type=float,
        default=(1.0, 3.0),
        metavar=("MIN", "MAX"),
        help="seconds between two kills, drawn uniformly (default 1 3)",
    )
    parser.add_argument(
        "--master-kill-chance",
        type=float,
        default=0.2,
        help="share of kills that take the master and its process group (default 0.2; at least one per run)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--keep-log", action="store_true", help="keep the server log and the journals")
    args = parser.parse_args(argv)
    low, high = args.kill_every
    if not 0 < low <= high:
        parser.error("--kill-every needs 0 < MIN <= MAX")
    if args.duration <= 0 or args.clients < 1 or args.workers < 1:
        parser.error("--duration, --clients and --workers must be positive")
    if not droppable(urlsplit(args.database_url).path.lstrip("/"), DROP_PREFIX):
        parser.error("the database must be named billing_chaos* or *_chaos (it is dropped on every run)")
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)
    return args


log = logger("chaos")


# --- setup ------------------------------------------------------------------------------------------


def server_environment(args: argparse.Namespace) -> dict[str, str]:
    # LOG_LEVEL WARNING (live_env): the server log keeps warnings and 5xx tracebacks only
    return live_env(
        args.database_url, secret_key="chaos-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
    )


@dataclass(frozen=True)
class Tenant:
    """One organization of the run, as its clients act for it."""

    organization: int
    user: int  # its owner
    token: str  # the owner's member token
    api_key: str
    api_key_id: int
    customers: list[int]


def _api(base_url: str, method: str, path: str, body: dict, *, token: str | None = None) -> dict:
    headers = {"Authorization": f"Token {token}"} if token else {}
    response = requests.request(method, base_url + path, json=body, headers=headers, timeout=(2, 20))
    if response.status_code not in (200, 201):
        raise ServerError(f"setup: {method} {path} answered {response.status_code} {response.text[:500]}")
    return response.json()


def register_tenants(base_url: str) -> list[Tenant]:
    """Each of USERS registered, logged in, with two customers and an API key, through the API."""
    tenants = []
    for name in USERS:
        username, password = f"chaos-{name}", secrets.token_urlsafe(18)
        registered = _api(
            base_url,
            "POST",
            "/api/register/",
            {"username": username, "password": password, "organization_name": f"Chaos {name}"},
        )
        login = _api(base_url, "POST", "/api/login/", {"username": username, "password": password})
        if login["organization"]["id"] != registered["organization"]["id"] or login["role"] != "owner":
            raise ServerError(f"setup: {username} logged in as {login}, not as the owner of {registered}")
        token = login["token"]
        customers = [
            _api(base_url, "POST", "/api/customers/", {"name": f"{name} customer {i}"}, token=token)["id"]
            for i in (1, 2)
        ]
        key = _api(
            base_url, "POST", "/api/api-keys/", {"name": f"{name} integration", "role": "member"}, token=token
        )
        tenants.append(
            Tenant(
                organization=registered["organization"]["id"],
                user=registered["id"],
                token=token,
                api_key=key["key"],
                api_key_id=key["id"],
                customers=customers,
            )
        )
    return tenants


def prepare_database(env: dict[str, str], base_url: str) -> list[Tenant]:
    """The tenants (through the API) and the operator's superuser (the ORM); Django set up here."""
    tenants = register_tenants(base_url)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connections

    get_user_model().objects.create_superuser(OPERATOR[0], "operator@example.com", OPERATOR[1])
    connections.close_all()
    return tenants


def credential_of(index: int, tenants: list[Tenant]) -> tuple[Tenant, str, tuple[str, int]]:
    """Client `index`'s organization, what it sends as its token and who its writes are by: the
    first client of an organization uses its owner's token, the others its API key."""
    tenant = tenants[index % len(tenants)]
    if index < len(tenants):
        return tenant, tenant.token, ("user", tenant.user)
    return tenant, tenant.api_key, ("api_key", tenant.api_key_id)


# --- the chaos ---------------------------------------------------------------------------------------


def unleash_chaos(
    server: LiveServer, args: argparse.Namespace, rng: random.Random, deadline: float
) -> Counter:
    """Kill workers and masters at random moments until the deadline; restart gunicorn after a master."""
    kills: Counter = Counter()
    started = time.monotonic()
    next_kill = started + rng.uniform(*args.kill_every)
    while time.monotonic() < deadline:
        if not server.alive():
            kills["unexpected server exits"] += 1
            log(f"gunicorn exited by itself (code {server.returncode}); starting it again")
            server.restart(delay=1, timeout=min(BOOT_TIMEOUT, max(deadline - time.monotonic() - 1, 1)))
            kills["restarts"] += 1
        now = time.monotonic()
        if now >= next_kill:
            half_time = now - started > args.duration / 2
            take_master = kills["worker kills"] > 0 and (
                rng.random() < args.master_kill_chance or (half_time and not kills["master kills"])
            )
            if take_master:
                kills["master kills"] += 1
                delay = rng.uniform(0, 0.5)  # a supervisor takes a moment to notice
                server.restart(
                    delay=delay, timeout=min(BOOT_TIMEOUT, max(deadline - time.monotonic() - delay, 1))
                )
                kills["restarts"] += 1
            elif server.kill_worker(rng=rng):
                kills["worker kills"] += 1
            next_kill = time.monotonic() + rng.uniform(*args.kill_every)
        time.sleep(0.02)
    return kills


# --- the checks --------------------------------------------------------------------------------------


def read_journals(paths: list[Path]) -> list[dict]:
    records = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            # A client stopped halfway through a write leaves a last line that does not parse.
            with contextlib.suppress(json.JSONDecodeError):
                records.append(json.loads(line))
    return records


def wait_for_quiet_database(timeout: float) -> bool:
    """Until no other session is left on the database (a killed worker's backend may still be
    finishing its transaction when gunicorn is gone)."""
    from django.db import connection

    give_up = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0] == 0:
                return True
            if time.monotonic() > give_up:
                return False
            time.sleep(0.2)


def find_mismatches(
    records: list[dict], organization_of_client: dict[int, int], actor_of_client: dict[int, tuple[str, int]]
) -> list[str]:
    """Compare the database with what the clients sent and what they were told."""
    from django.db.models import Count

    from billing.models import IdempotencyKey
    from invoices.models import Invoice
    from payments.ledger import ledger_mismatches
    from payments.models import Payment
    from users.models import Organization

    problems = [f"verify_ledger: {line}" for line in ledger_mismatches()]
    server_errors = Counter(
        (r["method"], re.sub(r"/\d+/", "/{id}/", r["path"]), r["status"])
        for r in records
        if r["t"] == "server_error"
    )
    for (method, path, status), count in sorted(server_errors.items()):
        problems.append(f"{count} answer(s) {status} to {method} {path} (never 5xx, says the contract)")
    for record in records:
        if record["t"] == "unexpected":
            problems.append(f"client {record['client']} got an answer the contract does not allow: {record}")

    by_kind = defaultdict(list)
    for record in records:
        by_kind[record["t"]].append(record)
    invoice_attempts = {r["key"]: r for r in by_kind["invoice_attempt"]}
    payment_attempts = {r["key"]: r for r in by_kind["payment_attempt"]}

    invoices = {
        row["pk"]: row
        for row in Invoice.objects.annotate(line_count=Count("lines")).values(
            "pk",
            "organization_id",
            "notes",
            "status",
            "number",
            "total",
            "amount_paid",
            "line_count",
            "created_by_user_id",
            "created_by_api_key_id",
        )
    }
    payments = {
        row["pk"]: row
        for row in Payment.objects.values(
            "pk",
            "organization_id",
            "invoice_id",
            "amount",
            "reference",
            "created_by_user_id",
            "created_by_api_key_id",
        )
    }
    prefixes = dict(Organization.objects.values_list("pk", "invoice_prefix"))

    def made_by(row: dict) -> tuple[str, int] | None:
        if row["created_by_user_id"] is not None:
            return ("user", row["created_by_user_id"])
        if row["created_by_api_key_id"] is not None:
            return ("api_key", row["created_by_api_key_id"])
        return None

    key_rows = {
        (row["organization_id"], row["key"]): row
        for row in IdempotencyKey.objects.values(
            "organization_id", "key", "operation", "response_status", "response_body"
        )
    }

    def names_object(organization_id: int, key: str, operation: str, pk: int) -> bool:
        row = key_rows.get((organization_id, key))
        return (
            row is not None
            and row["operation"] == operation
            and row["response_status"] == 201
            and json.loads(row["response_body"]).get("id") == pk
        )

    # Every invoice in the database: one per request (key), with the lines and total it asked for.
    for invoice in invoices.values():  # the operator's mark is not part of the client's key
        invoice["notes"] = invoice["notes"].split(chaos_operator.OPERATOR_MARK)[0]
    invoices_by_key = defaultdict(list)
    for invoice in invoices.values():
        if not invoice["notes"].startswith(chaos_operator.OPERATOR_DRAFT):  # the operator's own drafts
            invoices_by_key[invoice["notes"]].append(invoice)
    for key, found in invoices_by_key.items():
        ids = [invoice["pk"] for invoice in found]
        attempt = invoice_attempts.get(key)
        if attempt is None:
            problems.append(f"invoice(s) {ids} carry the key {key!r} that no client sent")
            continue
        if len(found) > 1:
            problems.append(f"invoice request {key} was applied {len(found)} times: invoices {ids}")
        for invoice in found:
            if (invoice["line_count"], invoice["total"]) != (attempt["lines"], Decimal(attempt["total"])):
                problems.append(
                    f"invoice {invoice['pk']} has {invoice['line_count']} line(s) and a total of "
                    f"{invoice['total']}; its request had {attempt['lines']} line(s) for {attempt['total']}"
                )
            if not names_object(invoice["organization_id"], key, "invoice_create", invoice["pk"]):
                problems.append(f"invoice {invoice['pk']} exists without the idempotency key row of {key}")

    # Every acknowledged invoice exists, once, as acknowledged.
    acked_invoice_ids = defaultdict(set)
    for ack in by_kind["invoice_ack"]:
        acked_invoice_ids[ack["key"]].add(ack["id"])
        invoice = invoices.get(ack["id"])
        if invoice is None:
            problems.append(f"acknowledged invoice {ack['id']} ({ack['key']}) does not exist")
        elif (invoice["notes"], invoice["organization_id"], invoice["line_count"], invoice["total"]) != (
            ack["key"],
            organization_of_client[ack["client"]],
            ack["lines"],
            Decimal(ack["total"]),
        ):
            problems.append(f"acknowledged invoice {ack} is in the database as {invoice}")
        elif made_by(invoice) != actor_of_client[ack["client"]]:
            problems.append(
                f"acknowledged invoice {ack['id']} was made by {actor_of_client[ack['client']]} "
                f"and is recorded as made by {made_by(invoice)}"
            )
    for key, ids in acked_invoice_ids.items():
        if len(ids) > 1:
            problems.append(f"the key {key} was acknowledged with several invoices: {sorted(ids)}")

    # Sent invoices are issued; issued numbers have no gaps and no duplicates, per organization.
    for ack in by_kind["send_ack"]:
        invoice = invoices.get(ack["invoice"])
        if invoice is None or invoice["status"] == "draft" or invoice["number"] != ack["number"]:
            problems.append(f"acknowledged send {ack} is in the database as {invoice}")
    numbers = defaultdict(list)
    for invoice in invoices.values():
        if invoice["status"] != "draft":
            numbers[invoice["organization_id"]].append(invoice["number"])
    for organization_id, issued in numbers.items():
        prefix = prefixes[organization_id]
        expected = [f"{prefix}{n:06d}" for n in range(1, len(issued) + 1)]
        if sorted(issued) != expected:
            missing = sorted(set(expected) - set(issued))[:5]
            extra = sorted(n for n, c in Counter(issued).items() if c > 1 or n not in expected)[:5]
            problems.append(
                f"organization {organization_id}: issued numbers are not {prefix}000001..{len(issued)}: "
                f"missing {missing}, extra {extra}"
            )

    # Every payment in the database: one per request (key), as requested, with its key row.
    payments_by_key = defaultdict(list)
    for payment in payments.values():
        payments_by_key[payment["reference"]].append(payment)
    for key, found in payments_by_key.items():
        ids = [payment["pk"] for payment in found]
        attempt = payment_attempts.get(key)
        if attempt is None:
            problems.append(f"payment(s) {ids} carry the key {key!r} that no client sent")
            continue
        if len(found) > 1:
            problems.append(f"payment request {key} was applied {len(found)} times: payments {ids}")
        for payment in found:
            if (payment["invoice_id"], payment["amount"]) != (attempt["invoice"], Decimal(attempt["amount"])):
                problems.append(f"payment {payment} does not match its request {attempt}")
            if not names_object(payment["organization_id"], key, "payment_record", payment["pk"]):
                problems.append(f"payment {payment['pk']} exists without the idempotency key row of {key}")

    # Every acknowledged payment exists, once, as acknowledged.
    acked_payment_ids = defaultdict(set)
    for ack in by_kind["payment_ack"]:
        acked_payment_ids[ack["key"]].add(ack["id"])
        payment = payments.get(ack["id"])
        if payment is None:
            problems.append(f"acknowledged payment {ack['id']} ({ack['key']}) does not exist")
        elif (payment["reference"], payment["organization_id"], payment["invoice_id"], payment["amount"]) != (
            ack["key"],
            organization_of_client[ack["client"]],
            ack["invoice"],
            Decimal(ack["amount"]),
        ):
            problems.append(f"acknowledged payment {ack} is in the database as {payment}")
        elif made_by(payment) != actor_of_client[ack["client"]]:
            problems.append(
                f"acknowledged payment {ack['id']} was made by {actor_of_client[ack['client']]} "
                f"and is recorded as made by {made_by(payment)}"
            )
    for key, ids in acked_payment_ids.items():
        if len(ids) > 1:
            problems.append(f"the key {key} was acknowledged with several payments: {sorted(ids)}")

    # Every stored key names an object that exists and carries that key; no request was refused.
    for (organization_id, key), row in key_rows.items():
        body = json.loads(row["response_body"])
        pk = body.get("id") if isinstance(body, dict) else None
        if row["response_status"] != 201:
            problems.append(
                f"the request {key} of organization {organization_id} was refused: "
                f"{row['response_status']} {row['response_body']}"
            )
        elif row["operation"] == "invoice_create":
            if pk not in invoices or invoices[pk]["notes"] != key:
                problems.append(f"the key {key} names invoice {pk}, which is not its invoice")
        elif pk not in payments or payments[pk]["reference"] != key:
            problems.append(f"the key {key} names payment {pk}, which is not its payment")

    # Σ payments = amount_paid ≤ total, for every invoice.
    paid = defaultdict(Decimal)
    for payment in payments.values():
        paid[payment["invoice_id"]] += payment["amount"]
    for invoice in invoices.values():
        if not paid[invoice["pk"]] == invoice["amount_paid"] <= invoice["total"]:
            problems.append(
                f"invoice {invoice['pk']}: payments {paid[invoice['pk']]}, amount_paid {invoice['amount_paid']}, "
                f"total {invoice['total']}"
            )
    return problems


# --- the run -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="billing-chaos-"))
    env = server_environment(args)
    server = LiveServer(
        env=env,
        port=args.port,
        workers=args.workers,
        options=SERVER_OPTIONS,
        database="recreate",
        drop_prefix=DROP_PREFIX,
        log_path=workdir / "gunicorn.log",
        boot_timeout=BOOT_TIMEOUT,
        stop_timeout=10,
    )
    clients: list[multiprocessing.Process] = []

    def cleanup() -> None:
        for process in clients:
            if process.is_alive():
                process.kill()
        server.kill()
        server.close()

    def overrun() -> None:
        log(f"the run overran its time limit of {time_limit:.0f} s: stopping everything")
        cleanup()
        os._exit(2)

    time_limit = SETUP_BUDGET + args.duration + CLIENT_GRACE + 60
    watchdog = threading.Timer(time_limit, overrun)
    watchdog.daemon = True
    watchdog.start()
    log(
        f"seed {args.seed}; {args.clients} clients, {args.workers} workers, {args.duration:g} s; work dir {workdir}"
    )
    try:
        started = time.monotonic()
        try:
            server.open()
        except ServerError as error:
            log(f"FAIL: {error}")
            if tail := server.log_tail():
                print(tail)
            return 1
        try:
            tenants = prepare_database(env, server.base_url)
        except ServerError as error:
            log(f"FAIL: {error}")
            return 1
        log(f"setup took {time.monotonic() - started:.1f} s; chaos for {args.duration:g} s")

        context = multiprocessing.get_context("spawn")
        deadline = time.monotonic() + args.duration
        hard_stop = deadline + CLIENT_GRACE
        counters, organization_of_client, actor_of_client, journals = [], {}, {}, []
        for index in range(args.clients):
            tenant, token, actor = credential_of(index, tenants)
            organization_of_client[index], actor_of_client[index] = tenant.organization, actor
            journals.append(workdir / f"client-{index}.jsonl")
            counters.append(context.RawArray("q", len(chaos_client.COUNTERS)))
            clients.append(
                context.Process(
                    target=chaos_client.client_main,
                    args=(
                        index,
                        server.base_url,
                        token,
                        tenant.customers,
                        str(journals[-1]),
                        counters[-1],
                        args.seed * 1000 + index,
                        deadline,
                        hard_stop,
                    ),
                    name=f"chaos-client-{index}",
                )
            )
        journals.append(workdir / "operator.jsonl")
        clients.append(
            context.Process(
                target=chaos_operator.operator_main,
                args=(
                    server.base_url,
                    *OPERATOR,
                    tenants[0].token,
                    tenants[0].customers[0],
                    str(journals[-1]),
                    args.seed * 1000 + 999,
                    deadline,
                ),
                name="chaos-operator",
            )
        )
        for process in clients:
            process.start()

        kills = unleash_chaos(server, args, rng, deadline)
        if not server.alive() or not server.wait_healthy(BOOT_TIMEOUT):
            server.restart(timeout=BOOT_TIMEOUT)  # the clients finish their invoice on a live server
            kills["restarts"] += 1
        for process in clients:
            process.join(max(hard_stop + 5 - time.monotonic(), 0.1))
        stragglers = [process.name for process in clients if process.is_alive()]
        for process in clients:
            if process.is_alive():
                process.kill()
                process.join(5)
        server.stop()
        log(f"chaos over after {time.monotonic() - started:.1f} s; checking")

        if not wait_for_quiet_database(15):
            log("warning: sessions are still open on the database; checking anyway")
        records = read_journals(journals)
        mismatches = find_mismatches(records, organization_of_client, actor_of_client)
        if stragglers:
            mismatches.append(f"clients still running {CLIENT_GRACE} s after the deadline: {stragglers}")
        if kills["unexpected server exits"]:
            mismatches.append(
                f"gunicorn exited {kills['unexpected server exits']} time(s) without being killed"
            )
        totals = {name: sum(c[i] for c in counters) for i, name in enumerate(chaos_client.COUNTERS)}
        return report(args, totals, kills, records, mismatches, server.log_path, started)
    finally:
        watchdog.cancel()
        cleanup()
        if not args.keep_log:
            for path in workdir.iterdir():
                path.unlink()
            workdir.rmdir()


def report(
    args, totals: dict, kills: Counter, records: list[dict], mismatches: list[str], log_path, started
) -> int:
    from invoices.models import Invoice
    from payments.models import Payment

    acked_invoices = {r["key"] for r in records if r["t"] == "invoice_ack"}
    acked_payments = {r["key"] for r in records if r["t"] == "payment_ack"}
    server_log = log_path.read_text(errors="replace")
    figures = {
        "requests sent": totals["requests"],
        "acknowledged (2xx)": totals["acknowledged"],
        "retries": totals["retries"],
        "  after no answer (connection error, timeout)": totals["connection_errors"],
        "  after 409 request_in_progress": totals["in_progress"],
        "  after 409 conflict": totals["conflicts"],
        "  lost answers found applied (stored answer)": totals["recovered_by_key"],
        "  lost sends found applied (409, then GET)": totals["sends_found_done"],
        "replayed answers (Idempotent-Replayed)": totals["replays"],
        "deliberate replays": totals["deliberate_replays"],
        "given up, outcome unknown": totals["lost"],
        "5xx answers": totals["server_errors"],
        "invoices acknowledged / in the database": f"{len(acked_invoices)} / {Invoice.objects.count()}",
        "payments acknowledged / in the database": f"{len(acked_payments)} / {Payment.objects.count()}",
        "operator: admin saves of client invoices": sum(r["t"] == "operator_save" for r in records),
        "operator: admin deletes racing API sends": sum(r["t"] == "operator_delete_race" for r in records),
        "operator: concurrent API deletes": sum(r["t"] == "operator_double_delete" for r in records),
        "clients using an API key (the others a token)": max(0, args.clients - len(USERS)),
        "worker kills": kills["worker kills"],
        "master kills": kills["master kills"],
        "restarts": kills["restarts"],
        "unexpected server exits": kills["unexpected server exits"],
        "tracebacks in the server log": server_log.count("Traceback"),
        "mismatches": len(mismatches),
    }
    log(f"figures (seed {args.seed}, {time.monotonic() - started:.1f} s in all):")
    for name, value in figures.items():
        print(f"  {name:<46} {value}")
    for line in mismatches[:50]:
        print(f"  MISMATCH {line if len(line) <= 400 else line[:400] + ' ...'}")
    if len(mismatches) > 50:
        print(f"  ... and {len(mismatches) - 50} more")
    failed = bool(mismatches)
    if not acked_invoices or not acked_payments:
        log("FAIL: nothing was acknowledged; the run proves nothing")
        failed = True
    if not kills["worker kills"] + kills["master kills"]:
        log("FAIL: nothing was killed; the run proves nothing")
        failed = True
    errors = Counter(re.findall(r"\b([A-Z]\w*(?:Error|Exception): [^\n\"\\]{0,200})", server_log))
    if errors:
        log(f"exceptions in the server log ({log_path if args.keep_log else 'use --keep-log to keep it'}):")
        for error, count in errors.most_common(10):
            print(f"  {count:>6} x {error}")
    log("FAIL" if failed else "OK: every acknowledged request is in the books exactly once")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
