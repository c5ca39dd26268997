from django.db.models import Prefetch
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from billing.filters import FilterBackend, filters_nothing
from billing.tenancy import OwnerScopedViewSetMixin
from invoices import services
from invoices.filters import InvoiceFilterSet
from invoices.models import Invoice, Line
from invoices.selectors import invoice_summary, owner_invoice_count, owner_summary
from invoices.serializers import (
    InvoiceDetailSerializer,
    InvoiceInputSerializer,
    InvoiceSerializer,
    InvoiceSummarySerializer,
)
from payments.idempotency import idempotent
from payments.models import Payment


class InvoiceViewSet(
    OwnerScopedViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """The caller's invoices: create with lines, edit as the lifecycle allows, send, void."""

    queryset = Invoice.objects.select_related("customer")
    serializer_class = InvoiceDetailSerializer
    filter_backends = [FilterBackend]
    filterset_class = InvoiceFilterSet

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action not in ("list", "summary"):
            queryset = queryset.prefetch_related(
                Prefetch("lines", queryset=Line.objects.order_by("position")),
                Prefetch("payments", queryset=Payment.objects.order_by("paid_at", "id")),
            )
        return queryset

    def _unfiltered(self) -> bool:
        """No filter applies: the caller's invoices are all of them, whose count and summary the
        database keeps in InvoiceTotals (ordering and paging do not change either)."""
        return self.filter_backends == [FilterBackend] and filters_nothing(self.request, self.filterset_class)

    def list(self, request):
        queryset = self.filter_queryset(self.get_queryset())
        count = owner_invoice_count(owner_id=request.user.pk) if self._unfiltered() else None
        page = self.paginator.paginate_queryset(queryset, request, view=self, count=count)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def get_serializer_class(self):
        return InvoiceSerializer if self.action == "list" else InvoiceDetailSerializer

    def _detail(self, invoice_id: int) -> Response:
        """The invoice as it now is, read back with its lines and payments."""
        invoice = self.get_queryset().get(pk=invoice_id)
        return Response(InvoiceDetailSerializer(invoice, context=self.get_serializer_context()).data)

    @extend_schema(request=InvoiceInputSerializer, responses={201: InvoiceDetailSerializer})
    @idempotent("POST /api/invoices/")
    def create(self, request):
        serializer = InvoiceInputSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        invoice = services.invoice_create(owner=request.user, **serializer.validated_data)
        data = InvoiceDetailSerializer(invoice, context=self.get_serializer_context()).data
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(request=InvoiceInputSerializer, responses=InvoiceDetailSerializer)
    def update(self, request, pk=None):
        return self._update(request, partial=False)

    @extend_schema(request=InvoiceInputSerializer, responses=InvoiceDetailSerializer)
    def partial_update(self, request, pk=None):
        return self._update(request, partial=True)

    def _update(self, request, *, partial: bool) -> Response:
        # Read for the serializer's field checks only; the service decides on its own locked read.
        invoice = self.get_object()
        serializer = InvoiceInputSerializer(
            invoice, data=request.data, partial=partial, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        services.invoice_update(owner=request.user, invoice_id=invoice.pk, **serializer.validated_data)
        return self._detail(invoice.pk)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        services.invoice_delete(owner=request.user, invoice_id=self.object_id())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=InvoiceDetailSerializer, summary="Send a draft (draft → sent)")
    @action(detail=True, methods=["post"])
    def send(self, request, pk=None):
        invoice = services.invoice_send(owner=request.user, invoice_id=self.object_id())
        return self._detail(invoice.pk)

    @extend_schema(
        request=None, responses=InvoiceDetailSerializer, summary="Void an unpaid sent or overdue invoice"
    )
    @action(detail=True, methods=["post"])
    def void(self, request, pk=None):
        invoice = services.invoice_void(owner=request.user, invoice_id=self.object_id())
        return self._detail(invoice.pk)

    @extend_schema(
        responses=InvoiceSummarySerializer,
        summary="Counts and money over the filtered invoices",
        filters=True,  # the list's filters (and their 400s), documented here too
    )
    @action(detail=False, methods=["get"], pagination_class=None)
    def summary(self, request):
        if self._unfiltered():
            summary = owner_summary(owner_id=request.user.pk)
        else:
            summary = invoice_summary(invoices=self.filter_queryset(self.get_queryset()))
        return Response(InvoiceSummarySerializer(summary).data)
