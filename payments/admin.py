"""Payments are the ledger: operators read them, never write them (`payment_record` is the one writer).

The invoice's page shows its payments too. Invoices never import payments (the apps are layered),
so the inline is added from here, the app above: the invoice admin is registered again as a
subclass that carries it.
"""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from billing.admin import ReadOnlyAdmin, ReadOnlyInline
from billing.money import format_amount
from invoices.admin import InvoiceAdmin
from invoices.models import Invoice
from payments.models import Payment


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "invoice_link",
        "organization",
        "amount_shown",
        "currency",
        "method",
        "reference",
        "paid_at",
        "created_at",
    ]
    list_filter = ["organization", "method", "paid_at"]
    search_fields = ["reference", "invoice__number", "organization__name"]
    list_select_related = ["invoice", "organization"]
    date_hierarchy = "paid_at"
    # The amount with its currency's places ("1250" JPY, "12.50" USD), and the member or API key
    # that recorded it (`Payment.created_by`), "-" for neither.
    exclude = ["amount"]
    readonly_fields = ["amount_shown", "created_by"]

    def get_queryset(self, request):
        return (
            super().get_queryset(request).select_related("invoice", "created_by_user", "created_by_api_key")
        )

    @admin.display(description="invoice", ordering="invoice__number")
    def invoice_link(self, payment):
        url = reverse("admin:invoices_invoice_change", args=[payment.invoice_id])
        return format_html('<a href="{}">{}</a>', url, payment.invoice)

    @admin.display(description="currency", ordering="invoice__currency")
    def currency(self, payment):
        return payment.invoice.currency

    @admin.display(description="amount", ordering="amount")
    def amount_shown(self, payment):
        return format_amount(payment.amount, payment.invoice.currency)


class PaymentInline(ReadOnlyInline):
    """The invoice's payments, oldest first, each linked to its own (read-only) page."""

    model = Payment
    fields = ["paid_at", "amount_shown", "method", "reference", "created_by", "created_at"]
    readonly_fields = fields
    ordering = ["paid_at", "id"]
    show_change_link = True

    def get_queryset(self, request):
        return (
            super().get_queryset(request).select_related("invoice", "created_by_user", "created_by_api_key")
        )

    @admin.display(description="amount")
    def amount_shown(self, payment):
        return format_amount(payment.amount, payment.invoice.currency)


class InvoiceWithPaymentsAdmin(InvoiceAdmin):
    inlines = [PaymentInline, *InvoiceAdmin.inlines]


admin.site.unregister(Invoice)
admin.site.register(Invoice, InvoiceWithPaymentsAdmin)
