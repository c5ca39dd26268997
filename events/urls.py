from django.urls import include, path
from rest_framework.routers import SimpleRouter

from events.views import EventViewSet

router = SimpleRouter()
router.register("events", EventViewSet, basename="event")

urlpatterns = [*router.urls, path("", include("events.webhook_urls"))]
