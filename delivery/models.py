"""The delivery outbox: PDF versions of issued invoices and the emails that carry them.

Both are outbox rows (`OutboxRow`): written in the transaction of the change that needs them (a send,
a note changed, a reminder), with the job that works them (delivery.tasks), so a row exists exactly
when its change committed. An emailed send writes the email only: its PDF's version 1 is written,
already claimed, by the worker that renders it for the email (`delivery.services._pdf_for_email`). The worker claims a row with a lease (a conditional UPDATE, committed
before any slow work), does the work outside any transaction, and records the outcome. A worker
that dies leaves its lease to expire; the sweeper (`delivery.services.outbox_sweep`) puts such a
row back in the queue with a new job, because the task backend never re-runs a task whose worker
died. A failure is retried on `RETRY_SCHEDULE`, each retry a new job with `run_after`, and the row
is `failed` after the last try.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from billing.models import OutboxRow
from invoices.models import Invoice


class DocumentStatus(models.TextChoices):
    PENDING = "pending"
    RENDERING = "rendering"
    STORED = "stored"
    FAILED = "failed"


class Document(OutboxRow):
    """One PDF version of an issued invoice: asked for when the invoice is issued and again when its
    notes change, rendered by the worker and stored (Django storage) with its SHA-256; a stored
    version never changes. A draft's PDF is rendered on request and never stored."""

    Status = DocumentStatus
    WAITING, WORKING, DONE, FAILED = Status.PENDING, Status.RENDERING, Status.STORED, Status.FAILED

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="documents", db_index=False)
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    reason = models.CharField(max_length=40)
    file = models.FileField(upload_to="documents/", max_length=300, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size = models.PositiveIntegerField(null=True, blank=True)
    rendered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["invoice", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["invoice", "version"], name="document_invoice_version_unique"),
            models.CheckConstraint(
                condition=Q(status__in=DocumentStatus.values), name="document_status_valid"
            ),
            models.CheckConstraint(
                condition=~Q(status=DocumentStatus.STORED) | (~Q(sha256="") & Q(size__isnull=False)),
                name="document_stored_has_file",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "invoice", "-version"], name="document_org_invoice"),
            models.Index(fields=["status", "next_attempt_at"], name="document_due"),
        ]

    def __str__(self) -> str:
        return f"{self.invoice} v{self.version} ({self.status})"


class EmailStatus(models.TextChoices):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"  # a reminder whose invoice was paid or voided before it went out


class EmailKind(models.TextChoices):
    INVOICE = "invoice"
    REMINDER = "reminder"


class OutboundEmail(OutboxRow):
    """One message to a customer, rendered when it was queued (subject, body, recipients) and sent by
    the worker over SMTP with the invoice's stored PDF attached. `message_id` is fixed at queueing,
    so a message sent twice (a worker killed after the SMTP server took it) is the same message."""

    Status = EmailStatus
    Kind = EmailKind
    WAITING, WORKING, DONE, FAILED = Status.QUEUED, Status.SENDING, Status.SENT, Status.FAILED

    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="emails", db_index=False)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    # A scheduled reminder's step (days from the due date); null for the invoice and a manual reminder.
    reminder_step = models.SmallIntegerField(null=True, blank=True)
    to = models.JSONField()
    subject = models.CharField(max_length=300)
    body = models.TextField()
    html = models.TextField(blank=True)  # the same message as HTML, sent as an alternative
    message_id = models.CharField(max_length=200)  # unique: a constraint (no LIKE index to write)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Each (invoice, step) is sent at most once, however often or concurrently reminders run.
            models.UniqueConstraint(
                fields=["invoice", "reminder_step"],
                condition=Q(reminder_step__isnull=False),
                name="email_reminder_step_once",
            ),
            models.UniqueConstraint(fields=["message_id"], name="email_message_id_unique"),
            models.CheckConstraint(condition=Q(status__in=EmailStatus.values), name="email_status_valid"),
            models.CheckConstraint(condition=Q(kind__in=EmailKind.values), name="email_kind_valid"),
            models.CheckConstraint(
                condition=~Q(status=EmailStatus.SENT) | Q(sent_at__isnull=False),
                name="email_sent_has_sent_at",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "invoice", "-created_at"], name="email_org_invoice"),
            models.Index(fields=["status", "next_attempt_at"], name="email_due"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} of {self.invoice} to {', '.join(self.to)} ({self.status})"
