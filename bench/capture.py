"""The Django side of a run, in-process: bench users' tokens, the invoice pools wrk and pgbench
share, the request bodies, queries per request, and each endpoint's SQL captured as a pgbench script.

Imported before `django.setup()`: Django and bench/inproc.py are imported inside the functions.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import time
from pathlib import Path

from bench import load
from bench.config import DB_NAME, ENDPOINTS, TARGET_QUERIES, log

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
            "WHERE i.organization_id = 1 AND i.id <= 5000 GROUP BY i.id "
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
        counts = {"invoice": 0, "key": 0, "lock": 0, "amount_paid": 0, "created": 0, "version": 0}
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
            "payment": {"invoice": 3, "key": 2, "lock": 1, "amount_paid": 1, "version": 1},
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
