from rest_framework.routers import DefaultRouter

from invoices.views import InvoiceViewSet

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("invoices", InvoiceViewSet, basename="invoice")

urlpatterns = router.urls
