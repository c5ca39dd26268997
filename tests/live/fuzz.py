#!/usr/bin/env python
"""Schema fuzzing: schemathesis against our own /api/schema/ on a live gunicorn server.

    .venv/bin/python tests/live/fuzz.py                      # bounded run (CI), PostgreSQL
    .venv/bin/python tests/live/fuzz.py --max-examples 200   # `make fuzz`
    .venv/bin/python tests/live/fuzz.py --sqlite             # no PostgreSQL needed

What it does, in order:

1. Through tests/live/server.py (LiveServer): (re)creates the database, PostgreSQL `billing_fuzz`
   by default (dropped and created again on every run; only databases named `billing_fuzz*` or
   `*_fuzz` are ever dropped) or a temporary SQLite file, and migrates it; starts gunicorn
   (`billing.wsgi:application` with ./gunicorn.conf.py, 2 workers and the options in
   SERVER_OPTIONS, DJANGO_DEBUG=0) on 127.0.0.1:<port> (`--port`, else a free one) and waits for
   /api/health/.
2. Registers the user `fuzz` (a user and an organization it owns, as `POST /api/register/` does)
   with a token bound to that membership, and seeds through the services what the path parameters
   should hit: customers (with and without invoices), invoices in every state (draft, empty draft,
   sent, partly paid, overdue, paid, void), payments, a member and an API key; plus a second
   organization with objects of its own, so ids of other organizations exist too (they must be
   404 / 400, never 200).
3. Runs the schemathesis CLI against http://127.0.0.1:<port>/api/schema/: every operation, every
   check (`--checks all`), every phase (examples, coverage, fuzzing, stateful). Authentication is
   the token of `fuzz` (its organization's owner), set by the auth provider below; `POST /api/logout/` revokes the token it is
   called with, so that one operation gets a freshly minted token per call (it is still fuzzed and
   checked like any other; the shared token must survive for the rest of the run).
   The stateful phase needs links between operations: drf-spectacular emits none, and schemathesis
   4 infers them itself from the response schemas and path parameters (`id` of a 201 → `{id}`), so
   the schema needs no hand-written links.
   The seeded ids are given to schemathesis as dictionaries bound to `{id}`, `customer` and
   `invoice` (used half of the time), so that requests reach real objects; most Idempotency-Keys
   are made unique (see `before_call`); and the contract's business-rule refusals of schema-valid
   data are recognised by their exact messages (see CONTRACT_400) — nothing else is set aside.
4. Stops schemathesis and the server (also on failure and Ctrl-C), prints the figures (operations, test cases,
   failures) and exits non-zero if schemathesis found anything or did not run cleanly.

This file is also the schemathesis hooks module (loaded through SCHEMATHESIS_HOOKS in the
schemathesis process); it is not collected by pytest (not named test_*.py).
"""

from __future__ import annotations

import argparse
import atexit
import itertools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

# The sibling module server.py, also when schemathesis loads this file by its path as its hooks module.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from server import LiveServer, ServerError, live_env, logger

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/billing_fuzz"
# Test cases per operation and phase in CI: enough for every phase to reach every operation, few
# enough for the run to stay well inside CI's time for this step; `make fuzz` runs 200.
DEFAULT_MAX_EXAMPLES = 50
FUZZ_USERNAME = "fuzz"
LOGOUT_PATH = "/api/logout/"
IDEMPOTENCY_HEADER = "Idempotency-Key"


# --- the schemathesis side (this module, loaded as hooks by the schemathesis process) -------------

# The contract's business rules that refuse a request whose every value has the form the schema
# gives it. OpenAPI cannot say "a customer id of yours", "due_date >= issue_date", "not more than
# the balance due" or "the right password", so schemathesis' positive_data_acceptance check (ST202,
# "schema-valid request rejected") would report them. Such a failure is dropped only when EVERY
# error in the 400 body is one of these rules, by its exact message; any other refusal of
# schema-valid data still fails the run. Every rule is in the API contract (API.md) or the README.
NOT_YOURS = r'Invalid pk "-?\d+" - object does not exist\.'
NOT_A_CHOICE = r"Select a valid choice\. That choice is not one of the available choices\."
INVOICE_WRITE_RULES = {
    "customer": [NOT_YOURS],  # another user's or no customer: 400 on the field
    "due_date": [
        r"The due date cannot be before the issue date\.",  # the serializer, when both are given
        r"The due date \(\d{4}-\d\d-\d\d\) cannot be before the issue date \(\d{4}-\d\d-\d\d\)\.",  # the model
    ],
    "number": [r"An invoice with this number already exists\."],  # unique per owner
    # Below 10^12 of the currency's major unit (API.md, Money per currency).
    "lines": [r"(A line amount|The invoice total) would exceed 999999999999(\.9{2,3})? [A-Z]{3}\."],
}
LIST_FILTER_RULES = {"customer": [NOT_A_CHOICE], "invoice": [NOT_A_CHOICE]}  # another user's object
WEBHOOK_ENDPOINT_RULES = {
    "url": [
        r"Enter a valid http or https URL\.",
        r"A webhook URL carries no user name or password; the signature authenticates the sender\.",
    ],
    "events": [
        r'"\*" subscribes to every event type; it stands alone\.',
        r"Each event type is listed once\.",
    ],
}
CONTRACT_400 = {
    "POST /api/login/": {
        "non_field_errors": [r"Unable to log in with the provided credentials\."],
        "organization": [r"You are not a member of this organization\."],  # API.md, endpoints
    },
    "POST /api/register/": {
        "username": [r"A user with that username already exists\."],
        # Django's password validators apply (API.md). Not "too short": the schema states that one.
        "password": [
            r"This password is too common\.",
            r"This password is entirely numeric\.",
            r"The password is too similar to the (username|email address)\.",
        ],
    },
    "POST /api/invoices/": INVOICE_WRITE_RULES,
    "PUT /api/invoices/{id}/": INVOICE_WRITE_RULES,
    "PATCH /api/invoices/{id}/": INVOICE_WRITE_RULES,
    "GET /api/invoices/": LIST_FILTER_RULES,
    "GET /api/invoices/summary/": LIST_FILTER_RULES,
    "GET /api/payments/": LIST_FILTER_RULES,
    "POST /api/payments/": {
        "invoice": [NOT_YOURS],
        "amount": [
            r"The amount \d+(\.\d+)? exceeds the balance due of \d+(\.\d+)? [A-Z]{3}\.",
            # The schema allows 3 places; the invoice's currency may have fewer (API.md, Money per currency).
            r"A [A-Z]{3} amount has at most [0-3] decimal places \(ISO 4217 minor units\); \d+(\.\d+)? has \d\.",
        ],
        "paid_at": [r"A payment cannot be dated in the future\."],
    },
    # The organization's `time_zone` is an IANA name (API.md, Organizations): a list of ~600 names
    # the schema does not enumerate.
    "PATCH /api/organization/": {
        "time_zone": [r'(?s)".*" is not an IANA time zone \(e\.g\. "Europe/Paris"\)\.'],
    },
    # "add an existing user" (API.md, Organizations): a username that is nobody's, or a member's.
    "POST /api/members/": {
        "username": [r"No user with this username\.", r"This user is already a member\."],
    },
    # `to` with `email: false` is 400 (API.md, Documents and delivery).
    "POST /api/invoices/{id}/send/": {
        "to": [r"`to` names recipients of an email; it cannot go with `email: false`\."],
    },
    # An expiry is in the future (README, API keys).
    "POST /api/api-keys/": {"expires_at": [r"An expiry must be in the future\."]},
    # A webhook URL is http or https with no credentials, and "*" stands alone (README, Webhooks): the
    # schema's `format: uri` allows any scheme.
    "POST /api/webhook-endpoints/": WEBHOOK_ENDPOINT_RULES,
    "PATCH /api/webhook-endpoints/{id}/": WEBHOOK_ENDPOINT_RULES,
}
# Errors in the {"detail", "code"} shape that a schema-valid request gets by contract.
CONTRACT_CODES = {
    # send needs at least one line and a total above zero: 400 (API.md, endpoints)
    "POST /api/invoices/{id}/send/": {400: {"invoice_incomplete"}},
    # an Idempotency-Key used before with another body or endpoint: 422 (API.md, idempotency)
    "POST /api/invoices/": {422: {"idempotency_key_reused"}},
    "POST /api/payments/": {422: {"idempotency_key_reused"}},
}


def contract_refusal(operation: str, status: int, body: object) -> str | None:
    """The rule a refusal of schema-valid data follows (see CONTRACT_400), or None if it is none."""
    if not isinstance(body, dict) or not body:
        return None
    if set(body) == {"detail", "code"}:
        if body["code"] in CONTRACT_CODES.get(operation, {}).get(status, set()):
            return f"{status} {body['code']}"
        return None
    rules = CONTRACT_400.get(operation, {})
    if status != 400:
        return None
    for field, messages in body.items():
        patterns = rules.get(field)
        if not patterns or not isinstance(messages, list) or not messages:
            return None
        for message in messages:
            if not isinstance(message, str) or not any(re.fullmatch(p, message) for p in patterns):
                return None
    return "400 on " + ", ".join(sorted(body))


def _parse_one_at_a_time() -> None:
    """CPython 3.11's `ast.parse` can raise a spurious `SystemError: AST constructor recursion depth
    mismatch` when threads parse at once (python/cpython#106905, "seen rarely in a threaded
    application"); hypothesis parses its lambdas' sources with it in schemathesis's worker threads,
    and one such error once failed a CI run that found nothing. In this process, parses take turns."""
    import ast

    if getattr(ast.parse, "one_at_a_time", False):
        return
    parse, turn = ast.parse, threading.Lock()

    def parse_in_turn(*args, **kwargs):
        with turn:
            return parse(*args, **kwargs)

    parse_in_turn.one_at_a_time = True
    ast.parse = parse_in_turn


def _register_hooks() -> None:
    import schemathesis

    _parse_one_at_a_time()
    lock = threading.Lock()
    state: dict[str, object] = {}

    def django_ready() -> None:
        if "ready" not in state:
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing.settings")
            sys.path.insert(0, str(ROOT))
            import django

            django.setup()
            state["ready"] = True
        from django.db import close_old_connections

        close_old_connections()

    def fresh_token() -> str:
        """A new token of the fuzz user for its organization, minted in the database (cheap: knox
        hashes with SHA-512)."""
        with lock:
            django_ready()
            return mint_token(fuzz_membership(repairs))

    def shared_token() -> str:
        """The fuzz user's token, valid: the fuzzed member routes may demote or remove the fuzz
        user itself (an owner may, once another owner exists), which would leave the rest of the
        run at 401. Its ownership is restored and a new token minted when that happened (counted
        in the figures); otherwise the token of the seed stays."""
        with lock:
            django_ready()
            from knox.models import get_token_model
            from knox.settings import CONSTANTS

            token = str(state.get("token") or os.environ["FUZZ_TOKEN"])
            membership = fuzz_membership(repairs)
            alive = (
                get_token_model()
                .objects.filter(membership=membership, token_key=token[: CONSTANTS.TOKEN_KEY_LENGTH])
                .exists()
            )
            if not alive:
                repairs["token"] += 1
                token = state["token"] = mint_token(membership)
            return token

    repairs: Counter[str] = Counter()

    @schemathesis.auth(refresh_interval=None)
    class FuzzTokenAuth:
        """The fuzz user's token on every operation; a throwaway one for logout, which revokes it."""

        def get(self, case, context):
            if context.operation.path == LOGOUT_PATH:
                return fresh_token()
            return shared_token()

        def set(self, case, data, context):
            case.headers = {**(case.headers or {}), "Authorization": f"Token {data}"}

    dropped: Counter[str] = Counter()

    @schemathesis.hook
    def filter_failure(context, failure, case, response):
        """Keep every failure except a contract-prescribed refusal of schema-valid data (ST202)."""
        if failure.code != "ST202":
            return True
        try:
            body = response.json()
        except ValueError:
            return True
        operation = f"{case.operation.method.upper()} {case.operation.path}"
        rule = contract_refusal(operation, response.status_code, body)
        if rule is None:
            return True
        with lock:
            dropped[f"{operation}: {rule}"] += 1
        return False

    @atexit.register
    def write_stats():
        if os.environ.get("FUZZ_STATS"):
            Path(os.environ["FUZZ_STATS"]).write_text(json.dumps({"dropped": dropped, "repairs": repairs}))

    calls = itertools.count()

    @schemathesis.hook
    def before_call(context, case, kwargs):
        """Make most Idempotency-Keys unique. Hypothesis draws the same few simple keys ("0", "A")
        over and over, and a key used before with another body is 422 by contract: left alone, most
        creates would never get past the key. Every fourth key is sent as drawn, so replays and 422s
        are still exercised; only keys the schema allows are touched (an invalid one stays invalid)."""
        key = (case.headers or {}).get(IDEMPOTENCY_HEADER)
        if not isinstance(key, str) or not _valid_idempotency_key(key):
            return
        with lock:
            n = next(calls)
        if n % 4:
            suffix = f"~{n}"
            case.headers[IDEMPOTENCY_HEADER] = key[: 255 - len(suffix)] + suffix


def fuzz_membership(repairs: Counter[str]):
    """The fuzz user's owner membership of its organization, made again (and counted in `repairs`)
    if a fuzzed request removed or demoted it."""
    from django.contrib.auth import get_user_model

    from users.models import Membership, Role

    user = get_user_model().objects.get(username=os.environ["FUZZ_USERNAME"])
    membership, created = Membership.objects.select_related("user").get_or_create(
        user=user, organization_id=int(os.environ["FUZZ_ORGANIZATION"]), defaults={"role": Role.OWNER}
    )
    if created:
        repairs["membership removed"] += 1
    elif membership.role != Role.OWNER:
        repairs[f"demoted to {membership.role}"] += 1
        membership.role = Role.OWNER
        membership.save(update_fields=["role"])
    return membership


def mint_token(membership) -> str:
    """A member token bound to `membership`, as login makes one."""
    from knox.models import get_token_model

    _, token = get_token_model().objects.create(user=membership.user, membership=membership)
    return token


def _valid_idempotency_key(key: str) -> bool:
    return 0 < len(key) <= 255 and key.isprintable() and key == key.strip(" ") and max(map(ord, key)) < 256


if __name__ == "_schemathesis_hooks":
    _register_hooks()


# --- the driver ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--max-examples",
        type=int,
        default=DEFAULT_MAX_EXAMPLES,
        help=f"test cases per operation and phase (default {DEFAULT_MAX_EXAMPLES})",
    )
    parser.add_argument(
        "--database-url", default=None, help=f"PostgreSQL URL (default {DEFAULT_DATABASE_URL})"
    )
    parser.add_argument("--sqlite", action="store_true", help="use a temporary SQLite file instead")
    parser.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    parser.add_argument(
        "--seed", type=int, default=None, help="schemathesis/hypothesis seed (default: random)"
    )
    parser.add_argument("--workers", type=int, default=2, help="schemathesis workers (default 2)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the server log and reports afterwards")
    parser.add_argument(
        "schemathesis_args",
        nargs=argparse.REMAINDER,
        help="after --: more `schemathesis run` options, e.g. -- --include-path /api/invoices/ (debugging)",
    )
    args = parser.parse_args(argv)
    if args.schemathesis_args[:1] == ["--"]:
        args.schemathesis_args = args.schemathesis_args[1:]
    if args.sqlite and args.database_url:
        parser.error("--sqlite and --database-url exclude each other")
    if args.max_examples < 1:
        parser.error("--max-examples must be at least 1")
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)
    return args


log = logger("fuzz")


def prepare_database(database_url: str) -> tuple[str, int, str, dict[str, list[int]]]:
    """Seed the migrated database; returns (username, its organization's id, token, ids of the
    seeded objects by kind)."""
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "billing.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connections

    organization_id, token, ids = seed()
    connections.close_all()
    return FUZZ_USERNAME, organization_id, token, ids


def seed() -> tuple[int, str, dict[str, list[int]]]:
    import datetime
    from decimal import Decimal

    from django.utils import timezone

    from billing.money import quantize
    from customers.models import Customer
    from invoices.models import Invoice
    from invoices.services import invoice_create, invoice_mark_overdue, invoice_send, invoice_void
    from payments.models import Payment
    from payments.services import payment_record
    from users.models import ApiKey, Membership
    from users.services import api_key_create, membership_add, user_register

    today = timezone.localdate()

    def days(n: int) -> datetime.date:
        return today + datetime.timedelta(days=n)

    def line(description: str, quantity: str, unit_price: str, tax_rate: str = "0") -> dict:
        return {
            "description": description,
            "quantity": Decimal(quantity),
            "unit_price": Decimal(unit_price),
            "tax_rate": Decimal(tax_rate),
        }

    def populate(organization) -> None:
        acme, globex, initech = (
            Customer.objects.create(organization=organization, name=name, email=email)
            for name, email in [
                ("Acme Corp", "billing@acme.example"),
                ("Globex Ltd", "ap@globex.example"),
                ("Initech", "accounts@initech.example"),
            ]
        )
        Customer.objects.create(organization=organization, name="No Invoices Yet", phone="+1 555 0100")
        lines = [line("Hosting", "1", "49.00", "8.25"), line("Support hours", "2.5", "80.00", "8.25")]

        def issued(customer, *, issue: int, due: int, items=lines, currency="USD") -> Invoice:
            invoice = invoice_create(
                organization=organization,
                customer_id=customer.pk,
                issue_date=days(issue),
                due_date=days(due),
                currency=currency,
                lines=items,
            )
            return invoice_send(organization=organization, invoice_id=invoice.pk)

        invoice_create(
            organization=organization, customer_id=acme.pk, due_date=days(30), lines=lines
        )  # draft
        invoice_create(
            organization=organization, customer_id=acme.pk, due_date=days(30), number="DRAFT-7"
        )  # empty draft
        issued(acme, issue=-10, due=20)  # sent
        partly = issued(globex, issue=-20, due=10, items=[line("Audit", "1", "1200.00")])
        payment_record(
            organization=organization, invoice_id=partly.pk, amount=Decimal("500.00"), method="bank_transfer"
        )
        late = issued(initech, issue=-45, due=-15, items=[line("Licences", "12", "19.99")])  # overdue
        late_partly = issued(initech, issue=-40, due=-5, items=[line("Licences", "3", "19.99")])
        payment_record(
            organization=organization, invoice_id=late_partly.pk, amount=Decimal("10.00"), method="cash"
        )
        paid = issued(globex, issue=-30, due=0, currency="EUR", items=[line("Beratung", "8", "120.00", "19")])
        paid.refresh_from_db()
        payment_record(organization=organization, invoice_id=paid.pk, amount=Decimal("500.00"), method="card")
        payment_record(
            organization=organization,
            invoice_id=paid.pk,
            amount=quantize(paid.total - Decimal("500.00"), "EUR"),
            method="check",
        )
        # Currencies with other minor units: JPY none, KWD three.
        yen = issued(acme, issue=-3, due=27, currency="JPY", items=[line("Localisation", "3", "333", "8")])
        payment_record(organization=organization, invoice_id=yen.pk, amount=Decimal("500"), method="card")
        dinars = issued(
            initech, issue=-8, due=22, currency="KWD", items=[line("Words", "1500", "0.0333", "5")]
        )
        payment_record(
            organization=organization, invoice_id=dinars.pk, amount=Decimal("20.125"), method="cash"
        )
        voided = issued(globex, issue=-5, due=25, items=[line("Duplicate", "1", "10")])
        invoice_void(organization=organization, invoice_id=voided.pk)
        assert late.pk

    _other, other_organization = user_register(username="other", password=secrets.token_urlsafe(16))
    populate(other_organization)
    user, organization = user_register(
        username=FUZZ_USERNAME, password=secrets.token_urlsafe(16), email="fuzz@example.com"
    )
    populate(organization)
    # Members and keys for the organization routes to reach: `other` is also a viewer of fuzz's
    # organization (a user of two organizations), and each organization has an API key.
    membership_add(organization_id=organization.pk, username="other", role="viewer", caller_role="owner")
    for owner, name in ((organization, "fuzz integration"), (other_organization, "other integration")):
        api_key_create(organization_id=owner.pk, name=name, role="member")
    invoice_mark_overdue()
    counts = {
        s: Invoice.objects.filter(organization=organization, status=s).count() for s in Invoice.Status.values
    }
    log(
        f"seeded organization {organization.pk} of user {FUZZ_USERNAME!r}: "
        f"{Customer.objects.filter(organization=organization).count()} customers, invoices {counts}"
    )
    token = mint_token(Membership.objects.select_related("user").get(user=user, organization=organization))
    ids = {}
    for kind, model in (
        ("customers", Customer),
        ("invoices", Invoice),
        ("payments", Payment),
        ("members", Membership),
        ("api_keys", ApiKey),
    ):
        # The fuzz organization's objects, and one of the other's (which must stay invisible: 404 / 400).
        own = list(
            model.objects.filter(organization=organization).order_by("pk").values_list("pk", flat=True)
        )
        ids[kind] = [
            *own,
            model.objects.filter(organization=other_organization).values_list("pk", flat=True).first(),
        ]
    return organization.pk, token, ids


# Seeded ids the generated requests use some of the time (schemathesis dictionaries), so that
# `{id}`, `customer` and `invoice` reach real objects instead of a 404 or a 400 most of the time.
ID_BINDINGS = {
    "customers": ["body.customer", "query.customer"],
    "invoices": ["body.invoice", "query.invoice"],
}
PATH_ID_OPERATIONS = {
    "customers": r"^/api/customers/\{id\}/$",
    "invoices": r"^/api/invoices/\{id\}/",
    "payments": r"^/api/payments/\{id\}/$",
    "members": r"^/api/members/\{id\}/$",
    "api_keys": r"^/api/api-keys/\{id\}/$",
}
ID_PROBABILITY = 0.5


def write_config(path: Path, ids: dict[str, list[int]]) -> None:
    """schemathesis.toml for the run: the seeded ids as dictionaries bound to the id parameters."""
    lines = []
    for kind, values in ids.items():
        lines += [f"[dictionaries.{kind}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    for kind, keys in ID_BINDINGS.items():
        for key in keys:
            lines.append(f'"{key}" = {{ dictionary = "{kind}", probability = {ID_PROBABILITY} }}')
    lines.append("")
    for kind, regex in PATH_ID_OPERATIONS.items():
        lines += [
            "[[operations]]",
            f"include-path-regex = '{regex}'",  # a TOML literal string: no escapes
            f'parameters = {{ "path.id" = {{ dictionary = "{kind}", probability = {ID_PROBABILITY} }} }}',
            "",
        ]
    path.write_text("\n".join(lines))


def server_env(database_url: str) -> dict[str, str]:
    return live_env(
        database_url,
        secret_key=os.environ.get("FUZZ_SECRET_KEY", "fuzz-only-secret-key-" + "x" * 40),
        LOGIN_THROTTLE_RATE="1000000/min",
        LOG_LEVEL=os.environ.get("FUZZ_SERVER_LOG_LEVEL", "WARNING"),  # INFO: one line per request
        PYTHONUNBUFFERED="1",
    )


SERVER_WORKERS = 2
SERVER_OPTIONS = [
    "--timeout=60",
    "--graceful-timeout=5",
    # gunicorn refuses a request line over 4094 bytes (and a header over 8190) itself, with an
    # HTML 400, before the app sees it; the fuzzer's negative cases make such URLs. Lifted here
    # so that the app is what gets fuzzed (it answers those in JSON); see the report on
    # `make serve`, which keeps gunicorn's limits.
    "--limit-request-line=0",
    "--limit-request-field_size=0",
    "--error-logfile=-",
]


def stop_process(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


# The response-time check's limit, in seconds (schemathesis's own is 10). The slowest response the
# contract allows is a draft's PDF, rendered on the request (API.md): the largest draft it accepts
# (500 lines of 500 characters, 168 pages) renders in 5.4 s alone on a 2-core machine, and took
# 12.8 s here while the fuzzer's workers shared those cores with the server. A response this slow
# is a hang or a runaway, not the cost of a document; speed is measured by bench/, not here.
MAX_RESPONSE_TIME = 30


def run_schemathesis(
    args, base_url: str, env: dict[str, str], report_dir: Path, config: Path, children: list
) -> tuple[int, str]:
    command = [
        str(VENV_BIN / "schemathesis"),
        "--config-file",
        str(config),
        "run",
        f"{base_url}/api/schema/",
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(args.max_examples),
        "--seed",
        str(args.seed),
        "--workers",
        str(args.workers),
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--max-response-time",
        str(MAX_RESPONSE_TIME),
        "--report",
        "junit",
        "--report-dir",
        str(report_dir),
        "--continue-on-failure",
        "--no-color",
        *args.schemathesis_args,
    ]
    log(" ".join(command))
    # Run in the scratch directory: schemathesis keeps a crash cache (.schemathesis/) in its cwd. In
    # its own session, like the server, so that on Ctrl-C or SIGTERM this script stops both itself.
    process = subprocess.Popen(
        command,
        cwd=report_dir.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    children.append(process)
    output = []
    assert process.stdout is not None
    for text in process.stdout:
        sys.stdout.write(text)
        output.append(text)
    return process.wait(), "".join(output)


def figures(output: str) -> dict[str, int]:
    found: dict[str, int] = {}
    if match := re.search(r"API Operations:\s*\n\s*Selected:\s*(\d+)/(\d+)\s*\n\s*Tested:\s*(\d+)", output):
        found["operations selected"], found["operations in schema"], found["operations tested"] = map(
            int, match.groups()
        )
    if match := re.search(r"Test cases:\s*\n\s*(\d+) generated, (\d+) found (\d+) unique failures?", output):
        found["test cases"], _, found["failures"] = map(int, match.groups())
    elif match := re.search(r"Test cases:\s*\n\s*(\d+) generated, (\d+) passed", output):
        found["test cases"], found["failures"] = int(match.group(1)), 0
    if "\nErrors:" in output:  # the summary's "  🚫 <kind>: <count>" lines
        errors = output.split("\nErrors:", 1)[1].split("\n\n", 1)[0]
        found["errors"] = sum(int(n) for n in re.findall(r"^\s*🚫 .+: (\d+)\s*$", errors, re.MULTILINE))
    return found


def logged_errors(server_log: Path) -> list[str]:
    """Lines of the server log at ERROR or above, or with a traceback: a 5xx, a crash, a worker timeout."""
    if not server_log.exists():
        return []
    markers = ('"level": "ERROR"', '"level": "CRITICAL"', " ERROR ", " CRITICAL ", "[ERROR]", "[CRITICAL]")
    return [
        line
        for line in server_log.read_text(errors="replace").splitlines()
        if any(marker in line for marker in markers) or "Traceback (most recent call last)" in line
    ]


def report_dropped(stats: Path) -> None:
    """How many refusals of schema-valid data were the contract's business rules, by rule, and how
    often the fuzz user's own membership had to be restored."""
    if not stats.exists():
        return
    data = json.loads(stats.read_text())
    dropped, repairs = data["dropped"], data["repairs"]
    log(f"contract refusals of schema-valid data (not failures, see CONTRACT_400): {sum(dropped.values())}")
    for rule, count in sorted(dropped.items(), key=lambda item: -item[1]):
        log(f"  {count:5d}  {rule}")
    if repairs:
        log(f"the fuzz user's ownership restored (the fuzzed member routes changed it): {dict(repairs)}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="billing-fuzz-"))
    database_url = (
        f"sqlite:///{workdir / 'billing_fuzz.sqlite3'}"
        if args.sqlite
        else args.database_url or DEFAULT_DATABASE_URL
    )
    env = server_env(database_url)
    server_log = workdir / "server.log"
    server = LiveServer(
        env=env,
        port=args.port,
        workers=SERVER_WORKERS,
        options=SERVER_OPTIONS,
        database="recreate",
        drop_prefix="billing_fuzz",
        log_path=server_log,
        stop_timeout=10,
    )
    children: list[subprocess.Popen] = []  # schemathesis
    started = time.monotonic()
    failed = True
    # Ctrl-C (even where the shell started us with SIGINT ignored) and SIGTERM end the run through
    # the finally block below, which stops schemathesis and the server.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        server.open()
        os.environ.update({k: v for k, v in env.items() if k != "DATABASE_URL"})
        username, organization_id, token, ids = prepare_database(database_url)
        config = workdir / "schemathesis.toml"
        write_config(config, ids)
        base_url = server.base_url
        log(f"server up on {base_url} ({'SQLite' if args.sqlite else 'PostgreSQL'}), log: {server_log}")
        st_env = {
            **env,
            "FUZZ_TOKEN": token,
            "FUZZ_USERNAME": username,
            "FUZZ_ORGANIZATION": str(organization_id),
            "FUZZ_STATS": str(workdir / "dropped.json"),
            "SCHEMATHESIS_HOOKS": str(Path(__file__).resolve()),
        }
        returncode, output = run_schemathesis(args, base_url, st_env, workdir / "report", config, children)
        server_errors = logged_errors(server_log)  # before the shutdown logs its own lines
        numbers = figures(output)
        report_dropped(workdir / "dropped.json")
        for line in server_errors[:20]:
            log(f"server: {line[:300]}")
        log(
            f"figures: {numbers.get('operations tested', '?')}/{numbers.get('operations in schema', '?')} "
            f"operations tested, {numbers.get('test cases', '?')} test cases, "
            f"{numbers.get('failures', '?')} failures, {numbers.get('errors', 0)} errors, "
            f"{len(server_errors)} server errors logged (seed {args.seed}, "
            f"--max-examples {args.max_examples}, {time.monotonic() - started:.0f}s)"
        )
        failed = (
            returncode != 0
            or numbers.get("failures", 1) != 0
            or numbers.get("errors", 0) != 0
            or bool(server_errors)
        )
        log("FAILED" if failed else "OK: no failures")
        return 1 if failed else 0
    except ServerError as error:
        log(f"FAILED: {error}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        for process in children:  # schemathesis first, then the server
            stop_process(process)
        server.close()
        if failed or args.keep_logs:
            log(f"server log and reports kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
