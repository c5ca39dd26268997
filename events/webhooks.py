"""Webhooks: the endpoints' services (create, change, delete, rotate the secret, ping, retry a
delivery) and the worker's side of the deliveries (API.md: Events and webhooks).

The worker's side follows the outbox of the delivery app: a delivery is claimed with a lease (one
conditional UPDATE, committed), sent outside any transaction — signed anew for each attempt, POSTed
through the SSRF guard with a hard deadline and no redirects — and its outcome recorded on the row
it claimed, a retry being a new job with `run_after`. `webhooks_sweep` puts back what a dead worker
left. Delivery is at least once: a receiver deduplicates on `webhook-id`, the event's id.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import hashlib
import hmac
import json
import logging
import random
from collections.abc import Sequence

from django.conf import settings
from django.core.mail import send_mass_mail
from django.db import transaction
from django.utils import timezone

from billing import context
from billing.exceptions import InvalidTransition
from events import secrets, tasks
from events.models import PING, Event, WebhookDelivery, WebhookEndpoint
from events.services import actor_json
from events.webhook_transport import EXCHANGE_ERRORS, DeliveryRefused, post
from users.models import Actor, Membership, Role

logger = logging.getLogger(__name__)

ROTATION_OVERLAP = datetime.timedelta(hours=24)  # the old secret signs beside the new one this long
JITTER = 0.1  # each retry's delay is the schedule's, give or take 10 %
RETRY_AFTER_CAP = datetime.timedelta(hours=24)  # a receiver's Retry-After is honoured up to this
USER_AGENT = "billing-webhooks/1"
SWEEP_BATCH = 100  # deliveries per job the sweeper enqueues


# --- the endpoints' services --------------------------------------------------------------------


def _locked_endpoint(*, organization_id: int, endpoint_id: int) -> WebhookEndpoint:
    return WebhookEndpoint.objects.select_for_update().get(organization_id=organization_id, pk=endpoint_id)


@transaction.atomic
def endpoint_create(
    *, organization_id: int, url: str, events: list[str], description: str = "", enabled: bool = True
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret (returned here once, stored encrypted). Sends nothing: only
    the events recorded from now on are delivered to it."""
    secret = secrets.new_secret()
    endpoint = WebhookEndpoint(
        organization_id=organization_id,
        url=url,
        events=list(events),
        description=description,
        enabled=enabled,
        secret=secrets.encrypt(secret),
    )
    endpoint.check_fields()
    endpoint.save()
    return endpoint, secret


@transaction.atomic
def endpoint_update(*, organization_id: int, endpoint_id: int, **changes) -> WebhookEndpoint:
    """Change `url`, `events`, `description` or `enabled`. Enabling an endpoint the worker turned off
    clears why (`disabled_reason`) and its failing streak; its failed deliveries stay failed (retry
    them one by one)."""
    unknown = set(changes) - {"url", "events", "description", "enabled"}
    if unknown:
        raise TypeError(f"endpoint_update() does not change {sorted(unknown)}")
    endpoint = _locked_endpoint(organization_id=organization_id, endpoint_id=endpoint_id)
    if changes.get("enabled") and not endpoint.enabled:
        endpoint.disabled_reason, endpoint.failing_since = "", None
    for name, value in changes.items():
        setattr(endpoint, name, value)
    endpoint.check_fields()
    endpoint.save()
    return endpoint


@transaction.atomic
def endpoint_delete(*, organization_id: int, endpoint_id: int) -> None:
    """Remove an endpoint and its delivery history; a delivery being sent right now finishes, and
    its outcome is recorded nowhere."""
    _locked_endpoint(organization_id=organization_id, endpoint_id=endpoint_id).delete()


@transaction.atomic
def endpoint_rotate_secret(
    *, organization_id: int, endpoint_id: int, now: datetime.datetime | None = None
) -> tuple[WebhookEndpoint, str]:
    """A new secret (returned once); the one it replaces keeps signing beside it for
    ROTATION_OVERLAP, so receivers can switch without missing a delivery. A second rotation within
    the overlap drops the oldest secret at once: at most two sign."""
    now = now or timezone.now()
    endpoint = _locked_endpoint(organization_id=organization_id, endpoint_id=endpoint_id)
    secret = secrets.new_secret()
    endpoint.previous_secret = secrets.reencrypt(endpoint.secret)
    endpoint.previous_secret_expires_at = now + ROTATION_OVERLAP
    endpoint.secret = secrets.encrypt(secret)
    endpoint.save()
    return endpoint, secret


@transaction.atomic
def endpoint_ping(*, organization_id: int, endpoint_id: int, actor: Actor | None = None) -> WebhookDelivery:
    """Queue a `ping` event to this endpoint alone, whatever it subscribes to; its object is the
    endpoint as the API shows it. A disabled endpoint is refused (enable it first: the worker sends
    nothing to a disabled endpoint)."""
    from events.webhook_serializers import WebhookEndpointSerializer

    endpoint = _locked_endpoint(organization_id=organization_id, endpoint_id=endpoint_id)
    if not endpoint.enabled:
        raise InvalidTransition("The endpoint is disabled; enable it before sending it a ping.")
    event = Event(
        organization_id=organization_id,
        type=PING,
        object_type="webhook_endpoint",
        object_id=endpoint.pk,
        data={"object": WebhookEndpointSerializer(endpoint).data},
        actor=actor_json(actor),
        request_id=context.request_id.get(),
    )
    event.save()
    # Not `deliveries_queue`: it matches endpoints by their subscriptions, which a ping ignores.
    delivery = WebhookDelivery(organization_id=organization_id, event=event, endpoint=endpoint)
    delivery.save()
    tasks.send_webhooks.enqueue([delivery.pk])
    return delivery


@transaction.atomic
def delivery_retry(*, organization_id: int, delivery_id: int) -> WebhookDelivery:
    """Try a delivery again now, from a fresh count of attempts, with a new job: a failed one, or a
    pending one waiting for its next attempt. A delivered one is refused (the receiver has it, and
    drops a second copy as a duplicate of its `webhook-id`), as is one being sent this moment, and
    one to a disabled endpoint (enable it first)."""
    delivery = (
        WebhookDelivery.objects.select_for_update()
        .select_related("endpoint")
        .get(organization_id=organization_id, pk=delivery_id)
    )
    if delivery.status == WebhookDelivery.Status.DELIVERED:
        raise InvalidTransition("This delivery was delivered; receivers deduplicate on webhook-id.")
    if delivery.status == WebhookDelivery.Status.SENDING:
        raise InvalidTransition("This delivery is being sent right now; retry it if that attempt fails.")
    if not delivery.endpoint.enabled:
        raise InvalidTransition("The endpoint is disabled; enable it before retrying its deliveries.")
    now = timezone.now()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=WebhookDelivery.Status.PENDING,
        attempts=0,
        next_attempt_at=now,
        lease_expires_at=None,
        updated_at=now,
    )
    tasks.send_webhooks.enqueue([delivery.pk])
    delivery.refresh_from_db()
    return delivery


# --- signing -----------------------------------------------------------------------------------


def signature(secret: str, *, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under the secret's bytes (Standard Webhooks)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secrets.secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def active_secrets(endpoint: WebhookEndpoint, *, now: datetime.datetime) -> list[str]:
    """The secrets that sign now: the current one, and the previous one during its overlap."""
    active = [secrets.decrypt(endpoint.secret)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and now < expires:
        active.append(secrets.decrypt(endpoint.previous_secret))
    return active


def signed_headers(
    *, message_id: str, body: bytes, secrets_: Sequence[str], timestamp: int
) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            signature(s, message_id=message_id, timestamp=timestamp, body=body) for s in secrets_
        ),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def event_body(event: Event) -> bytes:
    from events.serializers import event_json

    return json.dumps(event_json(event), separators=(",", ":")).encode()


# --- the worker's side ---------------------------------------------------------------------------


def deliveries_send(delivery_ids: Sequence[int]) -> None:
    """The job: send each delivery (claimed one by one; one taken by another worker, or done, is
    skipped). A delivery that fails unexpectedly is logged and left to its lease (the sweeper puts
    it back), so the others of the job still go."""
    for delivery_id in delivery_ids:
        try:
            delivery_send(delivery_id)
        except Exception:
            logger.exception("webhook delivery %s: unexpected failure", delivery_id)


def delivery_send(delivery_id: int) -> str | None:
    """Claim, sign, POST and record one delivery; returns its outcome (None: not ours to send)."""
    delivery = WebhookDelivery.claim_and_get(delivery_id, related=("event", "endpoint"))
    if delivery is None:
        return None  # done, given up, leased by a live worker, or deleted with its endpoint
    endpoint = delivery.endpoint
    if not endpoint.enabled:
        return _record_failure(delivery, "endpoint disabled")
    body = event_body(delivery.event)
    now = timezone.now()
    headers = signed_headers(
        message_id=delivery.event_id,
        body=body,
        secrets_=active_secrets(endpoint, now=now),
        timestamp=int(now.timestamp()),
    )
    try:
        answer = post(endpoint.url, body, headers, timeout=settings.WEBHOOK_TIMEOUT_SECONDS)
    except DeliveryRefused as exc:
        return _record_attempt_failed(delivery, str(exc))
    except EXCHANGE_ERRORS as exc:
        return _record_attempt_failed(delivery, f"{type(exc).__name__}: {exc}")
    if 200 <= answer.status < 300:
        return _record_delivered(delivery, answer.status)
    error = f"{answer.status} {answer.reason}" + (f": {answer.excerpt}" if answer.excerpt else "")
    if answer.status == 410:
        _endpoint_disable(endpoint, "The endpoint answered 410 Gone.")
        return _record_failure(delivery, error, status_code=410)
    return _record_attempt_failed(delivery, error, status_code=answer.status, retry_after=answer.retry_after)


def _ours(delivery: WebhookDelivery):
    """The delivery's row while our claim holds it (the sweeper may have given it to another worker)."""
    return WebhookDelivery.objects.filter(
        pk=delivery.pk, status=WebhookDelivery.Status.SENDING, attempts=delivery.attempts
    )


def _record_delivered(delivery: WebhookDelivery, status_code: int) -> str:
    now = timezone.now()
    # Delivered is the truth even if our lease ran out meanwhile (whoever holds it now only delivers
    # a duplicate, with the same webhook-id).
    WebhookDelivery.objects.filter(pk=delivery.pk).exclude(status=WebhookDelivery.Status.DELIVERED).update(
        status=WebhookDelivery.Status.DELIVERED,
        delivered_at=now,
        last_status_code=status_code,
        last_error="",
        lease_expires_at=None,
        updated_at=now,
    )
    # Its failing streak ends; an endpoint that was not failing when the delivery was read is left
    # alone (a streak another worker starts meanwhile ends with the next delivery that sees it).
    if delivery.endpoint.failing_since is not None:
        WebhookEndpoint.objects.filter(pk=delivery.endpoint_id, failing_since__isnull=False).update(
            failing_since=None, updated_at=now
        )
    return WebhookDelivery.Status.DELIVERED


def _record_failure(delivery: WebhookDelivery, error: str, *, status_code: int | None = None) -> str:
    now = timezone.now()
    _ours(delivery).update(
        status=WebhookDelivery.Status.FAILED,
        last_error=error[:2000],
        last_status_code=status_code,
        lease_expires_at=None,
        updated_at=now,
    )
    logger.warning("webhook delivery %s failed for good: %s", delivery.pk, error)
    return WebhookDelivery.Status.FAILED


def _record_attempt_failed(
    delivery: WebhookDelivery, error: str, *, status_code: int | None = None, retry_after: str | None = None
) -> str:
    """A failed attempt: the endpoint's failing streak starts (or goes on; one that has lasted
    WEBHOOK_DISABLE_AFTER_SECONDS disables it, and its admins are told), and the delivery is retried
    on the schedule, or failed after its last attempt."""
    now = timezone.now()
    endpoints = WebhookEndpoint.objects.filter(pk=delivery.endpoint_id)
    endpoints.filter(failing_since__isnull=True).update(failing_since=now, updated_at=now)
    failing_since = endpoints.values_list("failing_since", flat=True).first()
    limit = datetime.timedelta(seconds=settings.WEBHOOK_DISABLE_AFTER_SECONDS)
    if failing_since is not None and now - failing_since >= limit:
        reason = f"Every delivery failed since {failing_since:%Y-%m-%d %H:%M} UTC."
        if _endpoint_disable(delivery.endpoint, reason):
            _tell_admins(delivery.endpoint, failing_since)
        return _record_failure(delivery, f"{error} (endpoint disabled)", status_code=status_code)
    delay = WebhookDelivery.retry_delay(delivery.attempts)
    if delay is None:
        return _record_failure(delivery, error, status_code=status_code)
    delay = retry_delay_with_jitter(delay, retry_after, now=now)
    with transaction.atomic():
        if _ours(delivery).update(
            status=WebhookDelivery.Status.PENDING,
            next_attempt_at=now + delay,
            last_error=error[:2000],
            last_status_code=status_code,
            lease_expires_at=None,
            updated_at=now,
        ):
            tasks.send_webhooks.using(run_after=now + delay).enqueue([delivery.pk])
    logger.info(
        "webhook delivery %s attempt %s failed, next in %s: %s", delivery.pk, delivery.attempts, delay, error
    )
    return WebhookDelivery.Status.PENDING


def retry_delay_with_jitter(
    delay: datetime.timedelta, retry_after: str | None, *, now: datetime.datetime
) -> datetime.timedelta:
    """The schedule's delay give or take JITTER (so the retries of many deliveries that failed
    together spread out), or the receiver's `Retry-After` (seconds or an HTTP date) when that is
    longer, up to RETRY_AFTER_CAP."""
    jittered = delay * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 (spread, not a secret)
    asked = _retry_after(retry_after, now=now)
    return max(jittered, min(asked, RETRY_AFTER_CAP)) if asked is not None else jittered


def _retry_after(value: str | None, *, now: datetime.datetime) -> datetime.timedelta | None:
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return datetime.timedelta(seconds=min(int(value), int(RETRY_AFTER_CAP.total_seconds())))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(when - now, datetime.timedelta(0))


def _endpoint_disable(endpoint: WebhookEndpoint, reason: str) -> bool:
    """Turn the endpoint off (the worker's doing, with why); False if it already was."""
    now = timezone.now()
    return bool(
        WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=True).update(
            enabled=False, disabled_reason=reason[:200], updated_at=now
        )
    )


def _tell_admins(endpoint: WebhookEndpoint, failing_since: datetime.datetime) -> int:
    """Email the organization's admins and owners that the endpoint was disabled; returns how many
    messages went (none without an email backend: EMAIL_URL unset)."""
    recipients = list(
        Membership.objects.filter(organization_id=endpoint.organization_id, role__in=[Role.ADMIN, Role.OWNER])
        .exclude(user__email="")
        .values_list("user__email", flat=True)
        .distinct()
    )
    if not recipients or not settings.EMAIL_CONFIGURED:
        logger.warning(
            "webhook endpoint %s disabled; no admin told (no address, or no EMAIL_URL)", endpoint.pk
        )
        return 0
    subject = f"Webhook endpoint disabled: {endpoint.url}"[:300]
    body = (
        f"The webhook endpoint {endpoint.url} (id {endpoint.pk}) has failed every delivery since "
        f"{failing_since:%Y-%m-%d %H:%M} UTC and was disabled: no more events are sent to it.\n\n"
        "Once the receiver answers again, enable the endpoint (PATCH /api/webhook-endpoints/"
        f"{endpoint.pk}/ with enabled: true) and retry the deliveries it missed "
        "(POST /api/webhook-deliveries/{id}/retry/).\n"
    )
    # One message per admin: they are not shown each other's addresses.
    messages = [(subject, body, settings.DEFAULT_FROM_EMAIL, [address]) for address in recipients]
    try:
        return send_mass_mail(messages, fail_silently=False)
    except Exception:
        logger.exception("webhook endpoint %s disabled; emailing its admins failed", endpoint.pk)
        return 0


def webhooks_sweep(*, now: datetime.datetime | None = None, limit: int = 5000) -> int:
    """Put back in the queue, with new jobs, the deliveries whose worker died (lease expired; failed
    if that was the last attempt), and the pending ones long past due (their job lost); returns
    how many. Safe anywhere, any number of times: a delivery is taken by one claim only."""
    now = now or timezone.now()
    grace = datetime.timedelta(
        seconds=max(settings.DELIVERY_TICK_SECONDS * 2, settings.WEBHOOK_LEASE_SECONDS)
    )
    Status = WebhookDelivery.Status
    requeued: list[int] = []
    expired = WebhookDelivery.objects.filter(status=Status.SENDING, lease_expires_at__lt=now)
    for pk, attempts in expired.values_list("pk", "attempts")[:limit]:
        stale = WebhookDelivery.objects.filter(pk=pk, status=Status.SENDING, lease_expires_at__lt=now)
        if WebhookDelivery.retry_delay(attempts) is None:
            stale.update(
                status=Status.FAILED,
                last_error="The worker stopped during the last attempt.",
                lease_expires_at=None,
                updated_at=now,
            )
        elif stale.update(status=Status.PENDING, next_attempt_at=now, lease_expires_at=None, updated_at=now):
            requeued.append(pk)
    lost = WebhookDelivery.objects.filter(status=Status.PENDING, next_attempt_at__lt=now - grace)
    requeued += lost.values_list("pk", flat=True)[:limit]
    for start in range(0, len(requeued), SWEEP_BATCH):
        tasks.send_webhooks.enqueue(requeued[start : start + SWEEP_BATCH])
    return len(requeued)
