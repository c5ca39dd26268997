from django.urls import path
from rest_framework.routers import SimpleRouter

from delivery.views import InvoiceDeliveryViewSet, hosted_invoice, hosted_invoice_pdf

# The invoices API, with its delivering writes composed by this app (`invoices.urls` is not mounted).
router = SimpleRouter(trailing_slash=True)
router.register("invoices", InvoiceDeliveryViewSet, basename="invoice")

urlpatterns = router.urls

# The hosted invoice page, outside /api/: no login, found by the invoice's token.
hosted_urlpatterns = [
    path("i/<str:token>/", hosted_invoice, name="hosted-invoice"),
    path("i/<str:token>/pdf/", hosted_invoice_pdf, name="hosted-invoice-pdf"),
]
