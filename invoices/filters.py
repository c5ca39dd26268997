import django_filters
from django.db.models import Q

from billing.filters import (
    IsoDateRangeFilter,
    MoneyRangeFilter,
    OwnedChoiceFilter,
    RepeatableChoiceFilter,
    StableOrderingFilter,
)
from billing.tenancy import owned_by_caller
from customers.models import Customer
from invoices.models import Invoice


class InvoiceFilterSet(django_filters.FilterSet):
    """The filters of the invoice list, shared by the summary so both always agree."""

    status = RepeatableChoiceFilter(choices=Invoice.Status.choices)
    customer = OwnedChoiceFilter(queryset=owned_by_caller(Customer))
    issue_date = IsoDateRangeFilter()
    due_date = IsoDateRangeFilter()
    total = MoneyRangeFilter()
    currency = django_filters.CharFilter(max_length=3)
    search = django_filters.CharFilter(
        method="filter_search", max_length=200, label="Number or customer name"
    )
    ordering = StableOrderingFilter(
        fields=["issue_date", "due_date", "total", "number", "created_at", "status"],
    )

    class Meta:
        model = Invoice
        fields = []

    def filter_search(self, queryset, name, value):
        return queryset.filter(Q(number__icontains=value) | Q(customer__name__icontains=value))
