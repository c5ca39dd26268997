import logging

from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.urls import reverse
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

logger = logging.getLogger(__name__)

# The entry points `GET /api/` lists: its key, the URL name, and what is there.
ENTRY_POINTS = [
    ("schema", "schema", "The OpenAPI 3 schema (YAML; `?format=json` for JSON)."),
    ("docs", "swagger-ui", "Swagger UI."),
    ("redoc", "redoc", "ReDoc."),
    ("health", "health", "Liveness and readiness."),
    ("login", "login", "POST a username and password for a key."),
    ("register", "register", "POST to create an account."),
    ("me", "me", "The authenticated user."),
    ("customers", "customer-list", "Customers."),
    ("invoices", "invoice-list", "Invoices."),
    ("payments", "payment-list", "Payments."),
    ("summary", "invoice-summary", "Counts and money over the invoices."),
]

EntryPointsSerializer = inline_serializer(
    "EntryPoints",
    {key: serializers.URLField(help_text=description) for key, _, description in ENTRY_POINTS},
)


class ApiRootView(APIView):
    """The API's entry points, as absolute URLs on the host the request came to."""

    permission_classes = [AllowAny]
    authentication_classes = []

    @extend_schema(
        responses={200: EntryPointsSerializer},
        summary="Entry points",
        operation_id="entry_points",
        tags=["root"],
    )
    def get(self, request):
        return Response({key: request.build_absolute_uri(reverse(name)) for key, name, _ in ENTRY_POINTS})


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
