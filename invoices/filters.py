import django_filters
from django.db.models import Q

from customers.models import Customer
from invoices.models import Invoice


def _callers_customers(request):
    if request is None or not request.user.is_authenticated:
        return Customer.objects.none()
    return Customer.objects.filter(owner=request.user)


class StableOrderingFilter(django_filters.OrderingFilter):
    """`?ordering=field` or `-field`; ties are broken by id so pages never overlap."""

    def filter(self, qs, value):
        if value in ([], (), {}, "", None):
            return qs
        ordering = [self.get_ordering_value(param) for param in value]
        tiebreak = "-id" if ordering[-1].startswith("-") else "id"
        return qs.order_by(*ordering, tiebreak)


class InvoiceFilterSet(django_filters.FilterSet):
    """The filters of the invoice list, shared by the summary so both always agree."""

    status = django_filters.MultipleChoiceFilter(choices=Invoice.Status.choices)
    customer = django_filters.ModelChoiceFilter(queryset=_callers_customers)
    issue_date = django_filters.DateFromToRangeFilter()
    due_date = django_filters.DateFromToRangeFilter()
    total = django_filters.RangeFilter()
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
