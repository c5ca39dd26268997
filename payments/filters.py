import django_filters

from billing.filters import (
    IsoDateRangeFilter,
    OwnedChoiceFilter,
    RepeatableChoiceFilter,
    StableOrderingFilter,
)
from billing.tenancy import owned_by_caller
from customers.models import Customer
from invoices.models import Invoice
from payments.models import Payment


class PaymentFilterSet(django_filters.FilterSet):
    invoice = OwnedChoiceFilter(queryset=owned_by_caller(Invoice))
    customer = OwnedChoiceFilter(field_name="invoice__customer", queryset=owned_by_caller(Customer))
    method = RepeatableChoiceFilter(choices=Payment.Method.choices)
    paid_at = IsoDateRangeFilter()
    ordering = StableOrderingFilter(fields=["paid_at", "amount", "created_at"])

    class Meta:
        model = Payment
        fields = []
