import logging

from django.db import DatabaseError, connection
from django.http import JsonResponse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

logger = logging.getLogger(__name__)

HealthSerializer = inline_serializer(
    "Health", {"status": serializers.CharField(), "database": serializers.CharField()}
)


class HealthView(APIView):
    """Liveness and readiness: the process answers and the database runs a query."""

    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(responses={200: HealthSerializer, 503: HealthSerializer}, summary="Health check")
    def get(self, request):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
                cursor.fetchone()
        except DatabaseError:
            logger.exception("health check: the database does not answer")
            return Response(
                {"status": "error", "database": "unavailable"},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return Response({"status": "ok", "database": "ok"})


def server_error(request, *args, **kwargs):
    """A 500 in JSON, with nothing of the failure in it (the log has the traceback)."""
    return JsonResponse({"detail": "A server error occurred.", "code": "server_error"}, status=500)


def not_found(request, exception=None):
    return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
