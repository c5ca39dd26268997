"""The app's URLs plus `/bench/ping/`: the cheapest authenticated DRF view, the framework's ceiling.

Served only when DJANGO_SETTINGS_MODULE=bench.settings; never part of the app's own URLconf.
"""

from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView


class PingView(APIView):
    """Default authentication (token lookup) and permission (IsAuthenticated), a constant body."""

    def get(self, request):
        return Response({"ok": True})


urlpatterns = [
    path("bench/ping/", PingView.as_view(), name="bench-ping"),
    path("", include("billing.urls")),
]
