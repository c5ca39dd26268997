from rest_framework import status, viewsets
from rest_framework.response import Response

from billing.tenancy import OwnerScopedViewSetMixin
from customers.filters import CustomerFilterSet
from customers.models import Customer
from customers.serializers import CustomerSerializer
from customers.services import customer_create, customer_delete, customer_update


class CustomerViewSet(OwnerScopedViewSetMixin, viewsets.ModelViewSet):
    """The caller's customers. Search: name, email. Ordering: name, created_at."""

    queryset = Customer.objects.all()
    serializer_class = CustomerSerializer
    filterset_class = CustomerFilterSet

    def perform_create(self, serializer):
        serializer.instance = customer_create(owner=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = customer_update(
            owner=self.request.user, customer_id=serializer.instance.pk, **serializer.validated_data
        )

    def destroy(self, request, *args, **kwargs):
        customer_delete(owner=request.user, customer_id=self.object_id())
        return Response(status=status.HTTP_204_NO_CONTENT)
