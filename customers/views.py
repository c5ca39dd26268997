from rest_framework import status, viewsets
from rest_framework.response import Response

from billing.tenancy import OrganizationListMixin, OrganizationScopedViewSetMixin
from customers.filters import CustomerFilterSet
from customers.models import Customer
from customers.selectors import organization_customer_count, organization_customers_page
from customers.serializers import CustomerSerializer
from customers.services import customer_create, customer_delete, customer_update


class CustomerViewSet(OrganizationListMixin, OrganizationScopedViewSetMixin, viewsets.ModelViewSet):
    """The caller's customers. Search: name, email. Ordering: name, created_at."""

    queryset = Customer.objects.all()
    serializer_class = CustomerSerializer
    filterset_class = CustomerFilterSet

    # All of the caller's customers: one kept count, each page one compiled read.
    unfiltered_count = staticmethod(organization_customer_count)
    unfiltered_page = staticmethod(organization_customers_page)

    def perform_create(self, serializer):
        serializer.instance = customer_create(
            organization=self.organization, actor=self.actor, **serializer.validated_data
        )

    def perform_update(self, serializer):
        serializer.instance = customer_update(
            organization=self.organization,
            customer_id=serializer.instance.pk,
            actor=self.actor,
            **serializer.validated_data,
        )

    def destroy(self, request, *args, **kwargs):
        customer_delete(organization=self.organization, customer_id=self.object_id(), actor=self.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)
