from django.contrib import admin

from billing.admin import ReadOnlyAdmin
from payments.models import Payment


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ["id", "invoice", "owner", "amount", "method", "reference", "paid_at", "created_at"]
    list_filter = ["method", "paid_at"]
    search_fields = ["reference", "invoice__number", "owner__username"]
    list_select_related = ["invoice", "owner"]
    date_hierarchy = "paid_at"
