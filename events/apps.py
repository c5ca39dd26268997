from django.apps import AppConfig


class EventsConfig(AppConfig):
    """The append-only event log — every change to a customer, an invoice or a payment, recorded by
    the service that makes it, in its transaction — and the webhooks that carry the events out
    (endpoints, their deliveries as outbox rows, the signer, the delivery job). Below customers,
    invoices and payments: they call `events.services.events_record` with their objects'
    representations; this app imports none of them."""

    name = "events"
    default_auto_field = "django.db.models.BigAutoField"
