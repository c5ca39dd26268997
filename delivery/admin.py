"""The admin's view of delivery: each invoice's PDF versions and emails on its page, every email in a
list, and a retry for a failed one. Nothing here edits an outbox row by hand: a retry goes through
`delivery.services.email_retry` (queued again with a new job). An edit of an invoice goes through
`invoice_update_and_render`, so a changed note renders a new PDF version from the admin too."""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from billing.admin import ReadOnlyAdmin, ReadOnlyInline
from delivery.models import Document, OutboundEmail
from delivery.services import email_retry, invoice_update_and_render
from invoices.models import Invoice
from payments.admin import InvoiceWithPaymentsAdmin


class DocumentInline(ReadOnlyInline):
    model = Document
    fields = [
        "version",
        "status",
        "reason",
        "download",
        "sha256",
        "size",
        "rendered_at",
        "attempts",
        "last_error",
    ]
    readonly_fields = fields
    ordering = ["-version"]

    @admin.display(description="file")
    def download(self, document):
        if not document.file:
            return "-"
        return format_html('<a href="{}">{}</a>', document.file.url, document.file.name.rpartition("/")[2])


class EmailInline(ReadOnlyInline):
    model = OutboundEmail
    fields = [
        "created_at",
        "kind",
        "reminder_step",
        "to",
        "subject",
        "status",
        "attempts",
        "sent_at",
        "last_error",
    ]
    readonly_fields = fields
    ordering = ["-created_at"]
    show_change_link = True


class InvoiceWithDeliveryAdmin(InvoiceWithPaymentsAdmin):
    inlines = [*InvoiceWithPaymentsAdmin.inlines, DocumentInline, EmailInline]

    def update_object(self, obj, changed, *, actor):
        invoice_update_and_render(
            organization=obj.organization, invoice_id=obj.pk, actor=actor, **self._service_fields(changed)
        )


admin.site.unregister(Invoice)
admin.site.register(Invoice, InvoiceWithDeliveryAdmin)


@admin.register(OutboundEmail)
class OutboundEmailAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "invoice_link",
        "organization",
        "kind",
        "to",
        "subject",
        "status",
        "attempts",
        "sent_at",
        "created_at",
    ]
    list_filter = ["status", "kind", "organization"]
    search_fields = ["subject", "message_id", "invoice__number"]
    list_select_related = ["invoice", "organization"]
    actions = ["retry_failed"]

    @admin.display(description="invoice", ordering="invoice__number")
    def invoice_link(self, email):
        return format_html(
            '<a href="{}">{}</a>',
            reverse("admin:invoices_invoice_change", args=[email.invoice_id]),
            email.invoice,
        )

    @admin.action(description="Retry the selected failed emails")
    def retry_failed(self, request, queryset):
        retried = sum(
            email_retry(pk)
            for pk in queryset.filter(status=OutboundEmail.Status.FAILED).values_list("pk", flat=True)
        )
        skipped = queryset.count() - retried
        self.message_user(
            request,
            f"{retried} email(s) queued again."
            + (f" {skipped} not failed: left as they are." if skipped else ""),
            messages.SUCCESS if retried else messages.INFO,
        )


@admin.register(Document)
class DocumentAdmin(ReadOnlyAdmin):
    list_display = ["id", "invoice", "organization", "version", "status", "reason", "size", "rendered_at"]
    list_filter = ["status", "organization"]
    search_fields = ["invoice__number", "sha256"]
    list_select_related = ["invoice", "organization"]
