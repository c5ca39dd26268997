"""The event log and the webhooks that carry it out.

`Event` is append-only: written by the services in the transaction of the change it records (so it
exists exactly when the change committed), never changed after (the database refuses an UPDATE),
deleted only by the retention purge. `WebhookEndpoint` is an organization's receiver; a
`WebhookDelivery` is one event for one endpoint, an outbox row written with the event and worked by
the worker (claim with a lease, POST outside any transaction, record the outcome).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from billing.exceptions import BusinessRuleViolation
from billing.models import OutboxRow, OwnedModel
from events.ids import event_id

EVENT_TYPES = [
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "invoice.created",
    "invoice.updated",
    "invoice.deleted",
    "invoice.sent",
    "invoice.overdue",
    "invoice.paid",
    "invoice.voided",
    "invoice.reminder_sent",
    "payment.created",
]
PING = "ping"  # the test event of one endpoint (POST .../test/): delivered to it alone


class Event(models.Model):
    """One change, as the API showed the object right after it (`data.object`), with the values its
    changed attributes had before (`previous_attributes`), who made it and in which request."""

    id = models.CharField(primary_key=True, max_length=30, default=event_id, editable=False)
    organization = models.ForeignKey(
        "users.Organization", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    type = models.CharField(max_length=40)
    created_at = models.DateTimeField(default=timezone.now)
    object_type = models.CharField(max_length=20, blank=True)
    object_id = models.BigIntegerField(null=True, blank=True)
    data = models.JSONField()  # {"object": {...}}
    previous_attributes = models.JSONField(null=True, blank=True)
    actor = models.JSONField()  # {"type": "user" | "api_key" | "system", "id", "name"}
    request_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # The key a delivery's composite reference points at (events 0004).
            models.UniqueConstraint(fields=["id", "organization"], name="event_id_org_unique"),
        ]
        indexes = [
            models.Index(fields=["organization", "-id"], name="event_org_id"),
            models.Index(fields=["organization", "type", "-id"], name="event_org_type"),
            models.Index(fields=["organization", "object_id", "-id"], name="event_org_object"),
            models.Index(fields=["created_at"], name="event_created"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.type}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise ValueError("An event is never changed once written.")
        kwargs.setdefault("force_insert", True)
        super().save(*args, **kwargs)


class WebhookEndpoint(OwnedModel):
    """Where an organization's events are POSTed: the types it subscribes to (or "*"), its signing
    secret (stored encrypted, `events.secrets`), and after a rotation the previous secret, which
    keeps signing beside the new one until `previous_secret_expires_at`."""

    url = models.URLField(max_length=2000)
    events = models.JSONField()  # event types, or ["*"]
    enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=500, blank=True)
    secret = models.TextField()  # encrypted
    previous_secret = models.TextField(blank=True)  # encrypted
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True)
    # Why the worker turned it off (a 410, or failing for days); cleared when it is enabled again.
    disabled_reason = models.CharField(max_length=200, blank=True)
    # When its deliveries started failing without a success since; null while it delivers.
    failing_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["id", "organization"], name="endpoint_id_org_unique"),
        ]
        indexes = [models.Index(fields=["organization", "-created_at"], name="endpoint_org")]

    def __str__(self) -> str:
        return self.url

    def check_fields(self) -> None:
        """The endpoint's own rules, whoever writes it (the API's serializer says the same first):
        an http or https URL without a user name or password, known event types each once or "*"
        alone."""
        from urllib.parse import urlsplit

        from django.core.exceptions import ValidationError
        from django.core.validators import URLValidator

        try:
            URLValidator(schemes=["http", "https"])(self.url)
        except ValidationError:
            raise BusinessRuleViolation("Enter a valid http or https URL.", field="url") from None
        parts = urlsplit(self.url)
        if parts.username is not None or parts.password is not None:
            raise BusinessRuleViolation(
                "A webhook URL carries no user name or password; the signature authenticates the sender.",
                field="url",
            )
        events = self.events if isinstance(self.events, list) else None
        known = set(EVENT_TYPES) | {"*"}
        if (
            not events
            or any(not isinstance(t, str) or t not in known for t in events)
            or len(set(events)) != len(events)
            or ("*" in events and len(events) > 1)
        ):
            raise BusinessRuleViolation(
                'Event types are known types, each once, or "*" alone.', field="events"
            )

    def subscribes_to(self, event_type: str) -> bool:
        return "*" in self.events or event_type in self.events


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SENDING = "sending"  # leased by a worker; shown as pending in the API
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(OutboxRow):
    """One event for one endpoint: written with the event, POSTed by the worker until a 2xx (at least
    once; the receiver deduplicates on `webhook-id`, the event's id), retried on
    WEBHOOK_RETRY_SCHEDULE with jitter and `Retry-After`, then `failed`."""

    Status = DeliveryStatus
    WAITING, WORKING, DONE, FAILED = Status.PENDING, Status.SENDING, Status.DELIVERED, Status.FAILED
    RETRY_SCHEDULE = "WEBHOOK_RETRY_SCHEDULE"
    LEASE_SECONDS = "WEBHOOK_LEASE_SECONDS"

    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries", db_index=False)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="delivery_event_endpoint_unique"),
            models.CheckConstraint(
                condition=Q(status__in=DeliveryStatus.values), name="delivery_status_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "endpoint", "-created_at"], name="delivery_org_endpoint"),
            models.Index(fields=["status", "next_attempt_at"], name="delivery_due"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} -> {self.endpoint_id} ({self.status})"
