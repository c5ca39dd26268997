"""Recompute the books from their parts and report every place they disagree.

For every invoice: each line's amount and tax from quantity, unit price and rate; the invoice's
totals from its lines; `amount_paid` from its payments; and whether its status is the one those
figures imply. Streams invoices, lines and payments in invoice order, so memory stays flat however
large the tables are. Then InvoiceTotals, row by row, against a fresh aggregate of the invoices.
"""

from collections.abc import Iterator
from decimal import Decimal
from itertools import groupby

from django.db.models import Count, F, Sum

from billing import money
from billing.money import ZERO
from invoices.models import Invoice, InvoiceTotals, Line
from invoices.selectors import thousandths
from payments.models import Payment

S = Invoice.Status
CHUNK = 2000


def _grouped(rows: Iterator[dict]) -> Iterator[tuple[int, list[dict]]]:
    for invoice_id, group in groupby(rows, key=lambda row: row["invoice_id"]):
        yield invoice_id, list(group)


def ledger_mismatches(*, organization_id: int | None = None) -> Iterator[str]:
    """Yield one line of text per disagreement; none means the ledger is consistent."""
    invoices = Invoice.objects.order_by("pk")
    lines = Line.objects.order_by("invoice_id", "position")
    payments = Payment.objects.order_by("invoice_id", "pk")
    if organization_id is not None:
        invoices, lines, payments = (
            qs.filter(organization_id=organization_id) for qs in (invoices, lines, payments)
        )

    line_groups = _grouped(
        lines.values(
            "invoice_id", "id", "quantity", "unit_price", "tax_rate", "amount", "tax_amount"
        ).iterator(CHUNK)
    )
    payment_groups = _grouped(payments.values("invoice_id", "id", "amount").iterator(CHUNK))
    next_lines, next_payments = next(line_groups, None), next(payment_groups, None)

    fields = (
        "pk",
        "number",
        "status",
        "currency",
        "subtotal",
        "tax_total",
        "total",
        "amount_paid",
        "paid_at",
    )
    for invoice in invoices.values(*fields).iterator(CHUNK):
        pk = invoice["pk"]
        own_lines: list[dict] = []
        own_payments: list[dict] = []
        while next_lines is not None and next_lines[0] <= pk:
            if next_lines[0] == pk:
                own_lines = next_lines[1]
            else:
                yield f"line(s) of invoice {next_lines[0]} have no invoice"
            next_lines = next(line_groups, None)
        while next_payments is not None and next_payments[0] <= pk:
            if next_payments[0] == pk:
                own_payments = next_payments[1]
            else:
                yield f"payment(s) of invoice {next_payments[0]} have no invoice"
            next_payments = next(payment_groups, None)
        yield from _invoice_mismatches(invoice, own_lines, own_payments)
    yield from organization_mismatches(organization_id=organization_id)
    yield from totals_mismatches(organization_id=organization_id)


def organization_mismatches(*, organization_id: int | None = None) -> Iterator[str]:
    """Rows whose references belong to another organization (the database refuses them; an old database,
    or one whose constraints were dropped, could still hold some)."""
    checks = [
        (
            Invoice.objects.exclude(customer__organization_id=F("organization_id")),
            "invoice {} ({}): its customer {} belongs to another organization",
            ("pk", "number", "customer_id"),
        ),
        (
            Line.objects.exclude(invoice__organization_id=F("organization_id")),
            "line {} of invoice {}: the invoice belongs to another organization",
            ("pk", "invoice_id"),
        ),
        (
            Payment.objects.exclude(invoice__organization_id=F("organization_id")),
            "payment {} of invoice {}: the invoice belongs to another organization",
            ("pk", "invoice_id"),
        ),
    ]
    for queryset, message, fields in checks:
        if organization_id is not None:
            queryset = queryset.filter(organization_id=organization_id)
        for row in queryset.order_by("pk").values_list(*fields).iterator(CHUNK):
            yield message.format(*row)


def totals_mismatches(*, organization_id: int | None = None) -> Iterator[str]:
    """Each InvoiceTotals row against the count and sums of the invoices it stands for."""
    invoices = Invoice.objects.order_by()
    rows = InvoiceTotals.objects.all()
    if organization_id is not None:
        invoices, rows = (
            invoices.filter(organization_id=organization_id),
            rows.filter(organization_id=organization_id),
        )
    expected = {
        (organization, currency, status, shard): (n, total, paid)
        for organization, currency, status, shard, n, total, paid in invoices.annotate(
            shard=F("id") % InvoiceTotals.SHARDS
        )
        .values_list("organization_id", "currency", "status", "shard")
        .annotate(n=Count("*"), total=Sum(thousandths("total")), paid=Sum(thousandths("amount_paid")))
        .iterator(CHUNK)
    }
    expected = {
        key: (n, _minor(total, key[1]), _minor(paid, key[1])) for key, (n, total, paid) in expected.items()
    }
    kept = {
        (organization, currency, status, shard): (n, int(total), int(paid))
        for organization, currency, status, shard, n, total, paid in rows.values_list(
            "organization_id", "currency", "status", "shard", "count", "total_minor", "paid_minor"
        ).iterator(CHUNK)
    }
    for key in sorted(expected.keys() | kept.keys()):
        want, have = expected.get(key, (0, 0, 0)), kept.get(key, (0, 0, 0))
        if want != have:
            yield (
                "invoice totals of organization {} in {}, {}, shard {}: kept (count, total, paid in minor units) {}, "
                "the invoices give {}".format(*key, have, want)
            )


def _minor(thousandths_sum, currency: str) -> int:
    """A sum of thousandths in `currency`'s minor units (exact: every amount has at most its places;
    a remainder is reported as the fraction it is, so that it cannot match a kept integer)."""
    value = Decimal(int(thousandths_sum or 0)).scaleb(-3)
    minor = value.scaleb(money.places(currency))
    return int(minor) if minor == minor.to_integral_value() else minor


def _invoice_mismatches(invoice: dict, lines: list[dict], payments: list[dict]) -> Iterator[str]:
    label = f"invoice {invoice['pk']} ({invoice['number'] or 'draft'})"
    currency = invoice["currency"]

    def shown(amount: Decimal) -> str:
        return money.format_amount(amount, currency)

    for name in ("subtotal", "tax_total", "total", "amount_paid"):
        if not money.fits(invoice[name], currency):
            yield f"{label}: {name} {invoice[name]:f} has more places than {currency}'s {money.places(currency)}"
    subtotal = tax_total = ZERO
    for line in lines:
        amount = money.quantize(line["quantity"] * line["unit_price"], currency)
        tax = money.quantize(amount * line["tax_rate"] / 100, currency)
        if (line["amount"], line["tax_amount"]) != (amount, tax):
            yield (
                f"{label}: line {line['id']} stores {shown(line['amount'])} + {shown(line['tax_amount'])} tax, "
                f"its figures give {shown(amount)} + {shown(tax)}"
            )
        subtotal += amount
        tax_total += tax
    expected = {"subtotal": subtotal, "tax_total": tax_total, "total": subtotal + tax_total}
    for name, value in expected.items():
        if invoice[name] != value:
            yield f"{label}: {name} is {shown(invoice[name])}, its lines give {shown(value)}"

    for payment in payments:
        if not money.fits(payment["amount"], currency):
            yield f"{label}: payment {payment['id']} of {payment['amount']:f} has more places than {currency}'s"
    paid = sum((Decimal(p["amount"]) for p in payments), ZERO)
    if invoice["amount_paid"] != paid:
        yield f"{label}: amount_paid is {shown(invoice['amount_paid'])}, its payments sum to {shown(paid)}"

    status, total = invoice["status"], invoice["total"]
    if status in (S.DRAFT, S.VOID) and payments:
        yield f"{label}: a {status} invoice has {len(payments)} payment(s)"
    if status == S.PAID and (paid != total or invoice["paid_at"] is None):
        yield f"{label}: status is paid but payments of {shown(paid)} do not settle the total of {shown(total)}"
    if status in (S.SENT, S.OVERDUE) and total > 0 and paid == total:
        yield f"{label}: payments settle the total of {shown(total)} but the status is {status}"
    if status != S.DRAFT and not invoice["number"]:
        yield f"{label}: a {status} invoice has no number"
