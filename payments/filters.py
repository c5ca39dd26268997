import django_filters

from customers.models import Customer
from invoices.filters import StableOrderingFilter
from invoices.models import Invoice
from payments.models import Payment


def _owned(model):
    def queryset(request):
        if request is None or not request.user.is_authenticated:
            return model.objects.none()
        return model.objects.filter(owner=request.user)

    return queryset


class PaymentFilterSet(django_filters.FilterSet):
    invoice = django_filters.ModelChoiceFilter(queryset=_owned(Invoice))
    customer = django_filters.ModelChoiceFilter(field_name="invoice__customer", queryset=_owned(Customer))
    method = django_filters.MultipleChoiceFilter(choices=Payment.Method.choices)
    paid_at = django_filters.DateFromToRangeFilter()
    ordering = StableOrderingFilter(fields=["paid_at", "amount", "created_at"])

    class Meta:
        model = Payment
        fields = []
