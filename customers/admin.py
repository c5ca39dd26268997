from django.contrib import admin

from billing.admin import ServiceWriteAdmin, events_link
from customers.models import Customer
from customers.services import customer_create, customer_delete, customer_update


@admin.register(Customer)
class CustomerAdmin(ServiceWriteAdmin):
    list_display = ["name", "email", "organization", "tax_id", "created_at"]
    list_filter = ["organization", "created_at"]
    search_fields = ["name", "email", "tax_id", "organization__name"]
    list_select_related = ["organization"]
    readonly_fields = ["created_at", "updated_at", "events"]
    raw_id_fields = ["organization"]

    @admin.display(description="events")
    def events(self, obj):
        return events_link(obj, "customer")

    def create_object(self, organization, fields, *, actor):
        # A customer records no creator; its event names the operator.
        return customer_create(organization=organization, actor=actor, **fields)

    def update_object(self, obj, changed, *, actor):
        customer_update(organization=obj.organization, customer_id=obj.pk, actor=actor, **changed)

    def delete_object(self, obj, *, actor):
        customer_delete(organization=obj.organization, customer_id=obj.pk, actor=actor)
