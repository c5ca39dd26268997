from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.response import Response

from billing.idempotency import idempotent
from billing.tenancy import OrganizationScopedViewSetMixin
from invoices.selectors import CREATOR
from payments.filters import PaymentFilterSet
from payments.models import Payment
from payments.serializers import PaymentInputSerializer, PaymentResultSerializer
from payments.services import payment_record


class PaymentViewSet(
    OrganizationScopedViewSetMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Payments are recorded, listed and read; never changed or deleted (PUT, PATCH, DELETE: 405)."""

    queryset = Payment.objects.select_related("invoice", *CREATOR)
    serializer_class = PaymentResultSerializer
    filterset_class = PaymentFilterSet

    @extend_schema(request=PaymentInputSerializer, responses={201: PaymentResultSerializer})
    @idempotent("payment_record")
    def create(self, request):
        serializer = PaymentInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        payment = payment_record(
            organization=self.organization,
            invoice_id=data["invoice"],
            amount=data["amount"],
            method=data["method"],
            reference=data["reference"],
            paid_at=data.get("paid_at"),
            actor=self.actor,
        )
        return Response(PaymentResultSerializer(payment).data, status=status.HTTP_201_CREATED)
