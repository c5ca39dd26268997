from django.db import models

from billing.exceptions import BusinessRuleViolation
from billing.models import ONE_LINE, OwnedModel


class Customer(OwnedModel):
    name = models.CharField(max_length=200, validators=[ONE_LINE])
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=50, blank=True)
    address = models.TextField(blank=True, max_length=2000)
    tax_id = models.CharField(max_length=50, blank=True)

    class Meta:
        ordering = ["name", "id"]
        indexes = [
            models.Index(fields=["organization", "name", "id"], name="customer_org_name"),
            models.Index(fields=["organization", "created_at"], name="customer_org_created"),
        ]
        constraints = [
            models.CheckConstraint(condition=~models.Q(name=""), name="customer_name_not_blank"),
            # The target of invoices' (customer, organization) reference (invoices migration 0004), by which
            # the database refuses an invoice for another organization's customer.
            models.UniqueConstraint(fields=["id", "organization"], name="customer_id_org_unique"),
        ]

    def __str__(self) -> str:
        return self.name

    def check_fields(self) -> None:
        """The rule the services apply before every write (the API's serializer and the admin's form
        apply the field's validator first): a name is one line."""
        if not ONE_LINE.regex.search(self.name or ""):
            raise BusinessRuleViolation(ONE_LINE.message, field="name")
