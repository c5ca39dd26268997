"""Delivery: issuing an invoice with its PDF and email queued in the same transaction, reminders,
and the worker's side of the outbox (render, send, retry, sweep).

The request side (`invoice_send_and_deliver`, `invoice_update_and_render`, `invoice_remind`,
`reminders_send`) only writes rows: outbox rows and their jobs, in the caller's transaction, so
they exist exactly when the change committed. The worker side (`document_render`, `email_deliver`,
`outbox_sweep`) claims a row with a lease, commits, does the slow work (WeasyPrint, SMTP) outside
any transaction and without any row lock, then records the outcome.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import uuid
import zoneinfo
from collections.abc import Sequence

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import IntegrityError, transaction
from django.db.models import F, Max, prefetch_related_objects
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.formats import date_format

from billing import db
from billing.exceptions import BillingError, BusinessRuleViolation, InvalidTransition
from delivery import documents, tasks
from delivery.models import Document, OutboundEmail, OutboxRow
from invoices import services as invoice_services
from invoices.locks import lock_invoice
from invoices.models import Invoice
from users.models import Actor, Organization

logger = logging.getLogger(__name__)


class NoRecipient(BillingError):
    code = "no_recipient"


class PdfUnavailable(BillingError):
    """The PDF engine (WeasyPrint, on the system's Pango) cannot be loaded here."""

    code = "pdf_unavailable"
    status_code = 503


class PdfBusy(BillingError):
    """This server process renders as many PDFs as it takes at once already (documents.PdfBusy)."""

    code = "pdf_busy"
    status_code = 503
    retry_after = 5  # seconds: about one long render


# --- the request side: rows in the caller's transaction --------------------------------------------


def document_queue(invoice: Invoice, *, reason: str, first: bool = False, job: bool = True) -> Document:
    """Ask for a new PDF version of issued `invoice` (the caller holds its row lock, so versions of
    one invoice are numbered in order; `first`: it has just been issued, so this is version 1);
    the worker renders and stores it — its own job, or (`job=False`) the job of the email queued
    with it, which renders its invoice's pending version before it sends (one job a send, not two)."""
    latest = 0 if first else Document.objects.filter(invoice=invoice).aggregate(v=Max("version"))["v"] or 0
    document = Document(
        organization_id=invoice.organization_id, invoice=invoice, version=latest + 1, reason=reason
    )
    document.save()
    if job:
        tasks.render_document.enqueue(document.pk)
    return document


def documents_queue_missing(*, organization_id: int | None = None) -> int:
    """Queue version 1 of every issued invoice that has no PDF version (issued before delivery was
    installed, or by a path that issues without it, as the demo data's); returns how many. Each under
    its invoice's lock, so a send or another run at the same time never makes a second version 1."""
    missing = (
        Invoice.objects.exclude(status=Invoice.Status.DRAFT)
        .filter(documents__isnull=True)
        .order_by("pk")
        .values_list("organization_id", "pk")
    )
    if organization_id is not None:
        missing = missing.filter(organization_id=organization_id)
    queued = 0
    for owner, invoice_id in missing.iterator():
        with transaction.atomic():
            invoice = lock_invoice(organization_id=owner, invoice_id=invoice_id, with_customer=False)
            if not Document.objects.filter(invoice=invoice).exists():
                document_queue(invoice, reason="issued", first=True)
                queued += 1
    return queued


def _hosted_link(invoice: Invoice) -> str:
    return f"{settings.PUBLIC_URL}/i/{invoice.public_token}/"


def _message_id() -> str:
    domain = settings.DEFAULT_FROM_EMAIL.rpartition("@")[2] or "localhost"
    return f"<{uuid.uuid4().hex}@{domain}>"


def _reminder_when(invoice: Invoice, today: datetime.date, due: str) -> str:
    days = (invoice.due_date - today).days
    if days > 1:
        return f"is due in {days} days, on {due}"
    if days == 1:
        return f"is due tomorrow, {due}"
    if days == 0:
        return "is due today"
    late = -days
    return f"was due on {due}, {late} day{'s' if late != 1 else ''} ago"


def email_queue(
    invoice: Invoice,
    *,
    kind: str,
    to: Sequence[str],
    reminder_step: int | None = None,
    today: datetime.date | None = None,
    actor: Actor | None = None,
    job: bool = True,
) -> OutboundEmail:
    """Write the message to send about `invoice` — rendered now, as the customer will read it — and
    its job; a reminder's `invoice.reminder_sent` event too (written when it is queued). Subject and
    body come from templates (delivery/templates/delivery/email/). `job=False`: the caller's job
    works it (a send's `deliver_invoice`)."""
    organization = invoice.organization
    seller = organization.legal_name or organization.name
    # The due date as the templates' `date:"j F Y"` writes it, written once (a date filter is a
    # tenth of a message's rendering).
    due = date_format(invoice.due_date, "j F Y")
    context = {
        "invoice": invoice,
        "seller": seller,
        "organization": organization,
        "customer": invoice.customer,
        "total": documents.format_money(invoice.total, invoice.currency),
        "balance_due": documents.format_money(invoice.balance_due, invoice.currency),
        "hosted_url": _hosted_link(invoice),
        "due_date": due,
        "kind": kind,
    }
    if kind == OutboundEmail.Kind.REMINDER:
        context["when"] = _reminder_when(invoice, today or organization.today(), due)
    subject = render_to_string(f"delivery/email/{kind}_subject.txt", context)
    # One line, however the names were written (a header never carries a line break).
    subject = " ".join(subject.split())[:300]
    email = OutboundEmail(
        organization_id=invoice.organization_id,
        invoice=invoice,
        kind=kind,
        reminder_step=reminder_step,
        to=list(to),
        subject=subject,
        body=render_to_string(f"delivery/email/{kind}_body.txt", context),
        html=render_to_string("delivery/email/message.html", {**context, "subject": subject}),
        message_id=_message_id(),
    )
    email.save()
    if job:
        tasks.send_email.enqueue(email.pk)
    if kind == OutboundEmail.Kind.REMINDER:
        invoice_services.record_invoice_events(invoice, ["invoice.reminder_sent"], actor=actor)
    return email


def _recipients(invoice: Invoice, to: Sequence[str] | None, *, asked: bool) -> list[str]:
    if to:
        return list(dict.fromkeys(to))
    if invoice.customer.email:
        return [invoice.customer.email]
    if asked:
        raise NoRecipient(
            "There is no address to send this invoice to: the customer has no email; give `to`."
        )
    return []


@transaction.atomic
def invoice_send_and_deliver(
    *,
    organization: Organization,
    invoice_id: int,
    actor: Actor | None = None,
    email: bool | None = None,
    to: Sequence[str] | None = None,
) -> Invoice:
    """Issue a draft (`invoice_send`) and, in the same transaction, queue its PDF and, unless
    `email` is false, its email: to `to`, else to the customer's address (none: no email, unless
    `email` was asked for explicitly, which is 409 `no_recipient`).

    The send writes two rows beside the invoice's: the email (whose worker writes, renders and
    stores PDF version 1 before it sends) or, with no email, PDF version 1; and one job for either
    (`tasks.deliver_invoice`, named by the invoice). Both are held (`billing.db.held_writes`): each
    goes to the database with the send's next statement, so on PostgreSQL delivery adds no round
    trip to a send."""
    if to and email is False:
        raise BusinessRuleViolation(
            "`to` names recipients of an email; it cannot go with `email: false`.", field="to"
        )
    emailing = email is not False
    recipients: list[str] = []

    def queue_document(invoice: Invoice) -> None:
        # Before the number: the job and the version need none, and the organization's sends queue
        # on the number's lock, held to the commit (so only the email, which shows it, comes after).
        # An emailed invoice's version 1 is written by the worker that renders it for the email
        # (`_pdf_for_email`): the email's row is what a crash must not lose, and it carries it.
        nonlocal recipients
        recipients = _recipients(invoice, to, asked=email is True or bool(to)) if emailing else []
        with db.holding():
            if not recipients:
                document_queue(invoice, reason="issued", first=True, job=False)
            tasks.deliver_invoice.enqueue(invoice.pk)

    def queue_email(invoice: Invoice) -> None:
        if recipients:
            invoice.organization = organization
            with db.holding():
                email_queue(invoice, kind=OutboundEmail.Kind.INVOICE, to=recipients, job=False)

    with db.held_writes():
        invoice = invoice_services.invoice_send_within(
            organization=organization,
            invoice_id=invoice_id,
            actor=actor,
            before_number=queue_document,
            before_events=queue_email,
        )
    invoice.organization = organization
    return invoice


@transaction.atomic
def invoice_update_and_render(*, organization: Organization, invoice_id: int, **changes) -> Invoice:
    """`invoice_update`, and a new PDF version when an issued invoice's notes changed (the stored
    versions are kept)."""
    invoice = invoice_services.invoice_update_within(
        organization=organization, invoice_id=invoice_id, **changes
    )
    if invoice.status != Invoice.Status.DRAFT and "notes" in getattr(invoice, "changed_by_update", ()):
        document_queue(invoice, reason="notes changed")
    return invoice


@transaction.atomic
def invoice_remind(
    *,
    organization: Organization,
    invoice_id: int,
    to: Sequence[str] | None = None,
    actor: Actor | None = None,
) -> OutboundEmail:
    """Queue a payment reminder now: a sent or overdue invoice only (409 otherwise), to its
    customer's address (409 `no_recipient` without one)."""
    invoice = lock_invoice(organization_id=organization.pk, invoice_id=invoice_id)
    if not invoice.can_pay():
        raise InvalidTransition(
            f"Only a sent or overdue invoice is reminded of; this invoice is {invoice.status}."
        )
    invoice.organization = organization
    recipients = _recipients(invoice, to, asked=True)
    return email_queue(invoice, kind=OutboundEmail.Kind.REMINDER, to=recipients, actor=actor)


def _local_today(organization: Organization, now: datetime.datetime) -> datetime.date:
    return timezone.localdate(now, timezone=zoneinfo.ZoneInfo(organization.time_zone))


def reminders_send(*, now: datetime.datetime | None = None) -> int:
    """Queue the reminders due now; returns how many. For each sent or overdue invoice with an
    address, the latest step of its organization's `reminder_days` whose day (due date + step, in
    the organization's time zone) has come and is after the day the invoice was sent; a step already
    sent (or passed over by a later one) is never sent again, so missed runs catch up with one
    message, and running every minute sends nothing twice (a unique (invoice, step) row decides)."""
    now = now or timezone.now()
    queued = 0
    organizations = Organization.objects.exclude(reminder_days=[]).order_by("pk")
    for organization in organizations.iterator():
        today = _local_today(organization, now)
        steps = sorted(set(organization.reminder_days))
        zone = zoneinfo.ZoneInfo(organization.time_zone)
        candidates = (
            Invoice.objects.filter(
                organization=organization,
                status__in=Invoice.PAYABLE,
                due_date__lte=today - datetime.timedelta(days=steps[0]),
            )
            .exclude(customer__email="")
            .select_related("customer")
            .order_by("pk")
        )
        for invoice in candidates.iterator():
            sent_on = timezone.localdate(invoice.sent_at, timezone=zone)
            due = [s for s in steps if sent_on < invoice.due_date + datetime.timedelta(days=s) <= today]
            if not due:
                continue
            step = due[-1]
            if OutboundEmail.objects.filter(invoice=invoice, reminder_step__gte=step).exists():
                continue
            invoice.organization = organization
            try:
                with transaction.atomic():
                    locked = lock_invoice(organization_id=organization.pk, invoice_id=invoice.pk)
                    if not locked.can_pay():
                        continue  # paid or voided since it was read
                    locked.organization = organization
                    email_queue(
                        locked,
                        kind=OutboundEmail.Kind.REMINDER,
                        to=[locked.customer.email],
                        reminder_step=step,
                        today=today,
                    )
            except IntegrityError:
                continue  # another run queued this step first
            queued += 1
    return queued


# --- the worker side --------------------------------------------------------------------------------


def _invoice_for_rendering(invoice_id: int) -> Invoice:
    return (
        Invoice.objects.select_related("organization", "customer")
        .prefetch_related("lines")
        .get(pk=invoice_id)
    )


def _failed_attempt(model: type[OutboxRow], row: OutboxRow, error: str, task) -> None:
    """Record a failed attempt: queue the next one as a new job with `run_after`, or give up."""
    delay = model.retry_delay(row.attempts)
    now = timezone.now()
    if delay is None:
        model.objects.filter(pk=row.pk).update(
            status=model.FAILED, last_error=error[:2000], lease_expires_at=None, updated_at=now
        )
        logger.error(
            "%s %s failed for good after %s attempts: %s", model.__name__, row.pk, row.attempts, error
        )
        return
    with transaction.atomic():
        model.objects.filter(pk=row.pk).update(
            status=model.WAITING,
            next_attempt_at=now + delay,
            last_error=error[:2000],
            lease_expires_at=None,
            updated_at=now,
        )
        task.using(run_after=now + delay).enqueue(row.pk)
    logger.warning(
        "%s %s attempt %s failed, next in %s: %s", model.__name__, row.pk, row.attempts, delay, error
    )


def _store(document: Document, pdf: bytes) -> None:
    digest = hashlib.sha256(pdf).hexdigest()
    invoice = document.invoice
    name = default_storage.save(
        f"documents/{invoice.organization_id}/{invoice.pk}/{invoice.number}-v{document.version}-{digest[:12]}.pdf",
        ContentFile(pdf),
    )
    Document.objects.filter(pk=document.pk).update(
        status=Document.Status.STORED,
        file=name,
        sha256=digest,
        size=len(pdf),
        rendered_at=timezone.now(),
        lease_expires_at=None,
        last_error="",
        updated_at=timezone.now(),
    )


def document_render(document_id: int) -> None:
    """The worker's job for a Document: claim it, render the invoice as it is now, store it."""
    if not Document.claim(document_id):
        return  # done, given up, or leased by a live worker
    document = Document.objects.get(pk=document_id)
    try:
        document.invoice = _invoice_for_rendering(document.invoice_id)
        pdf = documents.render_pdf(document.invoice)
        _store(document, pdf)
    except Exception as exc:
        _failed_attempt(Document, document, f"{type(exc).__name__}: {exc}", tasks.render_document)


def invoice_pdf(invoice: Invoice) -> bytes:
    """The PDF of `invoice` for a request: a draft's rendered now (marked DRAFT, never stored); an
    issued one's latest stored version, or — not stored yet — rendered now, stored as its pending
    version when that one is free to take (or as version 1 when its send wrote none: an emailed
    send's, before its worker ran), and returned. Never under a lock."""
    if invoice.status == Invoice.Status.DRAFT:
        return _render(invoice, draft=True)
    latest = Document.objects.filter(invoice=invoice).order_by("-version").first()
    if latest is not None and latest.status == Document.Status.STORED:
        return _read(latest)
    pdf = _render(invoice)
    if latest is None:  # an emailed send's version 1, before its worker wrote it
        latest = _claim_first_version(invoice)
    elif not Document.claim(latest.pk):
        latest = None
    if latest is not None:
        latest.invoice = invoice
        _store(latest, pdf)
    return pdf


def _read(document: Document) -> bytes:
    with default_storage.open(document.file.name, "rb") as stored:
        return stored.read()


class _PdfBusy(Exception):
    """The invoice's latest version is another worker's to render (its lease is live, or its next
    attempt is not due): the email waits for it rather than render the same PDF twice."""

    def __init__(self, until: datetime.datetime):
        self.until = until


def _pdf_for_email(invoice: Invoice) -> bytes:
    """The PDF an email carries (`invoice` with its organization and customer; its lines are read
    here if it is rendered): the latest stored version, or the pending one, rendered and stored
    here first when it is free to take (the email's job is the job of the version queued with it).
    `_PdfBusy` while another worker renders it; a version given up on is rendered for the message
    without storing."""
    latest = Document.objects.filter(invoice=invoice).order_by("-version").first()
    claimed = None
    if latest is None:  # an emailed send's version 1: written here, claimed, rendered and stored
        claimed = latest = _claim_first_version(invoice)
        if latest is None:  # written meanwhile by another worker (or a request)
            latest = Document.objects.filter(invoice=invoice).order_by("-version").first()
        if latest is None:  # and gone again (its invoice deleted): the message carries a rendering
            return _render(invoice)
    if latest.status == Document.Status.STORED:
        return _read(latest)
    if latest.status == Document.Status.FAILED:
        return _render(invoice)
    if claimed is None and not Document.claim(latest.pk):
        latest.refresh_from_db()
        if latest.status == Document.Status.STORED:
            return _read(latest)  # stored meanwhile by the worker that held it
        if latest.status == Document.Status.FAILED:
            return _render(invoice)
        held = (
            latest.lease_expires_at if latest.status == Document.Status.RENDERING else latest.next_attempt_at
        )
        raise _PdfBusy(max(held or timezone.now(), timezone.now() + datetime.timedelta(seconds=1)))
    return _render_claimed(latest, invoice)


def _render_claimed(document: Document, invoice: Invoice) -> bytes:
    """Render and store `document`, claimed by this caller, of `invoice`; a failure is an attempt
    (retried by its own job, or given up on), then raised."""
    document.invoice = invoice
    try:
        pdf = _render(invoice)
        _store(document, pdf)
    except Exception as exc:
        _failed_attempt(Document, document, f"{type(exc).__name__}: {exc}", tasks.render_document)
        raise
    return pdf


def _claim_first_version(invoice: Invoice) -> Document | None:
    """Version 1 of issued `invoice`, written already claimed by this caller (its first attempt, its
    lease), for an invoice whose send wrote none; None if another caller wrote it first (the
    version is unique per invoice, so only one writes it)."""
    now = timezone.now()
    document = Document(
        organization_id=invoice.organization_id,
        invoice=invoice,
        version=1,
        reason="issued",
        status=Document.Status.RENDERING,
        attempts=1,
        lease_expires_at=now + datetime.timedelta(seconds=getattr(settings, Document.LEASE_SECONDS)),
    )
    try:
        with transaction.atomic():
            document.save()
    except IntegrityError:
        return None
    return document


def _render(invoice: Invoice, *, draft: bool = False) -> bytes:
    prefetch_related_objects([invoice], "lines")  # nothing read when they are already
    try:
        return documents.render_pdf(invoice, draft=draft)
    except documents.PdfUnavailable as exc:
        raise PdfUnavailable(
            "PDF documents are unavailable on this server (the PDF engine could not be loaded)."
        ) from exc
    except documents.PdfBusy as exc:
        raise PdfBusy("The server is rendering other PDFs; retry in a few seconds.") from exc


def _pending_documents_render(invoice_id: int) -> int:
    """Render the invoice's versions still waiting (an email's job carries the version queued with
    it, and renders it even when it cannot send)."""
    now = timezone.now()
    waiting = Document.objects.filter(
        invoice_id=invoice_id, status=Document.Status.PENDING, next_attempt_at__lte=now
    )
    pending = list(waiting.values_list("pk", flat=True))
    for document_id in pending:
        document_render(document_id)
    return len(pending)


def invoice_deliver(invoice_id: int) -> None:
    """The worker's job for a send (`tasks.deliver_invoice`): the invoice's emails waiting, each as
    `email_deliver` sends it (rendering the PDF version first), or, with none, its PDF versions
    waiting. Each row is still claimed on its own, so this job run twice, or beside a job of the
    sweeper's for one of its rows, works each row once."""
    now = timezone.now()
    waiting = OutboundEmail.objects.filter(
        invoice_id=invoice_id, status=OutboundEmail.Status.QUEUED, next_attempt_at__lte=now
    ).order_by("pk")
    emails = list(waiting.values_list("pk", flat=True)) if settings.EMAIL_CONFIGURED else []
    for email_id in emails:
        email_deliver(email_id)
    # Nothing to send (no email backend here, or sent already) and no version waiting: an emailed
    # send wrote none, so version 1 is written here if it is still missing.
    if (
        not emails
        and not _pending_documents_render(invoice_id)
        and not Document.objects.filter(invoice_id=invoice_id).exists()
    ):
        invoice = _invoice_for_rendering(invoice_id)
        document = _claim_first_version(invoice)
        if document is not None:
            with contextlib.suppress(Exception):  # an attempt recorded, retried by its own job
                _render_claimed(document, invoice)


def email_deliver(email_id: int) -> None:
    """The worker's job for an OutboundEmail: claim it, attach the stored PDF (rendering it first if
    it is not there yet; waiting, not rendering it too, while another worker does), send it over
    SMTP, record the outcome. A reminder whose invoice was paid or voided meanwhile is cancelled.
    Without an email backend (EMAIL_URL unset in production) the row stays queued, and the job
    only renders its invoice's pending PDF."""
    if not settings.EMAIL_CONFIGURED:
        invoice_id = OutboundEmail.objects.filter(pk=email_id).values_list("invoice_id", flat=True).first()
        if invoice_id is not None:
            _pending_documents_render(invoice_id)
        return
    email = OutboundEmail.claim_and_get(
        email_id, related=("invoice", "invoice__organization", "invoice__customer")
    )
    if email is None:
        return
    try:
        invoice = email.invoice
        if email.kind == OutboundEmail.Kind.REMINDER and not invoice.can_pay():
            OutboundEmail.objects.filter(pk=email_id).update(
                status=OutboundEmail.Status.CANCELLED, lease_expires_at=None, updated_at=timezone.now()
            )
            return
        pdf = _pdf_for_email(invoice)
        organization = invoice.organization
        message = EmailMultiAlternatives(
            subject=email.subject,
            body=email.body,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=email.to,
            reply_to=[organization.email] if organization.email else None,
            headers={"Message-ID": email.message_id},
            connection=get_connection(fail_silently=False),
        )
        if email.html:
            message.attach_alternative(email.html, "text/html")
        message.attach(f"{invoice.number}.pdf", pdf, "application/pdf")
        message.send()
    except _PdfBusy as busy:
        _wait_for_pdf(email, busy.until)
        return
    except Exception as exc:
        _failed_attempt(OutboundEmail, email, f"{type(exc).__name__}: {exc}", tasks.send_email)
        return
    now = timezone.now()
    OutboundEmail.objects.filter(pk=email_id).update(
        status=OutboundEmail.Status.SENT, sent_at=now, lease_expires_at=None, last_error="", updated_at=now
    )


def _wait_for_pdf(email: OutboundEmail, until: datetime.datetime) -> None:
    """Put the email back until its PDF is another worker's to finish: not an attempt (nothing was
    tried), so it is not counted, and a new job runs it then."""
    with transaction.atomic():
        OutboundEmail.objects.filter(pk=email.pk).update(
            status=OutboundEmail.Status.QUEUED,
            attempts=F("attempts") - 1,
            next_attempt_at=until,
            lease_expires_at=None,
            updated_at=timezone.now(),
        )
        tasks.send_email.using(run_after=until).enqueue(email.pk)


@transaction.atomic
def email_retry(email_id: int) -> bool:
    """An operator's retry of a failed email: queued again with a new job, from a fresh count."""
    now = timezone.now()
    retried = OutboundEmail.objects.filter(pk=email_id, status=OutboundEmail.Status.FAILED).update(
        status=OutboundEmail.Status.QUEUED, attempts=0, next_attempt_at=now, updated_at=now
    )
    if retried:
        tasks.send_email.enqueue(email_id)
    return bool(retried)


def outbox_sweep(*, now: datetime.datetime | None = None) -> int:
    """Put back in the queue, each with a new job, the rows whose worker died (lease expired), and
    the waiting rows long past due (their job lost); returns how many. Safe to run anywhere, any
    number of times: a row is taken by one claim only."""
    now = now or timezone.now()
    grace = datetime.timedelta(seconds=max(settings.DELIVERY_TICK_SECONDS * 2, 60))
    swept = 0
    for model, task in ((Document, tasks.render_document), (OutboundEmail, tasks.send_email)):
        if model is OutboundEmail and not settings.EMAIL_CONFIGURED:
            continue
        expired = model.objects.filter(status=model.WORKING, lease_expires_at__lt=now)
        for pk, attempts in expired.values_list("pk", "attempts"):
            with transaction.atomic():
                if model.retry_delay(attempts) is None:
                    model.objects.filter(pk=pk, status=model.WORKING, lease_expires_at__lt=now).update(
                        status=model.FAILED,
                        last_error="The worker stopped during the last attempt.",
                        updated_at=now,
                    )
                    continue
                if model.objects.filter(pk=pk, status=model.WORKING, lease_expires_at__lt=now).update(
                    status=model.WAITING, next_attempt_at=now, lease_expires_at=None, updated_at=now
                ):
                    task.enqueue(pk)
                    swept += 1
        for pk in model.objects.filter(status=model.WAITING, next_attempt_at__lt=now - grace).values_list(
            "pk", flat=True
        ):
            task.enqueue(pk)
            swept += 1
    return swept
