"""The webhook endpoints' routes (API.md: Events and webhooks), mounted under /api/ by events.urls."""

from rest_framework.routers import SimpleRouter

from events.webhook_views import WebhookDeliveryViewSet, WebhookEndpointViewSet

router = SimpleRouter()
router.register("webhook-endpoints", WebhookEndpointViewSet, basename="webhook-endpoint")
router.register("webhook-deliveries", WebhookDeliveryViewSet, basename="webhook-delivery")

urlpatterns = router.urls
