from django.apps import AppConfig


class BillingConfig(AppConfig):
    """The project package as an app: the cross-app models (idempotency keys), their admin and
    commands. The lowest layer: it imports no other app of the project."""

    name = "billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.core import checks
        from django.db.backends.signals import connection_created

        from billing.checks import currency_places
        from billing.db import install_prepared

        checks.register(currency_places)
        connection_created.connect(install_prepared, dispatch_uid="billing.db.install_prepared")
