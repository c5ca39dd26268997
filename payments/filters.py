import django_filters

from customers.models import Customer
from invoices.filters import IsoDateRangeFilter, OwnedChoiceFilter, StableOrderingFilter
from invoices.models import Invoice
from payments.models import Payment


def _owned(model):
    def queryset(request):
        if request is None or not request.user.is_authenticated:
            return model.objects.none()
        return model.objects.filter(owner=request.user)

    return queryset


class PaymentFilterSet(django_filters.FilterSet):
    invoice = OwnedChoiceFilter(queryset=_owned(Invoice))
    customer = OwnedChoiceFilter(field_name="invoice__customer", queryset=_owned(Customer))
    method = django_filters.MultipleChoiceFilter(choices=Payment.Method.choices)
    paid_at = IsoDateRangeFilter()
    ordering = StableOrderingFilter(fields=["paid_at", "amount", "created_at"])

    class Meta:
        model = Payment
        fields = []
