from billing.serializers import CachedFieldsMixin, PlainRepresentationMixin, StrictModelSerializer
from customers.models import Customer


class CustomerSerializer(PlainRepresentationMixin, CachedFieldsMixin, StrictModelSerializer):
    class Meta:
        model = Customer
        fields = ["id", "name", "email", "phone", "address", "tax_id", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]
