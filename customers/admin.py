from django.contrib import admin

from billing.admin import ServiceWriteAdmin
from customers.models import Customer
from customers.services import customer_create, customer_delete, customer_update


@admin.register(Customer)
class CustomerAdmin(ServiceWriteAdmin):
    list_display = ["name", "email", "owner", "tax_id", "created_at"]
    list_filter = ["owner", "created_at"]
    search_fields = ["name", "email", "tax_id", "owner__username"]
    list_select_related = ["owner"]
    readonly_fields = ["created_at", "updated_at"]
    raw_id_fields = ["owner"]

    def create_object(self, owner, fields):
        return customer_create(owner=owner, **fields)

    def update_object(self, obj, changed):
        customer_update(owner=obj.owner, customer_id=obj.pk, **changed)

    def delete_object(self, obj):
        customer_delete(owner=obj.owner, customer_id=obj.pk)
