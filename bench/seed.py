"""Fast, consistent seeding of `billing_bench` with PostgreSQL COPY.

Each tenant is an organization with one user, its owner (a membership); the extra small tenant
likewise. Organizations are spread over a few time zones (TIME_ZONES), as a shared deployment's are,
so that mark_overdue runs its one statement per zone; tenant 1, the one every request is made for,
is in UTC. N tenants x M invoices, interleaved in creation order (invoice i of every tenant, then i + 1, ...),
so one tenant's rows are spread over the whole table as they would be in production. Each invoice
has 1-5 lines and a status drawn from a realistic mix; paid and partly paid invoices have 1-3
payments. All money is computed in integer cents with the app's rule (half-up to the cent), so
every row satisfies the database's CHECK constraints and `verify_ledger` finds nothing.

Ids are assigned here, deterministically (organization, user and membership id = tenant + 1; invoice id = i * N + tenant + 1, line id = invoice id * 5
+ position + 1, payment id = invoice id * 3 + k + 1), so batches are independent: a worker process
generates the text of batch k + 1 while the main process COPYs batch k. Foreign-key triggers are
off while loading (`session_replication_role = replica`, superuser only), and with them the triggers
that keep InvoiceTotals, which is filled afterwards as its migration fills it; `check_integrity()`
proves that no row points nowhere. CHECK constraints and unique indexes stay on.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import multiprocessing
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from importlib import import_module

UTC = dt.UTC
SPAN_DAYS = 730  # invoices are created over the last two years
TERMS = (14, 30, 30, 30, 45, 60)
CURRENCIES = ("USD",) * 12 + ("EUR",) * 4 + ("GBP",) * 2 + ("JPY", "CHF")
TAX_RATES_C = (0, 0, 700, 1000, 1900, 2000)  # percent x 100
METHODS = ("bank_transfer", "bank_transfer", "card", "card", "cash", "check", "other")
ITEMS = (
    "Consulting hours",
    "Software licence",
    "Support plan",
    "Hosting (monthly)",
    "Design work",
    "Training session",
    "Hardware",
    "Travel expenses",
    "Maintenance",
    "Onboarding",
)
COMPANIES = (
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
)
BATCH = 20_000  # invoices per COPY batch
# Tenant t (from 0) is in TIME_ZONES[t % 3]; the small tenant in UTC.
TIME_ZONES = ("UTC", "Europe/Berlin", "America/New_York")


@dataclass(frozen=True)
class Plan:
    tenants: int
    invoices: int  # per tenant
    customers: int  # per tenant
    tiny_invoices: int  # the extra small tenant, for "does not grow with the data" checks
    seed: int = 20261125
    today: str = ""  # ISO date the data is relative to
    # What the rows look like: a dataset seeded with another layout is seeded again, not reused.
    layout: str = "organizations-1"

    @property
    def total_invoices(self) -> int:
        return self.tenants * self.invoices + self.tiny_invoices


def _cents(c: int) -> str:
    return f"{c // 100}.{c % 100:02d}"


def _yen(c: int) -> str:
    return str(c)


# Amounts are generated in minor units and written with the currency's places (JPY has none).
MINOR = {"JPY": _yen}


def _half_up(n: int, d: int) -> int:
    """round(n / d) half-up, for n >= 0, d > 0."""
    return (2 * n + d) // (2 * d)


def _ts(t: dt.datetime) -> str:
    return t.isoformat()


def _split(rng: random.Random, total: int, parts: int) -> list[int]:
    """`total` cents in `parts` positive amounts (fewer if total is too small)."""
    parts = max(1, min(parts, total))
    if parts == 1:
        return [total]
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


def _invoice_rows(
    rng: random.Random,
    *,
    plan: Plan,
    today: dt.date,
    organization_id: int,
    invoice_id: int,
    index: int,
    created: dt.datetime,
    customer_id: int,
    out_inv: list[str],
    out_lines: list[str],
    out_pay: list[str],
) -> None:
    issue = created.date()
    due = issue + dt.timedelta(days=rng.choice(TERMS))
    subtotal = tax_total = 0
    currency = rng.choice(CURRENCIES)
    money = MINOR.get(currency, _cents)
    for pos in range(rng.randint(1, 5)):
        qty = rng.choice((1000, 1000, 2000, 3000, 5000, 10000, 1500, 250, 12500, 40000))
        price = rng.randint(500, 200_000)
        rate = rng.choice(TAX_RATES_C)
        amount = _half_up(qty * price, 1000)
        tax = _half_up(amount * rate, 10000)
        subtotal += amount
        tax_total += tax
        out_lines.append(
            f"{invoice_id * 5 + pos + 1}\t{pos}\t{rng.choice(ITEMS)}\t{qty // 1000}.{qty % 1000:03d}\t"
            f"{money(price)}\t{rate // 100}.{rate % 100:02d}\t{money(amount)}\t{money(tax)}\t"
            f"{invoice_id}\t{organization_id}\n"
        )
    total = subtotal + tax_total
    r = rng.random()
    number = f"INV-{index + 1:06d}"
    sent_at = _ts(created + dt.timedelta(hours=1))
    paid_at = r"\N"
    updated = created + dt.timedelta(hours=1)
    amount_paid = 0
    # An issued invoice's hosted-page token (the database requires one), unique, from the seed's generator.
    public_token = base64.urlsafe_b64encode(rng.getrandbits(192).to_bytes(24, "big")).decode()
    if r < 0.08:
        status, number, sent_at, updated, public_token = "draft", r"\N", r"\N", created, r"\N"
    elif r < 0.12:
        status = "void"
    else:
        if r < 0.57:  # paid in full
            payments = _split(rng, total, rng.choice((1, 1, 1, 2, 3)))
        elif r < 0.67:  # partly paid
            paid = max(1, total * rng.randint(20, 80) // 100)
            payments = _split(rng, paid, rng.choice((1, 2))) if paid < total else []
        else:
            payments = []
        last_day = min(today, due + dt.timedelta(days=30))
        pay_day = issue
        for k, amount in enumerate(payments):
            span = max(0, (last_day - pay_day).days)
            pay_day = pay_day + dt.timedelta(
                days=rng.randint(0, span // 2 if k < len(payments) - 1 else span)
            )
            pay_ts = max(
                dt.datetime.combine(pay_day, dt.time(12, rng.randint(0, 59)), tzinfo=UTC),
                created + dt.timedelta(hours=2),
            )
            updated = max(updated, pay_ts)
            ref = f"REF-{invoice_id}-{k}" if rng.random() < 0.5 else ""
            out_pay.append(
                f"{invoice_id * 3 + k + 1}\t{_ts(pay_ts)}\t{_ts(pay_ts)}\t{money(amount)}\t"
                f"{rng.choice(METHODS)}\t{ref}\t{pay_day.isoformat()}\t{invoice_id}\t{organization_id}\t"
                f"{organization_id}\n"
            )
            amount_paid += amount
        if amount_paid == total:
            status, paid_at = "paid", _ts(updated)
        elif due >= today:
            status = "sent"
        else:  # past due: half already marked overdue, half waiting for mark_overdue
            status = "overdue" if rng.random() < 0.5 else "sent"
    notes = "Thank you for your business." if rng.random() < 0.2 else ""
    out_inv.append(
        f"{invoice_id}\t{_ts(created)}\t{_ts(updated)}\t{number}\t{status}\t{currency}\t"
        f"{issue.isoformat()}\t{due.isoformat()}\t{notes}\t{money(subtotal)}\t{money(tax_total)}\t"
        f"{money(total)}\t{money(amount_paid)}\t{sent_at}\t{paid_at}\t{customer_id}\t{organization_id}\t0\t"
        f"{organization_id}\t{public_token}\n"
    )


def _batch(args: tuple[Plan, int, int, bool]) -> tuple[int, str, str, str]:
    """The COPY text of invoices [start, end) of every tenant (or of the tiny tenant)."""
    plan, start, end, tiny = args
    today = dt.date.fromisoformat(plan.today)
    rng = random.Random(plan.seed * 1_000_003 + start * 2 + tiny)
    now = dt.datetime.combine(today, dt.time(0), tzinfo=UTC)
    origin = now - dt.timedelta(days=SPAN_DAYS)
    inv: list[str] = []
    lines: list[str] = []
    pay: list[str] = []
    if tiny:
        organization_id = plan.tenants + 1
        step = SPAN_DAYS * 86400 / max(1, plan.tiny_invoices)
        base_id = plan.tenants * plan.invoices
        for i in range(start, end):
            _invoice_rows(
                rng,
                plan=plan,
                today=today,
                organization_id=organization_id,
                invoice_id=base_id + i + 1,
                index=i,
                created=origin + dt.timedelta(seconds=i * step),
                customer_id=plan.tenants * plan.customers + 1 + i % plan.customers,
                out_inv=inv,
                out_lines=lines,
                out_pay=pay,
            )
        return end - start, "".join(inv), "".join(lines), "".join(pay)
    n = plan.tenants
    step = SPAN_DAYS * 86400 / (plan.invoices * n)
    for i in range(start, end):
        for t in range(n):
            _invoice_rows(
                rng,
                plan=plan,
                today=today,
                organization_id=t + 1,
                invoice_id=i * n + t + 1,
                index=i,
                created=origin + dt.timedelta(seconds=(i * n + t) * step),
                customer_id=t * plan.customers + 1 + rng.randrange(plan.customers),
                out_inv=inv,
                out_lines=lines,
                out_pay=pay,
            )
    return (end - start) * n, "".join(inv), "".join(lines), "".join(pay)


class _Progress:
    """tqdm when installed, else a plain one-line bar on stderr."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.done, self.start = total, desc, 0, time.monotonic()
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="inv", unit_scale=True, file=sys.stderr)
        except ImportError:
            self.bar = None

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        frac = self.done / max(1, self.total)
        rate = self.done / max(1e-9, time.monotonic() - self.start)
        sys.stderr.write(
            f"\r{self.desc}: [{'#' * int(frac * 30):<30}] {self.done:,}/{self.total:,} ({rate:,.0f} inv/s)"
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            sys.stderr.write("\n")


INVOICE_COLS = (
    "id, created_at, updated_at, number, status, currency, issue_date, due_date, notes, subtotal, "
    "tax_total, total, amount_paid, sent_at, paid_at, customer_id, organization_id, version, created_by_user_id, "
    "public_token"
)
LINE_COLS = "id, position, description, quantity, unit_price, tax_rate, amount, tax_amount, invoice_id, organization_id"
PAYMENT_COLS = (
    "id, created_at, updated_at, amount, method, reference, paid_at, invoice_id, organization_id, "
    "created_by_user_id"
)


def _copy(cur, table: str, cols: str, text: str) -> None:
    if text:
        cur.copy_expert(f"COPY {table} ({cols}) FROM STDIN", io.StringIO(text))


def seed(conn, plan: Plan) -> dict:
    """Load `plan` into an empty, migrated database through `conn` (psycopg2). Returns timings."""
    t0 = time.monotonic()
    today = dt.date.fromisoformat(plan.today)
    now = dt.datetime.combine(today, dt.time(0), tzinfo=UTC)
    cur = conn.cursor()
    cur.execute("SET session_replication_role = replica")  # FK triggers off; checked afterwards
    cur.execute("SET synchronous_commit = off")
    organizations = plan.tenants + (1 if plan.tiny_invoices else 0)
    # One user per organization, its owner: user, organization and membership ids are all u + 1 (the
    # invoices' and payments' created_by_user is their organization's id). The password is unusable.
    users = "".join(
        f"{u + 1}\t!\t\\N\tf\t{_username(u, plan)}\t\t\t{_username(u, plan)}@bench.example\tf\tt\t{_ts(now)}\n"
        for u in range(organizations)
    )
    _copy(
        cur,
        "users_user",
        "id, password, last_login, is_superuser, username, first_name, last_name, email, is_staff, "
        "is_active, date_joined",
        users,
    )
    _copy(
        cur,
        "users_organization",
        "id, name, legal_name, email, phone, address, tax_id, time_zone, default_currency, invoice_prefix, "
        "payment_terms_days, invoice_footer, reminder_days, created_at, updated_at",
        "".join(
            f"{u + 1}\t{_username(u, plan)}\t\t{_username(u, plan)}@bench.example\t\t\t\t{_time_zone(u, plan)}\t"
            f"USD\tINV-\t30\t\t[-3, 1, 7, 14]\t{_ts(now)}\t{_ts(now)}\n"
            for u in range(organizations)
        ),
    )
    _copy(
        cur,
        "users_membership",
        "id, role, created_at, user_id, organization_id",
        "".join(f"{u + 1}\towner\t{_ts(now)}\t{u + 1}\t{u + 1}\n" for u in range(organizations)),
    )
    customers = []
    for u in range(organizations):
        for c in range(plan.customers):
            name = f"{COMPANIES[c % len(COMPANIES)]} {c + 1:04d}"
            customers.append(
                f"{u * plan.customers + c + 1}\t{_ts(now)}\t{_ts(now)}\t{name}\t"
                f"ap{c + 1}@{COMPANIES[c % len(COMPANIES)].lower()}.example\t\t\t\t{u + 1}\n"
            )
    _copy(
        cur,
        "customers_customer",
        "id, created_at, updated_at, name, email, phone, address, tax_id, organization_id",
        "".join(customers),
    )
    conn.commit()

    per_batch = max(1, BATCH // plan.tenants)
    jobs = [(plan, s, min(s + per_batch, plan.invoices), False) for s in range(0, plan.invoices, per_batch)]
    jobs += [(plan, s, min(s + BATCH, plan.tiny_invoices), True) for s in range(0, plan.tiny_invoices, BATCH)]
    progress = _Progress(plan.total_invoices, "seeding invoices")
    rows = {"invoices": 0, "lines": 0, "payments": 0}
    procs = max(1, (os.cpu_count() or 2) - 1)
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        for count, inv, lines, pay in pool.imap(_batch, jobs):
            _copy(cur, "invoices_invoice", INVOICE_COLS, inv)
            _copy(cur, "invoices_line", LINE_COLS, lines)
            _copy(cur, "payments_payment", PAYMENT_COLS, pay)
            conn.commit()
            rows["invoices"] += count
            rows["lines"] += lines.count("\n")
            rows["payments"] += pay.count("\n")
            progress.update(count)
    progress.close()
    t_copy = time.monotonic() - t0

    # The numbering counters: the next number after the highest issued one.
    cur.execute(
        "INSERT INTO invoices_invoicesequence (organization_id, next_value) "
        "SELECT organization_id, COALESCE(MAX(SUBSTRING(number FROM 5)::bigint), 0) + 1 FROM invoices_invoice "
        "WHERE number LIKE 'INV-%' GROUP BY organization_id"
    )
    for table in SEQUENCED_TABLES:
        cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")
    refill_totals(cur)  # the (disabled) triggers would have kept them
    cur.execute("SET session_replication_role = DEFAULT")
    conn.commit()
    t1 = time.monotonic()
    check_integrity(conn)
    t_check = time.monotonic() - t1
    _bench_tables(conn, plan)
    old = conn.autocommit
    conn.autocommit = True
    t2 = time.monotonic()
    cur.execute("VACUUM (ANALYZE)")
    cur.execute("CHECKPOINT")
    conn.autocommit = old
    t_vacuum = time.monotonic() - t2
    return {
        "rows": rows,
        "copy_s": round(t_copy, 1),
        "integrity_check_s": round(t_check, 1),
        "vacuum_analyze_s": round(t_vacuum, 1),
        "total_s": round(time.monotonic() - t0, 1),
    }


SEQUENCED_TABLES = (
    "users_user",
    "users_organization",
    "users_membership",
    "customers_customer",
    "invoices_invoice",
    "invoices_line",
    "payments_payment",
)


def _username(u: int, plan: Plan) -> str:
    """Organization u's name, and its owner's username."""
    return f"bench_t{u + 1:02d}" if u < plan.tenants else "bench_tiny"


def _time_zone(u: int, plan: Plan) -> str:
    return TIME_ZONES[u % len(TIME_ZONES)] if u < plan.tenants else "UTC"


ORPHAN_CHECKS = {
    "lines without invoice": "SELECT count(*) FROM invoices_line l LEFT JOIN invoices_invoice i ON i.id = l.invoice_id WHERE i.id IS NULL OR i.organization_id <> l.organization_id",
    "payments without invoice": "SELECT count(*) FROM payments_payment p LEFT JOIN invoices_invoice i ON i.id = p.invoice_id WHERE i.id IS NULL OR i.organization_id <> p.organization_id",
    "invoices without customer": "SELECT count(*) FROM invoices_invoice i LEFT JOIN customers_customer c ON c.id = i.customer_id WHERE c.id IS NULL OR c.organization_id <> i.organization_id",
    "customers without organization": "SELECT count(*) FROM customers_customer c LEFT JOIN users_organization o ON o.id = c.organization_id WHERE o.id IS NULL",
    "memberships without user or organization": "SELECT count(*) FROM users_membership m LEFT JOIN users_user u ON u.id = m.user_id LEFT JOIN users_organization o ON o.id = m.organization_id WHERE u.id IS NULL OR o.id IS NULL",
    "invoices made by no member": "SELECT count(*) FROM invoices_invoice i LEFT JOIN users_membership m ON m.user_id = i.created_by_user_id AND m.organization_id = i.organization_id WHERE i.created_by_user_id IS NOT NULL AND m.id IS NULL",
    "payments made by no member": "SELECT count(*) FROM payments_payment p LEFT JOIN users_membership m ON m.user_id = p.created_by_user_id AND m.organization_id = p.organization_id WHERE p.created_by_user_id IS NOT NULL AND m.id IS NULL",
}


def check_integrity(conn) -> None:
    """What the foreign keys would have checked row by row: every reference resolves, same organization."""
    cur = conn.cursor()
    for label, sql in ORPHAN_CHECKS.items():
        cur.execute(sql)
        (n,) = cur.fetchone()
        if n:
            raise RuntimeError(f"seeding broke integrity: {n} {label}")


def _bench_tables(conn, plan: Plan) -> None:
    """Bench-only tables: the seeded status of every invoice (to undo mark_overdue), the id pools the
    load runs draw from, and what was seeded (to reuse the data and to undo a run's writes)."""
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS bench_seed_status, bench_pool, bench_meta")
    cur.execute("CREATE TABLE bench_seed_status AS SELECT id, status FROM invoices_invoice")
    cur.execute("ALTER TABLE bench_seed_status ADD PRIMARY KEY (id)")
    cur.execute("CREATE TABLE bench_pool (kind text, k int, invoice_id bigint, PRIMARY KEY (kind, k))")
    # pay: sent invoices of tenant 1 with room for many 0.01 payments (not in yen, which has no cents), cycled so that no two
    # concurrent requests ever pay the same invoice. detail: any other invoice of tenant 1.
    cur.execute(
        "INSERT INTO bench_pool SELECT 'pay', row_number() OVER (ORDER BY id) - 1, id FROM "
        "(SELECT id FROM invoices_invoice WHERE organization_id = 1 AND status = 'sent' "
        " AND currency <> 'JPY' AND total - amount_paid >= 50 ORDER BY id LIMIT 20000) s"
    )
    cur.execute(
        "INSERT INTO bench_pool SELECT 'detail', row_number() OVER (ORDER BY md5(id::text)) - 1, id FROM "
        "(SELECT id FROM invoices_invoice WHERE organization_id = 1 AND status <> 'sent' "
        " ORDER BY md5(id::text) LIMIT 2000) s"
    )
    cur.execute("CREATE TABLE bench_meta (key text PRIMARY KEY, value jsonb)")
    cur.execute(
        "SELECT (SELECT MAX(id) FROM invoices_invoice), (SELECT MAX(id) FROM invoices_line), "
        "(SELECT MAX(id) FROM payments_payment)"
    )
    max_invoice, max_line, max_payment = cur.fetchone()
    meta = {
        "plan": asdict(plan),
        "max_invoice_id": max_invoice,
        "max_line_id": max_line,
        "max_payment_id": max_payment,
        "seeded_at": dt.datetime.now(UTC).isoformat(timespec="seconds"),
    }
    cur.execute("INSERT INTO bench_meta VALUES ('seed', %s)", [json.dumps(meta)])
    conn.commit()


def refill_totals(cur) -> None:
    """InvoiceTotals computed afresh from the invoices, as its migration fills it (for when the
    triggers were off). Run it in a transaction that holds writers off, or with none running."""
    cur.execute("DELETE FROM invoices_invoicetotals")
    cur.execute(import_module("invoices.migrations.0003_money_per_currency").FILL["postgresql"])


def restore(conn) -> None:
    """Undo what a bench run wrote, back to the seeded state: invoices created, payments recorded,
    statuses moved by mark_overdue and their history, idempotency keys. The run's tokens and API
    keys stay until the next run makes its own (bench/capture.py): the load runs between restores
    use them."""
    cur = conn.cursor()
    cur.execute("SELECT value FROM bench_meta WHERE key = 'seed'")
    meta = cur.fetchone()[0]
    cur.execute(
        "UPDATE invoices_invoice i SET amount_paid = i.amount_paid - p.paid FROM "
        "(SELECT invoice_id, SUM(amount) AS paid FROM payments_payment WHERE id > %s GROUP BY invoice_id) p "
        "WHERE i.id = p.invoice_id",
        [meta["max_payment_id"]],
    )
    cur.execute("DELETE FROM payments_payment WHERE id > %s", [meta["max_payment_id"]])
    cur.execute("DELETE FROM invoices_line WHERE invoice_id > %s", [meta["max_invoice_id"]])
    cur.execute("DELETE FROM invoices_invoice WHERE id > %s", [meta["max_invoice_id"]])
    cur.execute(
        "UPDATE invoices_invoice i SET status = s.status FROM bench_seed_status s "
        "WHERE i.id = s.id AND i.status <> s.status"
    )
    cur.execute("DELETE FROM billing_idempotencykey")  # billing.models.IdempotencyKey
    # The seed records no status change: every row is a run's (mark_overdue, a payment in full).
    cur.execute("DELETE FROM invoices_invoicestatuschange")
    conn.commit()


def seeded_plan(conn) -> dict | None:
    cur = conn.cursor()
    cur.execute("SELECT to_regclass('bench_meta')")
    if cur.fetchone()[0] is None:
        return None
    cur.execute("SELECT value FROM bench_meta WHERE key = 'seed'")
    row = cur.fetchone()
    return row[0] if row else None
