from django.contrib import admin

from payments.models import IdempotencyKey, Payment


class ReadOnlyAdmin(admin.ModelAdmin):
    """Operators can look, never write: these rows are the ledger."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ["id", "invoice", "owner", "amount", "method", "reference", "paid_at", "created_at"]
    list_filter = ["method", "paid_at"]
    search_fields = ["reference", "invoice__number", "owner__username"]
    list_select_related = ["invoice", "owner"]
    date_hierarchy = "paid_at"


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdmin):
    list_display = ["key", "owner", "endpoint", "response_status", "created_at"]
    list_filter = ["endpoint", "response_status"]
    search_fields = ["key", "owner__username"]
    list_select_related = ["owner"]
