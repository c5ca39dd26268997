"""The Django side of a run, in-process: the bench members' tokens and an API key, the invoice pools
wrk and pgbench share, the stored PDFs the `pdf` and `hosted` endpoints serve, the request bodies,
queries per request (with a token and with a key), and each endpoint's SQL captured as a pgbench
script.

Imported before `django.setup()`: Django and bench/inproc.py are imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import secrets
import time
from pathlib import Path

from bench import load
from bench.config import DB_NAME, ENDPOINTS, TARGET_QUERIES, log

# The role of the bench's API keys: one that may write, as a server integration's would.
API_KEY_ROLE = "admin"
# How many of tenant 1's issued invoices get a stored PDF (`stored_documents`), and the reason their
# rows carry (so a run replaces the previous run's rows, and only those).
PDF_INVOICES = 300
PDF_REASON = "bench"

# --- the Django side ----------------------------------------------------------------------------


# An event id as the services write it ('evt_' and 26 Crockford base32 characters).
EVENT_ID = re.compile(r"'evt_[0-9A-HJKMNP-TV-Z]{26}'")


def event_nonce() -> str:
    """A short per-run part of the pgbench scripts' event ids (an id is at most 30 characters)."""
    return f"{time.time_ns() // 1000 % 10**9:09d}"


def tokens() -> dict[str, str]:
    """A new token for each bench user, bound to its membership (the owner of its organization, as
    a login makes it); the previous run's are deleted."""
    from knox.models import get_token_model

    from users.models import Membership

    token_model = get_token_model()
    token_model.objects.all().delete()
    memberships = Membership.objects.select_related("user").filter(user__username__startswith="bench_")
    return {
        membership.user.username: token_model.objects.create(user=membership.user, membership=membership)[1]
        for membership in memberships.order_by("id")
    }


def api_keys() -> dict[str, str]:
    """A new API key of tenant 1's organization and of the small one's (the previous run's are
    deleted), by organization name, made by the service as `POST /api/api-keys/` makes them."""
    from users.models import ApiKey, Organization
    from users.services import api_key_create

    ApiKey.objects.all().delete()  # after restore(): nothing made with them is left
    return {
        organization.name: api_key_create(organization_id=organization.pk, name="bench", role=API_KEY_ROLE)[1]
        for organization in Organization.objects.filter(name__in=("bench_t01", "bench_tiny"))
    }


def pools() -> dict[str, list[int]]:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT kind, invoice_id FROM bench_pool ORDER BY kind, k")
        out: dict[str, list[int]] = {}
        for kind, invoice_id in cur.fetchall():
            out.setdefault(kind, []).append(invoice_id)
    return out


def stored_documents(organization_id: int, count: int = PDF_INVOICES) -> dict:
    """Stored PDFs for the `pdf` and `hosted` endpoints: `count` issued invoices of the organization
    (none of the payment pool; picked as `detail`'s are, by the md5 of the id), each given a version
    1 stored as the worker stores one (`delivery.services._store`: a file of its own under
    MEDIA_ROOT, named as it names them, its SHA-256 and size on the row). Every file holds the same
    bytes: one real PDF, rendered by `delivery.documents.render_pdf` for the first of the invoices,
    since what is measured is serving a stored file, not what it says. Written at every run (the
    files live under bench/.work, emptied at the start of each run), replacing the previous run's
    rows; the ids also go to `bench_pool` (kind 'pdf') for pgbench. Returns the invoice ids and
    their hosted-page tokens (in pool order) and the PDF's size."""
    import hashlib

    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage
    from django.db import connection, transaction
    from django.utils import timezone

    from delivery import documents
    from delivery.models import Document
    from invoices.models import Invoice

    with connection.cursor() as cur:
        cur.execute(
            "SELECT id, number, public_token FROM invoices_invoice WHERE organization_id = %s "
            "AND status <> 'draft' AND id NOT IN (SELECT invoice_id FROM bench_pool WHERE kind = 'pay') "
            "ORDER BY md5(id::text) LIMIT %s",
            [organization_id, count],
        )
        chosen = cur.fetchall()
    if not chosen:
        raise RuntimeError(f"organization {organization_id} has no issued invoice to store a PDF of")
    first = (
        Invoice.objects.select_related("organization", "customer")
        .prefetch_related("lines")
        .get(pk=chosen[0][0])
    )
    started = time.monotonic()
    pdf = documents.render_pdf(first)
    render_s = time.monotonic() - started
    digest = hashlib.sha256(pdf).hexdigest()
    now = timezone.now()
    ids = [invoice_id for invoice_id, _, _ in chosen]
    rows = [
        Document(
            organization_id=organization_id,
            invoice_id=invoice_id,
            version=1,
            status=Document.Status.STORED,
            reason=PDF_REASON,
            file=default_storage.save(
                f"documents/{organization_id}/{invoice_id}/{number}-v1-{digest[:12]}.pdf", ContentFile(pdf)
            ),
            sha256=digest,
            size=len(pdf),
            rendered_at=now,
        )
        for invoice_id, number, _ in chosen
    ]
    with transaction.atomic():
        Document.objects.filter(organization_id=organization_id, reason=PDF_REASON).delete()
        Document.objects.filter(invoice_id__in=ids).delete()
        Document.objects.bulk_create(rows)
        with connection.cursor() as cur:
            cur.execute("DELETE FROM bench_pool WHERE kind = 'pdf'")
            cur.executemany(
                "INSERT INTO bench_pool (kind, k, invoice_id) VALUES ('pdf', %s, %s)", list(enumerate(ids))
            )
    log(
        f"stored PDFs: {len(rows)} invoices of organization {organization_id}, {len(pdf):,} bytes each "
        f"(rendered once in {render_s:.2f} s)"
    )
    return {
        "invoices": ids,
        "tokens": [token for _, _, token in chosen],
        "bytes": len(pdf),
        "render_s": round(render_s, 2),
    }


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
        "ping_key": Req("GET", "/bench/ping/"),
        "me": Req("GET", "/api/me/"),
        "customers": Req("GET", "/api/customers/"),
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
        "pdf": Req("GET", f"/api/invoices/{ctx['pools']['pdf'][0]}/pdf/"),
        "hosted": Req("GET", f"/i/{ctx['hosted_tokens'][0]}/"),
    }


def credential(ctx: dict, endpoint: str, tenant: str = "bench_t01") -> str:
    """What `endpoint` is sent with: tenant's API key for the `*_key` endpoints, else its owner's token."""
    return ctx["api_keys"][tenant] if endpoint.endswith("_key") else ctx["tokens"][tenant]


def _measure(ctx: dict, big, tiny, pay: list[int], tag: str) -> dict[str, dict[str, int]]:
    """Queries per request of every measured request, made with the clients `big` (tenant 1) and
    `tiny` (the small tenant); payments go to the invoices `pay`."""
    from django.db import connection

    from bench.inproc import Req, count_queries, send

    n_big, n_tiny = ctx["plan"].invoices, ctx["plan"].tiny_invoices
    hosted = Req("GET", f"/i/{ctx['hosted_tokens'][0]}/")
    send(big, hosted)  # the client's first request in a throttle window also purges the old ones
    with connection.cursor() as cur:
        cur.execute(
            "SELECT i.id, count(DISTINCT l.id), count(DISTINCT p.id) FROM invoices_invoice i "
            "JOIN invoices_line l ON l.invoice_id = i.id LEFT JOIN payments_payment p ON p.invoice_id = i.id "
            "WHERE i.organization_id = %s AND i.id <= 5000 GROUP BY i.id "
            "ORDER BY count(DISTINCT l.id) + 3 * count(DISTINCT p.id), i.id",
            [ctx["organization"]],
        )
        rows = cur.fetchall()
    small_inv, large_inv = rows[0], rows[-1]
    key = f"{tag}-{secrets.token_hex(4)}"
    body = {"amount": "0.01", "method": "card"}
    return {
        "ping": {"authenticated DRF view": count_queries(big, Req("GET", "/bench/ping/"))},
        "list": {
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
        "detail": {
            f"{small_inv[1]} line(s), {small_inv[2]} payment(s)": count_queries(
                big, Req("GET", f"/api/invoices/{small_inv[0]}/")
            ),
            f"{large_inv[1]} lines, {large_inv[2]} payments": count_queries(
                big, Req("GET", f"/api/invoices/{large_inv[0]}/")
            ),
        },
        "summary": {
            f"tenant of {n_big:,}": count_queries(big, Req("GET", "/api/invoices/summary/")),
            f"tenant of {n_tiny}": count_queries(tiny, Req("GET", "/api/invoices/summary/")),
            "status=sent&status=overdue&search=Acme": count_queries(
                big, Req("GET", "/api/invoices/summary/?status=sent&status=overdue&search=Acme")
            ),
        },
        "create": {
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
        "payment": {
            "Idempotency-Key": count_queries(
                big, Req("POST", "/api/payments/", body | {"invoice": pay[0]}, f"qc-{key}-pay"), expect=201
            ),
            "no key": count_queries(
                big, Req("POST", "/api/payments/", body | {"invoice": pay[1]}), expect=201
            ),
        },
        "pdf": {
            "stored version": count_queries(big, Req("GET", f"/api/invoices/{ctx['pools']['pdf'][0]}/pdf/"))
        },
        # no credential: the throttle's count, the invoice, its lines
        "hosted": {"hosted page": count_queries(big, hosted)},
    }


def _stale_key_queries(ctx: dict, client) -> int:
    """The ceiling's queries with an API key whose `last_used_at` is more than a minute old: the
    one request a minute that also writes it."""
    from bench.inproc import Req, count_queries
    from users.models import ApiKey

    ApiKey.objects.filter(organization_id=ctx["organization"]).update(last_used_at=None)
    return count_queries(client, Req("GET", "/bench/ping/"))


def _touch_api_keys(ctx: dict) -> None:
    from django.utils import timezone

    from users.models import ApiKey

    ApiKey.objects.filter(organization_id=ctx["organization"]).update(last_used_at=timezone.now())


def query_counts(ctx: dict) -> dict:
    """Queries per request (Django's count, as the tests count them) at two page sizes, two data
    sizes and two line counts, with a member's token and with an API key; the targets apply to the
    largest count of either; "independent" asks that the counts agree across sizes."""
    from bench.inproc import Req, api_client, count_mark_overdue_queries, count_queries
    from users.models import Organization

    pay = ctx["pools"]["pay"]
    with_token = _measure(
        ctx, api_client(ctx["tokens"]["bench_t01"]), api_client(ctx["tokens"]["bench_tiny"]), pay[0:2], "t"
    )
    key_big, key_tiny = api_client(ctx["api_keys"]["bench_t01"]), api_client(ctx["api_keys"]["bench_tiny"])
    # A key's first request in a minute also writes its last_used_at: warm both keys first, so the
    # counts are those of every other request; that one write is measured on its own below.
    count_queries(key_big, Req("GET", "/bench/ping/"))
    count_queries(key_tiny, Req("GET", "/bench/ping/"))
    with_key = _measure(ctx, key_big, key_tiny, pay[2:4], "k")
    with_key["ping"]["first request in a minute (writes last_used_at)"] = _stale_key_queries(ctx, key_big)
    zones = Organization.objects.values_list("time_zone").distinct().count()
    out: dict[str, dict] = {}

    def record(name: str, target: int | None, independent=lambda v: v, exact: bool = False):
        row: dict = {"target": target, "exact": exact}
        for prefix, variants in (("", with_token[name]), ("api_key_", with_key[name])):
            worst = max(variants.values())
            compared = independent(variants)
            row[f"{prefix}variants"] = variants
            row[f"{prefix}max"] = worst
            row[f"{prefix}independent"] = None if compared is None else len(set(compared.values())) == 1
        if target is None:
            row["pass"] = None
        else:
            worst = max(row["max"], row["api_key_max"])
            ok = worst == target if exact else worst <= target
            row["pass"] = bool(
                ok and row["independent"] is not False and row["api_key_independent"] is not False
            )
        out[name] = row

    record("ping", None, independent=lambda v: None)
    record("list", TARGET_QUERIES["list"])
    record("detail", TARGET_QUERIES["detail"])
    record("summary", TARGET_QUERIES["summary"])
    # independence in the number of lines: the keyed variants only
    record(
        "create",
        TARGET_QUERIES["create"],
        independent=lambda v: {k: n for k, n in v.items() if "Idempotency-Key" in k},
    )
    record("payment", TARGET_QUERIES["payment"], independent=lambda v: None)
    record("pdf", TARGET_QUERIES["pdf"], independent=lambda v: None)
    record("hosted", None, independent=lambda v: None)
    # One statement per distinct time zone of the organizations, after the read of those zones.
    overdue = {f"whole table, {zones} time zone(s)": count_mark_overdue_queries()}
    out["mark_overdue"] = {
        "target": 1 + zones,
        "exact": True,
        "variants": overdue,
        "max": max(overdue.values()),
        "independent": True,
        "time_zones": zones,
        "pass": max(overdue.values()) == 1 + zones,
    }
    for name, row in out.items():
        log(
            f"queries {name:<12} token {row['variants']} key {row.get('api_key_variants', '-')} "
            f"target {row['target']} pass {row['pass']}"
        )
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
    from bench.inproc import api_client, capture, replace_outside_quotes, send

    reqs = requests_for(ctx)
    out = {}
    for name in ENDPOINTS:
        req = reqs[name]
        expect = 201 if req.method == "POST" else 200
        if name.endswith("_key"):  # the SQL of every request but the one a minute that writes it
            _touch_api_keys(ctx)
        if name == "hosted":  # the SQL of every request but a client's first in a throttle window
            send(api_client(credential(ctx, name)), req)
        events, response = capture(api_client(credential(ctx, name)), req, expect)
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
        elif name in ("detail", "pdf"):  # a random invoice of the endpoint's own pool
            invoice_literal = str(ctx["pools"][name][0])
            lines += [
                r"\set bk_k random(0, :bk_pool - 1)",
                rf"SELECT invoice_id AS bk_inv FROM bench_pool WHERE kind = '{name}' AND k = :bk_k \gset",
            ]
            defines = {"bk_pool": len(ctx["pools"][name])}
        elif name == "hosted":
            invoice_literal = str(ctx["pools"]["pdf"][0])
            token_literal = ctx["hosted_tokens"][0]
            lines += [
                r"\set bk_k random(0, :bk_pool - 1)",
                "SELECT p.invoice_id AS bk_inv, i.public_token AS bk_tok FROM bench_pool p "
                "JOIN invoices_invoice i ON i.id = p.invoice_id WHERE p.kind = 'pdf' AND p.k = :bk_k \\gset",
            ]
            defines = {"bk_pool": len(ctx["pools"]["pdf"])}
        elif name == "create":
            lines.append(r"\set bk_n :bk_n + 1")
        if req.idempotency_key:
            lines.append(r"\set bk_lock random(1, 4000000000000000000)")
            defines |= {"bk_n": 0, "bk_nonce": f"pgb{time.time_ns()}", "bk_ev": event_nonce()}
        counts = {
            "invoice": 0,
            "key": 0,
            "lock": 0,
            "amount_paid": 0,
            "created": 0,
            "version": 0,
            "event": 0,
            "token": 0,
        }
        event_ids = itertools.count()
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
            # Each event's id is new in every transaction (the primary key): per run, client, request.
            text, n = EVENT_ID.subn(
                lambda _, ids=event_ids: f"'evt_:bk_ev:client_id-:bk_n-{next(ids)}'", text
            )
            counts["event"] += n
            if "pg_try_advisory_xact_lock(" in text:
                head, _, tail = text.partition("pg_try_advisory_xact_lock(")
                text = head + "pg_try_advisory_xact_lock(:bk_lock)" + tail.split(")", 1)[1]
                counts["lock"] += 1
            if name == "hosted":  # inside its quotes: pgbench substitutes variables there too
                counts["token"] += text.count(token_literal)
                text = text.replace(token_literal, ":bk_tok")
            if invoice_literal:
                text, n = replace_outside_quotes(text, invoice_literal, ":bk_inv")
                counts["invoice"] += n
            if name == "payment" and text.startswith('UPDATE "invoices_invoice"'):
                text, n = re.subn(r'"amount_paid" = [\d.]+', '"amount_paid" = "amount_paid" + 0.01', text)
                counts["amount_paid"] += n
                # The compare-and-set on the version read (OwnedModel): every replay must match its
                # row as the request did, so the version is bumped and compared to itself.
                text, n = re.subn(r'"version" = \d+ WHERE', '"version" = "version" + 1 WHERE', text)
                text, m = re.subn(
                    r'"invoices_invoice"\."version" = \d+',
                    '"invoices_invoice"."version" = "invoices_invoice"."version"',
                    text,
                )
                counts["version"] += min(n, m)
            if created is not None:
                if text.startswith('INSERT INTO "invoices_invoice"'):
                    lines.append(f"{text} \\gset bk_")
                    continue
                text, n = replace_outside_quotes(text, str(created), ":bk_id")
                counts["created"] += n
            lines.append(f"{text};")
        expected = {
            "payment": {"invoice": 3, "key": 2, "lock": 1, "amount_paid": 1, "version": 1, "event": 2},
            "detail": {"invoice": 3},
            "create": {"key": 2, "lock": 1, "created": 1, "event": 1},
            "pdf": {"invoice": 1},
            "hosted": {"invoice": 1, "token": 1},
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
