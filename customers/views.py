from rest_framework import status, viewsets
from rest_framework.response import Response

from billing.filters import filters_nothing
from billing.tenancy import OrganizationScopedViewSetMixin
from customers.filters import CustomerFilterSet
from customers.models import Customer
from customers.selectors import organization_customer_count
from customers.serializers import CustomerSerializer
from customers.services import customer_create, customer_delete, customer_update


class CustomerViewSet(OrganizationScopedViewSetMixin, viewsets.ModelViewSet):
    """The caller's customers. Search: name, email. Ordering: name, created_at."""

    queryset = Customer.objects.all()
    serializer_class = CustomerSerializer
    filterset_class = CustomerFilterSet

    def list(self, request):
        queryset = self.filter_queryset(self.get_queryset())
        count = (
            organization_customer_count(organization_id=self.organization.pk)
            if filters_nothing(request, self.filterset_class)
            else None
        )
        page = self.paginator.paginate_queryset(queryset, request, view=self, count=count)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

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
