"""Reads over invoices that are more than a queryset."""

from django.db.models import Count, DecimalField, QuerySet, Sum

from billing.money import ZERO
from invoices.models import Invoice

S = Invoice.Status
# A sum of many 14-digit amounts can outgrow 14 digits; the aggregate's own type is wider.
SUM_FIELD = DecimalField(max_digits=20, decimal_places=2)
INVOICED = frozenset({S.SENT, S.OVERDUE, S.PAID})
OUTSTANDING = frozenset({S.SENT, S.OVERDUE})


def invoice_summary(*, invoices: QuerySet[Invoice]) -> dict:
    """Counts by status and money by currency over `invoices`, in one aggregate query.

    invoiced = total of sent, overdue and paid; collected = amount paid; outstanding = balance due
    of sent and overdue; overdue = balance due of overdue. Currencies are never added together.

    The database groups by (currency, status) and sums two columns; the few groups (at most five a
    currency) are then added up here, exactly, in Decimal. That is a third of the work of one row a
    currency with a filtered sum per figure (each row feeds nine aggregates there, three here), and
    with the covering index invoice_owner_summary (owner, currency, status; total, amount_paid) it
    is an index-only scan read in group order, whose cost follows the tenant's size, not the table's.
    """
    groups = (
        invoices.order_by()
        .values("currency", "status")
        .annotate(
            n=Count("*"),
            total=Sum("total", output_field=SUM_FIELD),
            paid=Sum("amount_paid", output_field=SUM_FIELD),
        )
        .order_by("currency", "status")
    )
    by_status = dict.fromkeys(S.values, 0)
    totals: dict[str, dict] = {}
    for group in groups:
        status, total, paid = group["status"], group["total"], group["paid"]
        by_status[status] += group["n"]
        money = totals.setdefault(
            group["currency"],
            {
                "currency": group["currency"],
                **dict.fromkeys(("invoiced", "collected", "outstanding", "overdue"), ZERO),
            },
        )
        money["collected"] += paid
        if status in INVOICED:
            money["invoiced"] += total
        if status in OUTSTANDING:
            money["outstanding"] += total - paid
        if status == S.OVERDUE:
            money["overdue"] += total - paid
    return {"count": sum(by_status.values()), "by_status": by_status, "totals": list(totals.values())}
