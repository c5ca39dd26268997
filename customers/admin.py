from django.contrib import admin

from customers.models import Customer


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ["name", "email", "owner", "tax_id", "created_at"]
    list_filter = ["owner", "created_at"]
    search_fields = ["name", "email", "tax_id", "owner__username"]
    list_select_related = ["owner"]
    readonly_fields = ["created_at", "updated_at"]
    autocomplete_fields = []
    raw_id_fields = ["owner"]
