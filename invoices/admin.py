from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from billing.admin import ServiceWriteAdmin
from invoices.models import Invoice
from invoices.services import (
    MarkOverdueIncomplete,
    invoice_create,
    invoice_delete,
    invoice_mark_overdue,
    invoice_update,
)


@admin.register(Invoice)
class InvoiceAdmin(ServiceWriteAdmin):
    """Operators change what an invoice's state allows (a draft everything but its lines, an issued
    one its notes); `invoice_update` decides on the locked row, so a change the state no longer
    allows (the draft was sent while the form was open) is refused, never written."""

    list_display = ["__str__", "customer", "owner", "status", "currency", "total", "amount_paid", "due_date"]
    list_filter = ["status", "currency", "issue_date", "due_date"]
    search_fields = ["number", "customer__name", "owner__username"]
    list_select_related = ["customer", "owner"]
    date_hierarchy = "issue_date"
    raw_id_fields = ["owner", "customer"]
    actions = ["mark_overdue_now"]
    money_and_state = [
        "status",
        "subtotal",
        "tax_total",
        "total",
        "amount_paid",
        "sent_at",
        "paid_at",
        "created_at",
        "updated_at",
        "lines_table",
    ]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return self.money_and_state
        editable = obj.editable_fields() - {"lines"}
        frozen = [f.name for f in Invoice._meta.concrete_fields if f.name not in editable and f.editable]
        return [*frozen, "lines_table"]

    @admin.display(description="lines")
    def lines_table(self, obj):
        # Shown, never a form: lines are written through the API, which replaces them whole and
        # recomputes the totals in the same transaction (an inline formset would post line ids a
        # concurrent replacement has already deleted).
        if obj is None or obj.pk is None:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (ln.description, ln.quantity, ln.unit_price, ln.tax_rate, ln.amount, ln.tax_amount)
                for ln in obj.lines.order_by("position")
            ),
        )
        header = "<tr><th>description</th><th>quantity</th><th>unit price</th><th>tax %</th><th>amount</th><th>tax</th></tr>"
        return format_html("<table>{}{}</table>", mark_safe(header), rows)  # noqa: S308 - a constant

    def has_delete_permission(self, request, obj=None):
        return obj is None or obj.can_delete()

    @staticmethod
    def _service_fields(fields: dict) -> dict:
        fields = dict(fields)
        if "customer" in fields:
            fields["customer_id"] = fields.pop("customer").pk
        return fields

    def create_object(self, owner, fields):
        return invoice_create(owner=owner, **self._service_fields(fields))

    def update_object(self, obj, changed):
        invoice_update(owner=obj.owner, invoice_id=obj.pk, **self._service_fields(changed))

    def delete_object(self, obj):
        invoice_delete(owner=obj.owner, invoice_id=obj.pk)

    @admin.action(description="Mark overdue now (all owners, as the cron job does)")
    def mark_overdue_now(self, request, queryset):
        try:
            moved = invoice_mark_overdue()
        except MarkOverdueIncomplete as incomplete:
            self.message_user(request, incomplete.message, messages.ERROR)
            return
        self.message_user(request, f"{moved} invoices marked overdue.", messages.SUCCESS)
