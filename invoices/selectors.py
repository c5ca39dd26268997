"""Reads over invoices that are more than a queryset."""

from django.db.models import Count, DecimalField, F, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from billing.money import ZERO
from invoices.models import Invoice

S = Invoice.Status
# A sum of many 14-digit amounts can outgrow 14 digits; the aggregate's own type is wider.
SUM_FIELD = DecimalField(max_digits=20, decimal_places=2)


def _sum(expression, condition: Q | None = None):
    return Coalesce(Sum(expression, filter=condition, output_field=SUM_FIELD), ZERO, output_field=SUM_FIELD)


def invoice_summary(*, invoices: QuerySet[Invoice]) -> dict:
    """Counts by status and money by currency over `invoices`, in one aggregate query.

    invoiced = total of sent, overdue and paid; collected = amount paid; outstanding = balance due
    of sent and overdue; overdue = balance due of overdue. Currencies are never added together.
    """
    balance = F("total") - F("amount_paid")
    rows = (
        invoices.order_by()
        .values("currency")
        .annotate(
            # Counting owner_id (never null), not id: the aggregate then reads only columns of the
            # covering index invoice_owner_summary, an index-only scan whose cost follows the
            # tenant's size, not the table's.
            **{f"n_{status}": Count("owner", filter=Q(status=status)) for status in S.values},
            invoiced=_sum("total", Q(status__in=[S.SENT, S.OVERDUE, S.PAID])),
            collected=_sum("amount_paid"),
            outstanding=_sum(balance, Q(status__in=[S.SENT, S.OVERDUE])),
            overdue=_sum(balance, Q(status=S.OVERDUE)),
        )
        .order_by("currency")
    )
    by_status = dict.fromkeys(S.values, 0)
    totals = []
    for row in rows:
        for status in S.values:
            by_status[status] += row[f"n_{status}"]
        totals.append(
            {
                "currency": row["currency"],
                **{key: row[key] for key in ("invoiced", "collected", "outstanding", "overdue")},
            }
        )
    return {"count": sum(by_status.values()), "by_status": by_status, "totals": totals}
