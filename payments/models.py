from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.errors import NotEditable
from billing.tenancy import OwnedModel
from invoices.models import Invoice


class Payment(OwnedModel):
    """Money received against an invoice. Written once, never changed or deleted."""

    class Method(models.TextChoices):
        BANK_TRANSFER = "bank_transfer"
        CARD = "card"
        CASH = "cash"
        CHECK = "check"
        OTHER = "other"

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="payments")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    method = models.CharField(max_length=20, choices=Method.choices)
    reference = models.CharField(max_length=200, blank=True)
    paid_at = models.DateField(default=timezone.localdate)

    class Meta:
        ordering = ["-paid_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
            models.CheckConstraint(
                condition=Q(method__in=["bank_transfer", "card", "cash", "check", "other"]),
                name="payment_method_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["owner", "-paid_at", "-id"], name="payment_owner_paid_at"),
            models.Index(fields=["owner", "invoice"], name="payment_owner_invoice"),
            models.Index(fields=["owner", "-created_at"], name="payment_owner_created"),
        ]

    def __str__(self) -> str:
        return f"{self.amount} on invoice {self.invoice_id}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise NotEditable("A payment is never changed; record a new one instead.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise NotEditable("A payment is never deleted.")


class IdempotencyKey(models.Model):
    """The outcome of the first completed request made with an `Idempotency-Key`.

    Written in the same transaction as the request's own writes, so a key exists exactly when its
    request took effect (or was refused with a 4xx); a crash leaves neither behind.
    """

    # No index of its own: every table's indexes lead with owner_id (Meta.indexes), which serve
    # the lookups by owner, and a redundant index would only slow every write.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    key = models.CharField(max_length=255)
    endpoint = models.CharField(max_length=100)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the canonical request body.")
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField(encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="idempotency_owner_key_unique")]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self) -> str:
        return f"{self.key} ({self.endpoint})"
