from rest_framework.routers import SimpleRouter

from invoices.views import InvoiceViewSet

router = SimpleRouter(trailing_slash=True)
router.register("invoices", InvoiceViewSet, basename="invoice")

urlpatterns = router.urls
