from functools import partial

from rest_framework import status, viewsets
from rest_framework.response import Response

from billing.filters import filters_nothing
from billing.pagination import PagedRead
from billing.tenancy import OrganizationScopedViewSetMixin, organization_id_of
from customers.filters import CustomerFilterSet
from customers.models import Customer
from customers.selectors import organization_customer_count, organization_customers_page
from customers.serializers import CustomerSerializer
from customers.services import customer_create, customer_delete, customer_update


class CustomerViewSet(OrganizationScopedViewSetMixin, viewsets.ModelViewSet):
    """The caller's customers. Search: name, email. Ordering: name, created_at."""

    queryset = Customer.objects.all()
    serializer_class = CustomerSerializer
    filterset_class = CustomerFilterSet

    def list(self, request):
        queryset = self.filter_queryset(self.get_queryset())
        count, rows = None, queryset
        organization_id = organization_id_of(request)
        if organization_id is not None and filters_nothing(request, self.filterset_class):
            # All of the caller's customers: one kept count, each page one compiled read.
            count = organization_customer_count(organization_id=organization_id)
            rows = PagedRead(partial(organization_customers_page, organization_id=organization_id))
        page = self.paginator.paginate_queryset(rows, request, view=self, count=count)
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
