from rest_framework import viewsets

from billing.tenancy import OwnerScopedViewSetMixin
from customers.filters import OrderingFilter, SearchFilter
from customers.models import Customer
from customers.serializers import CustomerSerializer
from customers.services import customer_delete


class CustomerViewSet(OwnerScopedViewSetMixin, viewsets.ModelViewSet):
    """The caller's customers. Search: name, email. Ordering: name, created_at."""

    queryset = Customer.objects.all()
    serializer_class = CustomerSerializer
    filter_backends = [SearchFilter, OrderingFilter]
    search_fields = ["name", "email"]
    ordering_fields = ["name", "created_at"]
    ordering = ["name", "id"]

    def perform_create(self, serializer):
        serializer.save(owner=self.request.user)

    def perform_destroy(self, instance):
        customer_delete(customer=instance)
