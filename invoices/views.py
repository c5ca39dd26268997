from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from billing.filters import filters_nothing
from billing.idempotency import idempotent
from billing.tenancy import OrganizationListMixin, OrganizationScopedViewSetMixin, organization_id_of
from invoices import services
from invoices.filters import InvoiceFilterSet
from invoices.models import Invoice
from invoices.selectors import (
    detail_prefetch,
    invoice_detail,
    invoice_summary,
    invoices_shown,
    organization_invoice_count,
    organization_invoices_page,
    organization_summary,
    with_lines_and_payments,
)
from invoices.serializers import (
    InvoiceDetailSerializer,
    InvoiceInputSerializer,
    InvoiceSerializer,
    InvoiceSummarySerializer,
)


class InvoiceViewSet(
    OrganizationListMixin,
    OrganizationScopedViewSetMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """The caller's invoices: create with lines, edit as the lifecycle allows, send, void."""

    queryset = invoices_shown()
    serializer_class = InvoiceDetailSerializer
    filterset_class = InvoiceFilterSet
    # All of the caller's invoices: counted from InvoiceTotals, each page one compiled read.
    unfiltered_count = staticmethod(organization_invoice_count)
    unfiltered_page = staticmethod(organization_invoices_page)

    def get_queryset(self):
        queryset = super().get_queryset()
        if self.action not in ("list", "summary"):
            queryset = queryset.prefetch_related(detail_prefetch("lines"), detail_prefetch("payments"))
        return queryset

    def _unfiltered(self) -> bool:
        """No filter applies: the caller's invoices are all of them, whose count and summary the
        database keeps in InvoiceTotals (ordering and paging do not change either)."""
        return filters_nothing(self.request, self.filterset_class)

    def retrieve(self, request, pk=None):
        # No filter named (the usual detail): the compiled reads of `invoice_detail`; otherwise the
        # filtered queryset, as DRF reads it.
        organization_id = organization_id_of(request)
        if organization_id is None or not self._unfiltered():
            return super().retrieve(request, pk)
        try:
            invoice_id = self.object_id()
        except NotFound:  # not plain digits ("+7", " 7"): DRF's lookup, whose answer it was before
            return super().retrieve(request, pk)
        invoice = invoice_detail(organization_id=organization_id, invoice_id=invoice_id)
        self.check_object_permissions(request, invoice)
        return Response(self.get_serializer(invoice).data)

    def get_serializer_class(self):
        return InvoiceSerializer if self.action == "list" else InvoiceDetailSerializer

    def _detail(self, invoice: Invoice, *, status_code: int = status.HTTP_200_OK) -> Response:
        """The invoice a service returned, with what it did not already load read once."""
        invoice = with_lines_and_payments(invoice)
        data = InvoiceDetailSerializer(invoice, context=self.get_serializer_context()).data
        return Response(data, status=status_code)

    def _input(self, *, partial: bool = False, for_update: bool = False) -> dict:
        context = {**self.get_serializer_context(), "for_update": for_update}
        serializer = InvoiceInputSerializer(data=self.request.data, partial=partial, context=context)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        if "customer" in data:
            data["customer_id"] = data.pop("customer")
        return data

    @extend_schema(request=InvoiceInputSerializer, responses={201: InvoiceDetailSerializer})
    @idempotent("invoice_create")
    def create(self, request):
        data = self._input()
        data.pop("status", None)
        invoice = services.invoice_create(organization=self.organization, actor=self.actor, **data)
        return self._detail(invoice, status_code=status.HTTP_201_CREATED)

    @extend_schema(request=InvoiceInputSerializer, responses=InvoiceDetailSerializer)
    def update(self, request, pk=None):
        return self._update(partial=False)

    @extend_schema(request=InvoiceInputSerializer, responses=InvoiceDetailSerializer)
    def partial_update(self, request, pk=None):
        return self._update(partial=True)

    def _update(self, *, partial: bool) -> Response:
        # The service's locked read is the only read before the write (a vanished or another
        # organization's invoice is its DoesNotExist: 404).
        invoice_id = self.object_id()
        try:
            data = self._input(partial=partial, for_update=True)
        except ValidationError:
            # Not the caller's invoice: 404 whatever the body (an extra read on this path only).
            if not self.get_queryset().filter(pk=invoice_id).exists():
                raise Invoice.DoesNotExist from None
            raise
        invoice = self.update_service(
            organization=self.organization, invoice_id=invoice_id, actor=self.actor, **data
        )
        return self._detail(invoice)

    # The write of an edit; the delivery app's view composes it with a new PDF version.
    update_service = staticmethod(services.invoice_update)

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        services.invoice_delete(organization=self.organization, invoice_id=self.object_id(), actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=InvoiceDetailSerializer, summary="Send a draft (draft → sent)")
    @action(detail=True, methods=["post"])
    def send(self, request, pk=None):
        invoice = services.invoice_send(
            organization=self.organization, invoice_id=self.object_id(), actor=self.actor
        )
        return self._detail(invoice)

    @extend_schema(
        request=None, responses=InvoiceDetailSerializer, summary="Void an unpaid sent or overdue invoice"
    )
    @action(detail=True, methods=["post"])
    def void(self, request, pk=None):
        invoice = services.invoice_void(
            organization=self.organization, invoice_id=self.object_id(), actor=self.actor
        )
        return self._detail(invoice)

    @extend_schema(
        responses=InvoiceSummarySerializer,
        summary="Counts and money over the filtered invoices",
        filters=True,  # the list's filters (and their 400s), documented here too
    )
    @action(detail=False, methods=["get"], pagination_class=None)
    def summary(self, request):
        if self._unfiltered():
            summary = organization_summary(organization_id=self.organization.pk)
        else:
            summary = invoice_summary(invoices=self.filter_queryset(self.get_queryset()))
        return Response(InvoiceSummarySerializer(summary).data)
