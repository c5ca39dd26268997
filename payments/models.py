from django.db import models
from django.db.models import Q

from billing.exceptions import BusinessRuleViolation, NotEditable
from billing.models import OwnedModel
from invoices.models import Invoice, money_field
from users.models import CreatedBy


class PaymentMethod(models.TextChoices):
    BANK_TRANSFER = "bank_transfer"
    CARD = "card"
    CASH = "cash"
    CHECK = "check"
    OTHER = "other"


class Payment(OwnedModel, CreatedBy):
    """Money received against an invoice. Written once, never changed or deleted."""

    Method = PaymentMethod

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="payments")
    # In the invoice's currency, with at most its places (Invoice.apply_payment).
    amount = money_field()
    method = models.CharField(max_length=20, choices=Method.choices)
    reference = models.CharField(max_length=200, blank=True)
    # The date in the organization's time zone (payment_record's default: its today).
    paid_at = models.DateField()

    class Meta:
        ordering = ["-paid_at", "-id"]
        constraints = [
            *CreatedBy.Meta.constraints,
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
            models.CheckConstraint(
                condition=Q(method__in=PaymentMethod.values),
                name="payment_method_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "-paid_at", "-id"], name="payment_org_paid_at"),
            models.Index(fields=["organization", "invoice"], name="payment_org_invoice"),
            models.Index(fields=["organization", "-created_at"], name="payment_org_created"),
        ]

    def __str__(self) -> str:
        return f"{self.amount} on invoice {self.invoice_id}"

    def check_fields(self) -> None:
        """The rules on the payment's own fields, with an error on the field they concern."""
        if self.paid_at is None:
            raise BusinessRuleViolation("This field is required.", field="paid_at")
        if self.paid_at > self.organization.today():
            raise BusinessRuleViolation("A payment cannot be dated in the future.", field="paid_at")
        if self.method not in PaymentMethod.values:
            raise BusinessRuleViolation(f'"{self.method}" is not a valid choice.', field="method")

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise NotEditable("A payment is never changed; record a new one instead.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise NotEditable("A payment is never deleted.")
