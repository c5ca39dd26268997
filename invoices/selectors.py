"""Reads over invoices that are more than a queryset."""

from collections.abc import Iterable, Sequence

from django.db import connections, router
from django.db.models import BigIntegerField, Count, F, Prefetch, QuerySet, Sum
from django.db.models.functions import Cast, Round

from billing import db, money
from billing.db import CompiledQuery
from invoices.models import Invoice, InvoiceTotals

S = Invoice.Status
# The relations behind `created_by` (a member or an API key), joined wherever an invoice or payment
# is read for its representation, so that showing who made it costs no query.
CREATOR = ("created_by_user", "created_by_api_key")
INVOICED = frozenset({S.SENT, S.OVERDUE, S.PAID})
OUTSTANDING = frozenset({S.SENT, S.OVERDUE})


def invoice_summary(*, invoices: QuerySet[Invoice]) -> dict:
    """Counts by status and money by currency over `invoices` (any filtered set), in one aggregate query.

    invoiced = total of sent, overdue and paid; collected = amount paid; outstanding = balance due
    of sent and overdue; overdue = balance due of overdue. Currencies are never added together.

    The database groups by (currency, status) and sums two columns, as integers (thousandths); the
    few groups (at most five a currency) are then added up here, exactly, in minor units. That is a third of the work of one row a
    currency with a filtered sum per figure (each row feeds nine aggregates there, three here), and
    with the covering index invoice_org_summary (organization, currency, status; total, amount_paid) it
    is an index-only scan read in group order, whose cost follows the tenant's size, not the table's.
    """
    groups = (
        invoices.order_by()
        .values_list("currency", "status")
        .annotate(n=Count("*"), total=Sum(thousandths("total")), paid=Sum(thousandths("amount_paid")))
        .order_by("currency", "status")
    )
    return _summary(
        (currency, status, n, _from_thousandths(total, currency), _from_thousandths(paid, currency))
        for currency, status, n, total, paid in groups
    )


def thousandths(name: str) -> Cast:
    """An amount column in thousandths of the major unit (the finest minor unit there is), as an
    integer per row: summed exactly on every database, where SQLite would add decimals in floating
    point."""
    return Cast(Round(F(name) * 1000), BigIntegerField())


def _from_thousandths(value, currency: str) -> int:
    """A sum of thousandths in `currency`'s minor units (exact: each amount has at most its places)."""
    return int(value or 0) // 10 ** (3 - money.places(currency))


# The two reads of InvoiceTotals are fixed statements with one parameter, so they are written once
# as SQL rather than built and compiled by the ORM on every request (for statements this small,
# building and compiling them costs more than PostgreSQL takes to run them). Plain SQL that
# PostgreSQL and SQLite both run;
# tests/test_invoice_totals.py compares their results with the aggregate over the invoices.
# Kept (billing.db.keep): prepared once per connection on PostgreSQL (the summary's parse and plan
# were a fifth of its time there: pgbench 0.237 ms a run as text, 0.186 ms prepared).
_SUMMARY_SQL = db.keep(
    "SELECT currency, status, SUM(count), SUM(total_minor), SUM(paid_minor) FROM invoices_invoicetotals "
    "WHERE organization_id = %s GROUP BY currency, status HAVING SUM(count) > 0 ORDER BY currency, status"
)
_COUNT_SQL = db.keep("SELECT COALESCE(SUM(count), 0) FROM invoices_invoicetotals WHERE organization_id = %s")


def organization_summary(*, organization_id: int) -> dict:
    """`invoice_summary` of all of an organization's invoices, from InvoiceTotals: the same figures, from a
    few rows a currency that the database keeps, whatever the organization's size."""
    with connections[router.db_for_read(InvoiceTotals)].cursor() as cursor:
        cursor.execute(_SUMMARY_SQL, [organization_id])
        groups = cursor.fetchall()
    return _summary(
        (currency, status, int(n), int(total), int(paid)) for currency, status, n, total, paid in groups
    )


def organization_invoice_count(*, organization_id: int) -> int:
    """How many invoices an organization has, from InvoiceTotals (the unfiltered list's `count`)."""
    with connections[router.db_for_read(InvoiceTotals)].cursor() as cursor:
        cursor.execute(_COUNT_SQL, [organization_id])
        return int(cursor.fetchone()[0])


def _summary(groups: Iterable[tuple[str, str, int, int, int]]) -> dict:
    """Add up (currency, status, count, total, amount paid) groups, sorted by currency, the money in
    each currency's minor units (integers: exact), then written as amounts with its places."""
    by_status = dict.fromkeys(S.values, 0)
    totals: dict[str, dict] = {}
    for currency, status, n, total, paid in groups:
        by_status[status] += n
        minor = totals.setdefault(
            currency, dict.fromkeys(("invoiced", "collected", "outstanding", "overdue"), 0)
        )
        minor["collected"] += paid
        if status in INVOICED:
            minor["invoiced"] += total
        if status in OUTSTANDING:
            minor["outstanding"] += total - paid
        if status == S.OVERDUE:
            minor["overdue"] += total - paid
    return {
        "count": sum(by_status.values()),
        "by_status": by_status,
        "totals": [
            {
                "currency": currency,
                **{name: money.from_minor(value, currency) for name, value in minor.items()},
            }
            for currency, minor in totals.items()
        ],
    }


def with_lines_and_payments(invoice: Invoice, names: Sequence[str] = ("lines", "payments")) -> Invoice:
    """`invoice` with its lines and payments (or only those of `names`) loaded, reading only those a
    write did not already fill in (`invoices.services`): the one read that follows a write, for its
    response, the detail's and the hosted page's. Each is read as `detail_prefetch` reads it, with one
    compiled statement (the rows the same, tests/test_compiled_queries.py), each row's invoice set to
    this one as a prefetch sets it."""
    cache = invoice.__dict__.setdefault("_prefetched_objects_cache", {})
    for name in names:
        if name not in cache:
            rows = _RELATED[name].fetch(invoice_id=invoice.pk)
            field = Invoice._meta.get_field(name).field  # the row's reference to its invoice
            for row in rows:
                field.set_cached_value(row, invoice)
            # As prefetch_related leaves it: the relation's queryset with these rows as its result,
            # so that `invoice.lines.all()` is them and `invoice.lines.filter(...)` still a query.
            related = getattr(invoice, name).get_queryset()
            related._result_cache, related._prefetch_done = rows, True
            cache[name] = related
    return invoice


def _related_of(name: str):
    def build(invoice_id: int):
        prefetch = detail_prefetch(name)
        return prefetch.queryset.filter(invoice_id=invoice_id)

    return build


# Read for every detail and after every write: compiled once (billing.db.CompiledQuery).
_RELATED = {name: CompiledQuery(_related_of(name), invoice_id=int) for name in ("lines", "payments")}


def invoices_shown() -> QuerySet[Invoice]:
    """Invoices as the API shows them: the customer's name and the creator joined, never read per
    row (the view's queryset, and the compiled list and detail reads)."""
    return Invoice.objects.select_related("customer", *CREATOR)


def _list_of(organization_id: int):
    """The list's rows, as the view's queryset reads them when no filter is named (its order)."""
    return invoices_shown().filter(organization_id=organization_id)


_LIST = CompiledQuery(_list_of, organization_id=int)


def organization_invoices_page(*, organization_id: int, offset: int, limit: int) -> list[Invoice]:
    """A page of the organization's invoices, newest first, with their customers and creators: one
    compiled statement (the ORM's own for that slice, tests/test_compiled_queries.py)."""
    return _LIST.page(organization_id=organization_id, offset=offset, limit=limit)


def _detail_of(organization_id: int, invoice_id: int):
    return invoices_shown().filter(organization_id=organization_id, pk=invoice_id)


_DETAIL = CompiledQuery(_detail_of, organization_id=int, invoice_id=int)


def invoice_detail(*, organization_id: int, invoice_id: int) -> Invoice:
    """The organization's invoice as its detail shows it: its customer and creator joined, its lines
    and payments loaded. Another organization's or no invoice: `Invoice.DoesNotExist`."""
    return with_lines_and_payments(_DETAIL.get(organization_id=organization_id, invoice_id=invoice_id))


def detail_prefetch(name: str) -> Prefetch:
    """How the detail reads an invoice's lines (by position) or payments (as received).

    The payments are the payments app's rows, reached through the reverse relation: this app sits
    below payments and does not import it (DESIGN.md, imports go one way)."""
    related = Invoice._meta.get_field(name).related_model
    if name == "lines":
        return Prefetch(name, queryset=related.objects.order_by("position"))
    return Prefetch(name, queryset=related.objects.select_related(*CREATOR).order_by("paid_at", "id"))
