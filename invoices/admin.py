from django import forms
from django.contrib import admin, messages
from django.db.models import F
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from billing.admin import ReadOnlyAdmin, ReadOnlyInline, ServiceWriteAdmin, events_link
from billing.exceptions import NotEditable
from billing.money import format_amount, format_price
from invoices.models import MONEY_COLUMNS, Invoice, InvoiceStatusChange
from invoices.services import (
    MarkOverdueIncomplete,
    invoice_create,
    invoice_delete,
    invoice_mark_overdue,
    invoice_update,
)


class CurrencyInput(forms.TextInput):
    """A three-letter text input whose datalist holds the currency codes: the browser offers the
    codes that match what is typed ("eu" -> EUR), where a select of ~180 codes has to be scrolled."""

    choices = ()  # set by the choice field, as for a Select

    def render(self, name, value, attrs=None, renderer=None):
        attrs = dict(attrs or {})
        list_id = f"{attrs.get('id') or name}_codes"
        attrs.update(list=list_id, size=4, maxlength=3, autocomplete="off")
        options = format_html_join("", '<option value="{}"></option>', ((code,) for code, _ in self.choices))
        return format_html(
            '{}<datalist id="{}">{}</datalist>',
            super().render(name, value, attrs, renderer),
            list_id,
            options,
        )


class CurrencyField(forms.TypedChoiceField):
    """Still a choice field (a code outside the ISO 4217 list is a field error), typed in any case."""

    def to_python(self, value):
        return super().to_python(value).strip().upper()


class InvoiceStatusChangeInline(ReadOnlyInline):
    """The invoice's history, as `Invoice.save()` and `mark_overdue` recorded it; never a form."""

    model = InvoiceStatusChange
    verbose_name = "status change"
    verbose_name_plural = "status history"
    fields = ["changed_at", "from_status", "to_status", "by"]
    readonly_fields = fields
    ordering = ["changed_at", "id"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("actor_user", "actor_api_key")

    @admin.display(description="by")
    def by(self, change):
        return change.actor or "system"


@admin.register(InvoiceStatusChange)
class InvoiceStatusChangeAdmin(ReadOnlyAdmin):
    """Every organization's status changes in one list (each invoice's page shows its own)."""

    list_display = ["changed_at", "invoice", "organization", "from_status", "to_status", "by"]
    list_filter = ["organization", "to_status", "changed_at"]
    search_fields = ["invoice__number", "organization__name"]
    list_select_related = ["invoice", "organization", "actor_user", "actor_api_key"]
    date_hierarchy = "changed_at"
    ordering = ["-changed_at", "-id"]

    @admin.display(description="by")
    def by(self, change):
        return change.actor or "system"


MONEY_SHOWN = {name: f"{name}_shown" for name in MONEY_COLUMNS}


def _shown(name: str):
    """An admin column showing the money field `name` with its currency's places."""

    @admin.display(description=name.replace("_", " "), ordering=name)
    def shown(self, obj):
        return format_amount(getattr(obj, name), obj.currency)

    return shown


@admin.register(Invoice)
class InvoiceAdmin(ServiceWriteAdmin):
    """Operators change what an invoice's state allows (a draft everything but its lines, an issued
    one its notes); `invoice_update` decides on the locked row, so a change the state no longer
    allows (the draft was sent while the form was open) is refused, never written. A paid or void
    invoice is only shown: its page has no save buttons. The page shows the balance due and the
    status history (and, from payments.admin, the payments)."""

    list_display = [
        "__str__",
        "customer",
        "organization",
        "status",
        "issue_date",
        "due_date",
        "currency",
        "total_shown",
        "amount_paid_shown",
        "balance_due",
    ]
    list_filter = ["organization", "status", "currency", "issue_date", "due_date"]
    search_fields = ["number", "customer__name", "organization__name"]
    list_select_related = ["customer", "organization"]
    date_hierarchy = "issue_date"
    raw_id_fields = ["organization", "customer"]
    actions = ["mark_overdue_now"]
    # The payments' inline is added by payments.admin (invoices never import payments).
    inlines = [InvoiceStatusChangeInline]
    # The money columns are shown with their currency's places ("1250" JPY, "12.50" USD), never
    # edited (the lines and the payments make them).
    exclude = list(MONEY_SHOWN)
    money_and_state = [
        "status",
        *MONEY_SHOWN.values(),
        "balance_due",
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
        frozen = [
            MONEY_SHOWN.get(f.name, f.name)
            for f in Invoice._meta.concrete_fields
            if f.name not in editable and f.editable
        ]
        at = frozen.index(MONEY_SHOWN["amount_paid"]) + 1
        # created_by: the member or API key that made it (`Invoice.created_by`), "-" for neither.
        return [*frozen[:at], "balance_due", *frozen[at:], "created_by", "lines_table", "events"]

    @admin.display(description="events")
    def events(self, obj):
        return events_link(obj, "invoice")

    def get_inline_instances(self, request, obj=None):
        # A new invoice has no history and no payments (and its add form posts no inline data).
        return super().get_inline_instances(request, obj) if obj is not None else []

    def formfield_for_choice_field(self, db_field, request, **kwargs):
        if db_field.name == "currency":
            kwargs.update(
                choices_form_class=CurrencyField,
                widget=CurrencyInput,
                help_text="An ISO 4217 code such as USD, EUR or JPY: type it, or pick it from the list.",
            )
        return super().formfield_for_choice_field(db_field, request, **kwargs)

    @admin.display(description="balance due", ordering=F("total") - F("amount_paid"))
    def balance_due(self, obj):
        return format_amount(obj.balance_due, obj.currency)

    subtotal_shown = _shown("subtotal")
    tax_total_shown = _shown("tax_total")
    total_shown = _shown("total")
    amount_paid_shown = _shown("amount_paid")

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None and not obj.can_edit():
            # A paid or void invoice is shown, never offered for saving (the page keeps its inlines
            # and "Close"); a POST to it anyway is refused in save_model.
            context.update(show_save=False, show_save_and_continue=False, show_save_and_add_another=False)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def save_model(self, request, obj, form, change):
        if change and not obj.can_edit():
            raise NotEditable(f"A {obj.status} invoice cannot be changed.")
        super().save_model(request, obj, form, change)

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
                (
                    ln.description,
                    ln.quantity,
                    format_price(ln.unit_price, obj.currency),
                    ln.tax_rate,
                    format_amount(ln.amount, obj.currency),
                    format_amount(ln.tax_amount, obj.currency),
                )
                for ln in obj.lines.order_by("position")
            ),
        )
        header = "<tr><th>description</th><th>quantity</th><th>unit price</th><th>tax %</th><th>amount</th><th>tax</th></tr>"
        return format_html("<table>{}{}</table>", mark_safe(header), rows)  # noqa: S308 - a constant

    def has_delete_permission(self, request, obj=None):
        return obj is None or obj.can_delete()

    def get_deleted_objects(self, objs, request):
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        # Status history is never deleted by an operator, so its admin grants no delete: a draft
        # has none, and one that has some was issued meanwhile, which `invoice_delete` refuses
        # with its reason. Without this, that race would end in a bare 403 instead.
        perms_needed = perms_needed - {str(InvoiceStatusChange._meta.verbose_name)}
        return deleted, model_count, perms_needed, protected

    @staticmethod
    def _service_fields(fields: dict) -> dict:
        fields = dict(fields)
        if "customer" in fields:
            fields["customer_id"] = fields.pop("customer").pk
        return fields

    def create_object(self, organization, fields, *, actor):
        return invoice_create(organization=organization, actor=actor, **self._service_fields(fields))

    def update_object(self, obj, changed, *, actor):
        invoice_update(
            organization=obj.organization, invoice_id=obj.pk, actor=actor, **self._service_fields(changed)
        )

    def delete_object(self, obj, *, actor):
        invoice_delete(organization=obj.organization, invoice_id=obj.pk, actor=actor)

    @admin.action(description="Mark overdue now (all organizations, as the cron job does)")
    def mark_overdue_now(self, request, queryset):
        try:
            moved = invoice_mark_overdue()
        except MarkOverdueIncomplete as incomplete:
            self.message_user(request, incomplete.message, messages.ERROR)
            return
        self.message_user(request, f"{moved} invoices marked overdue.", messages.SUCCESS)
