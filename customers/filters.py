import django_filters
from django.db.models import Q
from rest_framework.filters import search_smart_split

from billing.filters import StableOrderingFilter
from customers.models import Customer


class CustomerFilterSet(django_filters.FilterSet):
    """The filters of the customer list: the same strict building blocks as every list (an unknown
    ordering, a repeated parameter or a NUL character is a 400 on its name)."""

    search = django_filters.CharFilter(method="filter_search", max_length=200, label="Name or email")
    ordering = StableOrderingFilter(fields=["name", "created_at"])

    class Meta:
        model = Customer
        fields = []

    def filter_search(self, queryset, name, value):
        # Every term (quoted phrases kept whole) in the name or the email.
        for term in search_smart_split(value):
            queryset = queryset.filter(Q(name__icontains=term) | Q(email__icontains=term))
        return queryset
