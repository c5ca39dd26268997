"""The admin's view of events and webhooks: every event, read-only (filtered by type, searched by
the object's id, linked to the object's page); each endpoint with a link to its deliveries and never
its secret; every delivery. Nothing is edited by hand: enabling or disabling an endpoint and retrying
a delivery go through the services of `events.webhooks`, as the API's do."""

from django.contrib import admin, messages
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from billing.admin import ReadOnlyAdmin
from billing.exceptions import BillingError
from events import webhooks
from events.models import Event, WebhookDelivery, WebhookEndpoint

# The admin page of an event's object, by its type.
OBJECT_PAGES = {
    "customer": "admin:customers_customer_change",
    "invoice": "admin:invoices_invoice_change",
    "payment": "admin:payments_payment_change",
    "webhook_endpoint": "admin:events_webhookendpoint_change",
}


def _link(url_name: str, pk, text) -> str:
    try:
        return format_html('<a href="{}">{}</a>', reverse(url_name, args=[pk]), text)
    except NoReverseMatch:
        return str(text)


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["id", "type", "object_link", "organization", "created_at"]
    list_filter = ["type", "object_type", "organization"]
    search_fields = ["=object_id", "=id", "=request_id", "organization__name"]
    list_select_related = ["organization"]
    fields = [
        "id",
        "type",
        "organization",
        "created_at",
        "object_link",
        "data",
        "previous_attributes",
        "actor",
        "request_id",
    ]
    readonly_fields = fields
    show_full_result_count = False  # the table is large; a count of it is not worth its scan

    @admin.display(description="object", ordering="object_id")
    def object_link(self, event: Event):
        if event.object_id is None:
            return "-"
        text = f"{event.object_type} {event.object_id}"
        url_name = OBJECT_PAGES.get(event.object_type)
        return _link(url_name, event.object_id, text) if url_name else text


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "url",
        "organization",
        "enabled",
        "events",
        "failing_since",
        "disabled_reason",
        "created_at",
    ]
    list_filter = ["enabled", "organization"]
    search_fields = ["url", "description", "organization__name"]
    list_select_related = ["organization"]
    # Never the secrets, not even encrypted.
    fields = [
        "id",
        "organization",
        "url",
        "events",
        "enabled",
        "description",
        "disabled_reason",
        "failing_since",
        "previous_secret_expires_at",
        "created_at",
        "updated_at",
        "deliveries_link",
    ]
    readonly_fields = fields
    actions = ["enable", "disable"]

    @admin.display(description="deliveries")
    def deliveries_link(self, endpoint: WebhookEndpoint):
        url = reverse("admin:events_webhookdelivery_changelist") + f"?endpoint__id__exact={endpoint.pk}"
        return format_html('<a href="{}">{}</a>', url, "the deliveries to this endpoint")

    def _set_enabled(self, request, queryset, enabled: bool) -> None:
        changed = 0
        for endpoint in queryset.exclude(enabled=enabled).only("pk", "organization_id"):
            webhooks.endpoint_update(
                organization_id=endpoint.organization_id, endpoint_id=endpoint.pk, enabled=enabled
            )
            changed += 1
        self.message_user(
            request, f"{changed} endpoint(s) {'enabled' if enabled else 'disabled'}.", messages.SUCCESS
        )

    @admin.action(description="Enable the selected endpoints")
    def enable(self, request, queryset):
        self._set_enabled(request, queryset, True)

    @admin.action(description="Disable the selected endpoints")
    def disable(self, request, queryset):
        self._set_enabled(request, queryset, False)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "event_link",
        "endpoint_link",
        "organization",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "delivered_at",
    ]
    list_filter = ["status", "organization"]
    search_fields = ["=event__id", "endpoint__url", "organization__name"]
    list_select_related = ["endpoint", "organization"]
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    show_full_result_count = False
    actions = ["retry"]

    @admin.display(description="event", ordering="event_id")
    def event_link(self, delivery: WebhookDelivery):
        return _link("admin:events_event_change", delivery.event_id, delivery.event_id)

    @admin.display(description="endpoint", ordering="endpoint__url")
    def endpoint_link(self, delivery: WebhookDelivery):
        return _link("admin:events_webhookendpoint_change", delivery.endpoint_id, delivery.endpoint.url)

    @admin.action(description="Retry the selected deliveries now")
    def retry(self, request, queryset):
        retried, refused = 0, []
        for pk, organization_id in queryset.values_list("pk", "organization_id"):
            try:
                webhooks.delivery_retry(organization_id=organization_id, delivery_id=pk)
                retried += 1
            except BillingError as exc:
                refused.append(f"{pk}: {exc.message}")
        self.message_user(
            request, f"{retried} delivery(ies) queued again.", messages.SUCCESS if retried else messages.INFO
        )
        if refused:
            self.message_user(request, "Not retried: " + "; ".join(refused[:10]), messages.WARNING)
