#!/usr/bin/env python
"""Chaos run: gunicorn on PostgreSQL, concurrent clients with retries, SIGKILLed workers and masters.

    .venv/bin/python tests/live/chaos.py --duration 60               # `make chaos`
    .venv/bin/python tests/live/chaos.py --duration 20 --clients 3   # the short run in CI (< 60 s)

What it does, in order:

1. Drops and creates the PostgreSQL database (`billing_chaos` by default; only databases named
   `billing_chaos*` are ever dropped), migrates, and creates two users with a knox token and two
   customers each, through the ORM in this process.
2. Starts gunicorn (`billing.wsgi:application`, `--workers N`, DJANGO_DEBUG=0) on 127.0.0.1:<port>
   in its own process group and waits for /api/health/.
3. Starts the client processes (tests/live/chaos_client.py): invoices with 1-5 lines, sent, paid in
   1-3 partial payments, every create with an Idempotency-Key, every unknown outcome retried as the
   same request, some keys replayed on purpose. Every 2xx goes to a journal. Beside them an
   operator (tests/live/chaos_operator.py) works in the Django admin: saves the clients' invoices
   from forms read before the race, deletes drafts in the admin while the API sends them, and
   deletes drafts through the API from two threads at once.
4. Meanwhile, every `--kill-every MIN MAX` seconds, SIGKILLs a random worker (the master forks a
   new one) or, now and then (and at least once per run), the master with its whole process group,
   and starts gunicorn again.
5. At the deadline: lets the clients finish the invoice they are on, stops gunicorn, waits until no
   connection to the database is left, then checks the database against the journals:
   `verify_ledger` finds nothing; every acknowledged invoice exists once with the acknowledged lines
   and total, every invoice has the lines its request had; every acknowledged payment exists once
   with its invoice and amount; no request (one key) was applied twice, and every payment or invoice
   in the database has the key row that says its request ran once; Σ payments = amount_paid ≤ total;
   issued numbers have no gaps or duplicates; no client got an answer the contract does not allow
   (a 5xx, a replay with another body, a refused request that should have passed).
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
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import chaos_client
import chaos_operator

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/billing_chaos"
USERS = ("alice", "bob")
OPERATOR = ("chaos-operator", "chaos-operator-password-0123")
SETUP_BUDGET = 60  # seconds for database, fixtures and the first start of gunicorn
CLIENT_GRACE = 15  # seconds the clients have after the deadline to finish their invoice
BOOT_TIMEOUT = 30


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
    parser.add_argument("--port", type=int, default=8201)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--keep-log", action="store_true", help="keep the server log and the journals")
    args = parser.parse_args(argv)
    low, high = args.kill_every
    if not 0 < low <= high:
        parser.error("--kill-every needs 0 < MIN <= MAX")
    if args.duration <= 0 or args.clients < 1 or args.workers < 1:
        parser.error("--duration, --clients and --workers must be positive")
    if not urlsplit(args.database_url).path.lstrip("/").startswith("billing_chaos"):
        parser.error("the database must be named billing_chaos* (it is dropped on every run)")
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)
    return args


def log(message: str) -> None:
    print(f"[chaos] {message}", flush=True)


# --- setup ------------------------------------------------------------------------------------------


def server_environment(args: argparse.Namespace) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "billing.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "chaos-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": args.database_url,
        "LOGIN_THROTTLE_RATE": "100000/min",
        "LOG_LEVEL": "WARNING",  # the server log keeps warnings and 5xx tracebacks only
    }


def recreate_database(url: str) -> None:
    import psycopg2
    from psycopg2 import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    assert name.startswith("billing_chaos"), name
    admin_url = urlunsplit((parts.scheme, parts.netloc, "/postgres", "", ""))
    connection = psycopg2.connect(admin_url, connect_timeout=5)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    finally:
        connection.close()


def prepare_database(env: dict[str, str]) -> list[tuple[int, str, list[int]]]:
    """Migrate and create the users; returns (user id, token, customer ids) per user."""
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections
    from knox.models import AuthToken

    from customers.models import Customer

    call_command("migrate", verbosity=0, interactive=False)
    get_user_model().objects.create_superuser(OPERATOR[0], "operator@example.com", OPERATOR[1])
    users = []
    for name in USERS:
        user = get_user_model().objects.create_user(username=f"chaos-{name}")
        _, token = AuthToken.objects.create(user=user)
        customers = [Customer.objects.create(owner=user, name=f"{name} customer {i}").pk for i in (1, 2)]
        users.append((user.pk, token, customers))
    connections.close_all()
    return users


# --- the server --------------------------------------------------------------------------------------


class Server:
    """gunicorn in its own process group, so that killing the group frees the port."""

    def __init__(self, *, port: int, workers: int, env: dict[str, str], log_path: Path):
        self.port, self.workers, self.env, self.log_path = port, workers, env, log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.wait_port_free(10)
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [
                    str(VENV_BIN / "gunicorn"),
                    "billing.wsgi:application",
                    f"--bind=127.0.0.1:{self.port}",
                    f"--workers={self.workers}",
                    "--timeout=20",
                    "--graceful-timeout=5",
                ],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def worker_pids(self) -> list[int]:
        """The master's live children, from /proc (field 4 of /proc/PID/stat is the parent)."""
        if not self.alive():
            return []
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                state, ppid = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[:2]
            except (OSError, ValueError):
                continue
            if int(ppid) == self.process.pid and state != "Z":
                pids.append(int(entry))
        return pids

    def kill_worker(self, rng: random.Random) -> bool:
        pids = self.worker_pids()
        if not pids:
            return False
        try:
            os.kill(rng.choice(pids), signal.SIGKILL)
        except ProcessLookupError:
            return False
        return True

    def kill_group(self, sig: int = signal.SIGKILL, wait: float = 10) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(wait)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        """Graceful (SIGTERM lets the running requests finish), then SIGKILL for whatever is left."""
        if self.process is None:
            return
        self.kill_group(signal.SIGTERM, wait=10)
        with contextlib.suppress(ProcessLookupError):  # orphaned workers of a dead master, if any
            os.killpg(self.process.pid, signal.SIGKILL)

    def wait_port_free(self, timeout: float) -> bool:
        give_up = time.monotonic() + timeout
        while True:
            with socket.socket() as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", self.port))
                    return True
                except OSError:
                    if time.monotonic() > give_up:
                        return False
            time.sleep(0.1)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/health/", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def wait_healthy(self, timeout: float) -> bool:
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            if not self.alive():
                return False
            if self.healthy():
                return True
            time.sleep(0.1)
        return False


def unleash_chaos(server: Server, args: argparse.Namespace, rng: random.Random, deadline: float) -> Counter:
    """Kill workers and masters at random moments until the deadline; restart gunicorn after a master."""
    kills: Counter = Counter()
    started = time.monotonic()
    next_kill = started + rng.uniform(*args.kill_every)
    while time.monotonic() < deadline:
        if not server.alive():
            kills["unexpected server exits"] += 1
            log(f"gunicorn exited by itself (code {server.process.returncode}); starting it again")
            time.sleep(1)
            server.start()
            kills["restarts"] += 1
            server.wait_healthy(min(BOOT_TIMEOUT, max(deadline - time.monotonic(), 1)))
        now = time.monotonic()
        if now >= next_kill:
            half_time = now - started > args.duration / 2
            take_master = kills["worker kills"] > 0 and (
                rng.random() < args.master_kill_chance or (half_time and not kills["master kills"])
            )
            if take_master:
                server.kill_group()
                kills["master kills"] += 1
                time.sleep(rng.uniform(0, 0.5))  # a supervisor takes a moment to notice
                server.start()
                kills["restarts"] += 1
                server.wait_healthy(min(BOOT_TIMEOUT, max(deadline - time.monotonic(), 1)))
            elif server.kill_worker(rng):
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


def find_mismatches(records: list[dict], owner_of_client: dict[int, int]) -> list[str]:
    """Compare the database with what the clients sent and what they were told."""
    from django.db.models import Count

    from invoices.models import Invoice
    from payments.ledger import ledger_mismatches
    from payments.models import IdempotencyKey, Payment

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
            "pk", "owner_id", "notes", "status", "number", "total", "amount_paid", "line_count"
        )
    }
    payments = {
        row["pk"]: row
        for row in Payment.objects.values("pk", "owner_id", "invoice_id", "amount", "reference")
    }
    key_rows = {
        (row["owner_id"], row["key"]): row
        for row in IdempotencyKey.objects.values(
            "owner_id", "key", "endpoint", "response_status", "response_body"
        )
    }

    def names_object(owner_id: int, key: str, endpoint: str, pk: int) -> bool:
        row = key_rows.get((owner_id, key))
        return (
            row is not None
            and row["endpoint"] == endpoint
            and row["response_status"] == 201
            and row["response_body"].get("id") == pk
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
            if not names_object(invoice["owner_id"], key, "POST /api/invoices/", invoice["pk"]):
                problems.append(f"invoice {invoice['pk']} exists without the idempotency key row of {key}")

    # Every acknowledged invoice exists, once, as acknowledged.
    acked_invoice_ids = defaultdict(set)
    for ack in by_kind["invoice_ack"]:
        acked_invoice_ids[ack["key"]].add(ack["id"])
        invoice = invoices.get(ack["id"])
        if invoice is None:
            problems.append(f"acknowledged invoice {ack['id']} ({ack['key']}) does not exist")
        elif (invoice["notes"], invoice["owner_id"], invoice["line_count"], invoice["total"]) != (
            ack["key"],
            owner_of_client[ack["client"]],
            ack["lines"],
            Decimal(ack["total"]),
        ):
            problems.append(f"acknowledged invoice {ack} is in the database as {invoice}")
    for key, ids in acked_invoice_ids.items():
        if len(ids) > 1:
            problems.append(f"the key {key} was acknowledged with several invoices: {sorted(ids)}")

    # Sent invoices are issued; issued numbers have no gaps and no duplicates, per owner.
    for ack in by_kind["send_ack"]:
        invoice = invoices.get(ack["invoice"])
        if invoice is None or invoice["status"] == "draft" or invoice["number"] != ack["number"]:
            problems.append(f"acknowledged send {ack} is in the database as {invoice}")
    numbers = defaultdict(list)
    for invoice in invoices.values():
        if invoice["status"] != "draft":
            numbers[invoice["owner_id"]].append(invoice["number"])
    for owner_id, issued in numbers.items():
        expected = [f"INV-{n:06d}" for n in range(1, len(issued) + 1)]
        if sorted(issued) != expected:
            missing = sorted(set(expected) - set(issued))[:5]
            extra = sorted(n for n, c in Counter(issued).items() if c > 1 or n not in expected)[:5]
            problems.append(
                f"owner {owner_id}: issued numbers are not 1..{len(issued)}: missing {missing}, extra {extra}"
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
            if not names_object(payment["owner_id"], key, "POST /api/payments/", payment["pk"]):
                problems.append(f"payment {payment['pk']} exists without the idempotency key row of {key}")

    # Every acknowledged payment exists, once, as acknowledged.
    acked_payment_ids = defaultdict(set)
    for ack in by_kind["payment_ack"]:
        acked_payment_ids[ack["key"]].add(ack["id"])
        payment = payments.get(ack["id"])
        if payment is None:
            problems.append(f"acknowledged payment {ack['id']} ({ack['key']}) does not exist")
        elif (payment["reference"], payment["owner_id"], payment["invoice_id"], payment["amount"]) != (
            ack["key"],
            owner_of_client[ack["client"]],
            ack["invoice"],
            Decimal(ack["amount"]),
        ):
            problems.append(f"acknowledged payment {ack} is in the database as {payment}")
    for key, ids in acked_payment_ids.items():
        if len(ids) > 1:
            problems.append(f"the key {key} was acknowledged with several payments: {sorted(ids)}")

    # Every stored key names an object that exists and carries that key; no request was refused.
    for (owner_id, key), row in key_rows.items():
        pk = row["response_body"].get("id") if isinstance(row["response_body"], dict) else None
        if row["response_status"] != 201:
            problems.append(
                f"the request {key} of owner {owner_id} was refused: {row['response_status']} {row['response_body']}"
            )
        elif row["endpoint"] == "POST /api/invoices/":
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
    server = Server(port=args.port, workers=args.workers, env=env, log_path=workdir / "gunicorn.log")
    clients: list[multiprocessing.Process] = []

    def cleanup() -> None:
        for process in clients:
            if process.is_alive():
                process.kill()
        server.kill_group()

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
        recreate_database(args.database_url)
        users = prepare_database(env)
        if not server.wait_port_free(5):
            log(f"FAIL: port {args.port} is in use by another process")
            return 1
        server.start()
        if not server.wait_healthy(BOOT_TIMEOUT):
            state = "exited" if not server.alive() else f"did not answer /api/health/ within {BOOT_TIMEOUT} s"
            log(f"FAIL: gunicorn {state}; its log:")
            print(server.log_path.read_text(errors="replace")[-5000:])
            return 1
        log(f"setup took {time.monotonic() - started:.1f} s; chaos for {args.duration:g} s")

        context = multiprocessing.get_context("spawn")
        deadline = time.monotonic() + args.duration
        hard_stop = deadline + CLIENT_GRACE
        counters, owner_of_client, journals = [], {}, []
        for index in range(args.clients):
            user_id, token, customers = users[index % len(users)]
            owner_of_client[index] = user_id
            journals.append(workdir / f"client-{index}.jsonl")
            counters.append(context.RawArray("q", len(chaos_client.COUNTERS)))
            clients.append(
                context.Process(
                    target=chaos_client.client_main,
                    args=(
                        index,
                        f"http://127.0.0.1:{args.port}",
                        token,
                        customers,
                        str(journals[-1]),
                        counters[-1],
                        args.seed * 1000 + index,
                        deadline,
                        hard_stop,
                    ),
                    name=f"chaos-client-{index}",
                )
            )
        user_id, token, customers = users[0]
        journals.append(workdir / "operator.jsonl")
        clients.append(
            context.Process(
                target=chaos_operator.operator_main,
                args=(
                    f"http://127.0.0.1:{args.port}",
                    *OPERATOR,
                    token,
                    customers[0],
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
            server.kill_group()
            server.start()  # the clients finish their invoice on a live server
            kills["restarts"] += 1
            server.wait_healthy(BOOT_TIMEOUT)
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
        mismatches = find_mismatches(records, owner_of_client)
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
