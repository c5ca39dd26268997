from django.urls import path, register_converter
from rest_framework.routers import SimpleRouter

from delivery.views import InvoiceDeliveryViewSet, hosted_invoice, hosted_invoice_pdf

# The invoices API, with its delivering writes composed by this app (`invoices.urls` is not mounted).
router = SimpleRouter(trailing_slash=True)
router.register("invoices", InvoiceDeliveryViewSet, basename="invoice")

urlpatterns = router.urls


class HostedToken:
    """An invoice's hosted-page token as `Invoice.issue` makes them (URL-safe base64, at most the
    column's 43 characters): any other text is no invoice's, a 404 before any query (a NUL, which
    PostgreSQL cannot take in a string, included)."""

    regex = "[A-Za-z0-9_-]{1,43}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(HostedToken, "hosted_token")

# The hosted invoice page, outside /api/: no login, found by the invoice's token.
hosted_urlpatterns = [
    path("i/<hosted_token:token>/", hosted_invoice, name="hosted-invoice"),
    path("i/<hosted_token:token>/pdf/", hosted_invoice_pdf, name="hosted-invoice-pdf"),
]
