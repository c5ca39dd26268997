"""In-process measurements through Django's test client against `billing_bench`: queries per request,
server time, the exact SQL of a request (for pgbench), EXPLAIN plans and mark_overdue.

Imported only after `django.setup()` (bench/run.py does it with DJANGO_SETTINGS_MODULE=bench.settings).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.db import close_old_connections, connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from billing import db
from invoices.services import invoice_mark_overdue

HOST = "127.0.0.1"


@dataclass
class Req:
    """One request of the benchmark, the same in-process and under wrk."""

    method: str
    path: str
    body: dict | None = None
    idempotency_key: str | None = None
    extra: dict = field(default_factory=dict)


def api_client(token: str) -> APIClient:
    client = APIClient(HTTP_HOST=HOST)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def send(client: APIClient, req: Req):
    """One request. Django's test client skips the connection housekeeping that a real request
    does first (`close_old_connections` on request_started); it is done here, so that with
    CONN_HEALTH_CHECKS the request starts with the same `SELECT 1` as under gunicorn."""
    close_old_connections()
    headers = {}
    if req.idempotency_key:
        headers["HTTP_IDEMPOTENCY_KEY"] = req.idempotency_key
    if req.method == "GET":
        return client.get(req.path, **headers)
    return client.post(req.path, req.body, format="json", **headers)


def count_queries(client: APIClient, req: Req, expect: int = 200) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = send(client, req)
    if response.status_code != expect:
        raise RuntimeError(f"{req.method} {req.path}: {response.status_code} {response.content[:300]!r}")
    return len(ctx.captured_queries)


def count_mark_overdue_queries() -> int:
    """mark_overdue's statements, inside a transaction that is rolled back (nothing moves). The
    savepoint around its UPDATE is there only because of that transaction (from cron, in autocommit,
    there is none), so it is not counted."""
    with transaction.atomic(), CaptureQueriesContext(connection) as ctx:
        invoice_mark_overdue()
        transaction.set_rollback(True)
    return sum("SAVEPOINT" not in query["sql"].upper() for query in ctx.captured_queries)


def server_time(client: APIClient, req: Req, *, repeat: int, warmup: int = 2) -> dict:
    """The time Django takes to answer (no network, no gunicorn): median and max over `repeat`
    runs after `warmup`, and the part of it spent waiting for the database's statements."""
    for _ in range(warmup):
        send(client, req)
    totals, sql = [], []
    for _ in range(repeat):
        spent = [0.0]

        def timer(execute, sql_text, params, many, context, spent=spent):
            start = time.perf_counter()
            try:
                return execute(sql_text, params, many, context)
            finally:
                spent[0] += time.perf_counter() - start

        with connection.execute_wrapper(timer):
            start = time.perf_counter()
            response = send(client, req)
            totals.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{req.path}: {response.status_code}")
        sql.append(spent[0] * 1000)
    return {
        "median_ms": round(statistics.median(totals), 2),
        "max_ms": round(max(totals), 2),
        "sql_median_ms": round(statistics.median(sql), 2),
        "runs": repeat,
    }


# --- the exact SQL of a request, transaction boundaries included -------------------------------


@contextmanager
def trace_sql() -> Iterator[list[tuple[str, str]]]:
    """Record what one request sends to PostgreSQL, in order: ("sql", text) with the parameters
    interpolated as psycopg2 sent them, ("begin", "") and ("commit"/"rollback", "") where Django
    opens and ends a transaction, and ("health", "SELECT 1"), the check of CONN_HEALTH_CHECKS
    (it bypasses Django's cursor wrappers, so CaptureQueriesContext does not count it). The kept
    statements as their text, not as the EXECUTE of a statement prepared on this connection (billing.db;
    a pgbench client has not prepared it): pgbench replays the SQL as psycopg2 sends it unprepared."""
    events: list[tuple[str, str]] = []
    conn = connection
    prepared, db.PREPARED = db.PREPARED, False
    originals = {
        name: getattr(conn, name) for name in ("_set_autocommit", "_commit", "_rollback", "is_usable")
    }

    def set_autocommit(autocommit):
        if not autocommit:
            events.append(("begin", ""))
        return originals["_set_autocommit"](autocommit)

    def commit():
        events.append(("commit", ""))
        return originals["_commit"]()

    def rollback():
        events.append(("rollback", ""))
        return originals["_rollback"]()

    def is_usable():
        events.append(("health", "SELECT 1"))
        return originals["is_usable"]()

    def wrapper(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        query = context["cursor"].cursor.query
        if query is not None:  # None: held (billing.db.held_writes), sent in the next statement's text
            events.append(("sql", query.decode() if isinstance(query, bytes) else str(query)))
        return result

    conn._set_autocommit, conn._commit, conn._rollback, conn.is_usable = (
        set_autocommit,
        commit,
        rollback,
        is_usable,
    )
    try:
        with conn.execute_wrapper(wrapper):
            yield events
    finally:
        db.PREPARED = prepared
        for name in originals:
            delattr(conn, name)  # back to the class's methods


def capture(client: APIClient, req: Req, expect: int) -> tuple[list[tuple[str, str]], object]:
    """The statements of one request. The connection's health check is due at each request start, as
    in gunicorn with CONN_MAX_AGE > 0, so it is part of the trace."""
    with trace_sql() as events:
        response = send(client, req)
    if response.status_code != expect:
        raise RuntimeError(f"{req.method} {req.path}: {response.status_code} {response.content[:300]!r}")
    # Drop empty transactions (a BEGIN with no statement before its COMMIT sends nothing).
    cleaned: list[tuple[str, str]] = []
    for kind, sql in events:
        if kind in ("commit", "rollback") and cleaned and cleaned[-1][0] == "begin":
            cleaned.pop()
            continue
        cleaned.append((kind, sql))
    return cleaned, response


_QUOTED = re.compile(r"'(?:[^']|'')*'")


def replace_outside_quotes(sql: str, literal: str, replacement: str) -> tuple[str, int]:
    """Replace the integer `literal` where it stands alone outside string literals (not inside a
    timestamp, a decimal or a longer number)."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(literal)}(?![\w.])")
    out, count, last = [], 0, 0
    for m in _QUOTED.finditer(sql):
        segment, n = pattern.subn(replacement, sql[last : m.start()])
        out += [segment, m.group(0)]
        count += n
        last = m.end()
    segment, n = pattern.subn(replacement, sql[last:])
    out.append(segment)
    return "".join(out), count + n


def explain(sql: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, SETTINGS) {sql}")
        return "\n".join(row[0] for row in cursor.fetchall())


_INDEX_USE = re.compile(r"(Index Only Scan|Index Scan|Bitmap Index Scan)(?: Backward)?(?: using| on) (\w+)")
_SEQ = re.compile(r"Seq Scan on (\w+)")


def plan_summary(plan: str) -> dict:
    exec_ms = re.search(r"Execution Time: ([\d.]+) ms", plan)
    hits = re.findall(r"shared hit=(\d+)", plan)
    reads = re.findall(r"read=(\d+)", plan)
    heap_fetches = re.findall(r"Heap Fetches: (\d+)", plan)
    return {
        "execution_ms": float(exec_ms.group(1)) if exec_ms else None,
        "indexes": sorted({f"{kind} {name}" for kind, name in _INDEX_USE.findall(plan)}),
        "seq_scans": sorted(set(_SEQ.findall(plan))),
        # the top node's buffers come first: the whole query's
        "shared_hit": int(hits[0]) if hits else 0,
        "shared_read": int(reads[0]) if reads else 0,
        "heap_fetches": sum(int(h) for h in heap_fetches),
        "top_node": plan.splitlines()[0].strip() if plan else "",
    }


def time_mark_overdue() -> tuple[float, int, int]:
    """(seconds, rows moved, statements) of one invoice_mark_overdue() over the whole table, in
    autocommit as cron runs it (each zone's move is its own transaction; BEGIN and COMMIT are not
    counted)."""
    with CaptureQueriesContext(connection) as ctx:
        start = time.perf_counter()
        moved = invoice_mark_overdue()
        elapsed = time.perf_counter() - start
    return elapsed, moved, sum(_is_statement(query["sql"]) for query in ctx.captured_queries)


_TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE SAVEPOINT")


def _is_statement(sql: str) -> bool:
    """Not transaction control (Django logs BEGIN and COMMIT too): the statements mark_overdue's
    target counts."""
    return not sql.lstrip().upper().startswith(_TRANSACTION_CONTROL)
