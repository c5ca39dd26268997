from django.apps import AppConfig


class BillingConfig(AppConfig):
    """The project package as an app: the cross-app models (idempotency keys), their admin and
    commands. The lowest layer: it imports no other app of the project."""

    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks

        from billing.checks import currency_places

        checks.register(currency_places)
