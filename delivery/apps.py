from django.apps import AppConfig


class DeliveryConfig(AppConfig):
    """How an invoice reaches its customer: its PDF documents, the hosted invoice page, the email
    outbox and the reminders. The top layer: its services compose the invoice services (issue and
    deliver in one transaction); no other app imports it."""

    name = "delivery"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from delivery.checks import email_backend, pdf_engine

        checks.register(pdf_engine)
        checks.register(email_backend)
