"""Webhook delivery, against a real receiver on 127.0.0.1 (tests/webhook_helpers.py) that checks
every request with the `standardwebhooks` library: signing (and two signatures during a secret
rotation), retries on the schedule with Retry-After, 410 and three days of failures disabling the
endpoint (with an email to the admins), the SSRF guard, the sweeper."""

import datetime
import json
import socket

import pytest
from django.core import mail
from django.db import transaction
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from events import webhook_transport, webhooks
from events.models import Event, WebhookDelivery, WebhookEndpoint
from events.serializers import event_json
from events.services import Change, events_record
from events.webhook_transport import DeliveryRefused, address_allowed
from events.webhooks import (
    endpoint_create,
    endpoint_rotate_secret,
    retry_delay_with_jitter,
    webhooks_sweep,
)
from tests.conftest import member_of
from tests.webhook_helpers import Receiver, Reply, run_webhook_jobs, run_webhook_jobs_once, webhook_jobs

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _compressed_schedule(settings):
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True  # the receiver is on 127.0.0.1
    settings.WEBHOOK_RETRY_SCHEDULE = [0, 0, 0]
    settings.WEBHOOK_TIMEOUT_SECONDS = 1


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


@pytest.fixture
def endpoint(alice_org, receiver):
    """Alice's endpoint at the receiver, subscribed to everything, and its secret."""
    endpoint, secret = endpoint_create(organization_id=alice_org.pk, url=receiver.url, events=["*"])
    endpoint.plain_secret = secret
    return endpoint


def record(organization, type_="invoice.paid", **object_fields) -> Event:
    with transaction.atomic():
        (event,) = events_record(
            organization_id=organization.pk,
            changes=[Change(type=type_, object={"id": 7, "number": "INV-0007", **object_fields})],
        )
    return event


def delivery_of(event: Event) -> WebhookDelivery:
    return WebhookDelivery.objects.get(event=event)


# --- signing -------------------------------------------------------------------------------------


def test_a_delivery_is_the_event_as_the_api_shows_it_signed_per_standard_webhooks(
    alice_org, endpoint, receiver
):
    event = record(alice_org, number="INV-ü")

    run_webhook_jobs()

    (request,) = receiver.requests
    assert request.verify(endpoint.plain_secret) == json.loads(json.dumps(event_json(event)))
    assert request.path == "/hooks"
    assert request.headers["webhook-id"] == event.id
    assert abs(int(request.headers["webhook-timestamp"]) - request.at) < 5
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == webhooks.USER_AGENT
    assert set(json.loads(request.body)) == {
        "id",
        "type",
        "created_at",
        "data",
        "previous_attributes",
        "actor",
        "request_id",
    }
    delivery = delivery_of(event)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 1, 200)
    assert delivery.delivered_at is not None
    assert delivery.lease_expires_at is None


def test_a_delivery_signed_with_another_secret_does_not_verify(alice_org, endpoint, receiver):
    record(alice_org)
    run_webhook_jobs()

    (request,) = receiver.requests
    assert not request.verifies("whsec_" + "A" * 43 + "=")
    assert request.verifies(endpoint.plain_secret)


def test_only_subscribed_enabled_endpoints_get_an_event(alice_org, bob_org, receiver, endpoint):
    endpoint_create(organization_id=alice_org.pk, url=receiver.url + "/paid", events=["invoice.paid"])
    endpoint_create(organization_id=alice_org.pk, url=receiver.url + "/off", events=["*"], enabled=False)
    endpoint_create(organization_id=bob_org.pk, url=receiver.url + "/bob", events=["*"])

    record(alice_org, type_="invoice.sent")
    run_webhook_jobs()

    assert [r.path for r in receiver.requests] == ["/hooks"]


def test_during_a_rotation_both_secrets_sign_then_only_the_new_one(alice_org, endpoint, receiver):
    old = endpoint.plain_secret
    _, new = endpoint_rotate_secret(organization_id=alice_org.pk, endpoint_id=endpoint.pk)

    record(alice_org)
    run_webhook_jobs()
    during = receiver.requests[-1]
    # A day later the old secret has stopped signing.
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        previous_secret_expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )
    record(alice_org)
    run_webhook_jobs()
    after = receiver.requests[-1]

    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert during.verifies(old)
    assert during.verifies(new)
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    assert after.verifies(new)
    assert not after.verifies(old)


def test_the_rotation_overlap_is_24_hours(alice_org, endpoint):
    before = timezone.now()
    rotated, _ = endpoint_rotate_secret(organization_id=alice_org.pk, endpoint_id=endpoint.pk)

    overlap = rotated.previous_secret_expires_at - before
    assert datetime.timedelta(hours=24) <= overlap < datetime.timedelta(hours=24, seconds=5)


# --- retries --------------------------------------------------------------------------------------


def test_a_500_then_a_timeout_then_a_200_is_delivered_after_retries(alice_org, endpoint, receiver):
    receiver.reply(Reply(500, body=b"database down"), Reply(200, delay=2), Reply(200))
    event = record(alice_org)

    run_webhook_jobs()

    delivery = delivery_of(event)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 3, 200)
    assert len(receiver.requests) == 3
    # Every attempt is the same message, signed anew with its own timestamp.
    assert {r.headers["webhook-id"] for r in receiver.requests} == {event.id}
    assert all(r.verifies(endpoint.plain_secret) for r in receiver.requests)
    assert [r.body for r in receiver.requests] == [receiver.requests[0].body] * 3
    endpoint.refresh_from_db()
    assert endpoint.failing_since is None
    assert endpoint.enabled


def test_a_receiver_trickling_its_answer_is_cut_off_at_the_timeout(alice_org, endpoint, receiver, settings):
    import time

    settings.WEBHOOK_RETRY_SCHEDULE = []
    receiver.reply(Reply(200, trickle=0.2))  # every byte well within the timeout, the answer not
    event = record(alice_org)

    started = time.monotonic()
    run_webhook_jobs()
    took = time.monotonic() - started

    delivery = delivery_of(event)
    assert (delivery.status, delivery.last_error) == ("failed", "TimeoutError: no answer within 1 s")
    assert took < 2


def test_a_failed_attempt_records_why_and_queues_the_next_as_a_new_job(
    alice_org, endpoint, receiver, settings
):
    settings.WEBHOOK_RETRY_SCHEDULE = [300]
    receiver.reply(Reply(503, body=b"try later"))
    event = record(alice_org)
    (_first_job,) = webhook_jobs()

    run_webhook_jobs_once()

    delivery = delivery_of(event)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 1, 503)
    assert delivery.last_error == "503 Service Unavailable: try later"
    wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
    assert 270 - 5 <= wait <= 330  # 300 s give or take 10 %
    (job,) = DBTaskResult.objects.filter(task_path="events.tasks.send_webhooks", status="READY")
    assert job.args_kwargs["args"] == [[delivery.pk]]
    assert job.run_after == delivery.next_attempt_at
    endpoint.refresh_from_db()
    assert endpoint.failing_since is not None


def test_retry_after_is_honoured_when_longer_than_the_schedule(alice_org, endpoint, receiver, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = [5]
    receiver.reply(Reply(429, headers={"Retry-After": "600"}))
    event = record(alice_org)

    run_webhook_jobs_once()

    wait = (delivery_of(event).next_attempt_at - timezone.now()).total_seconds()
    assert 590 <= wait <= 600


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, 100),
        ("30", 100),  # shorter than the schedule's: the schedule's
        ("500", 500),
        ("999999", 24 * 3600),  # capped
        ("Wed, 21 Oct 2015 07:33:00 GMT", 100),  # a date in the past
        ("Wed, 21 Oct 2015 07:38:00 GMT", 300),  # an HTTP date 5 min ahead
        ("soon", 100),  # unreadable: ignored
    ],
)
def test_the_retry_delay_is_jittered_and_takes_the_longer_retry_after(header, expected):
    now = datetime.datetime(2015, 10, 21, 7, 33, tzinfo=datetime.UTC)

    delay = retry_delay_with_jitter(datetime.timedelta(seconds=100), header, now=now).total_seconds()

    if expected == 100:
        assert 90 <= delay <= 110
    else:
        assert delay == expected


def test_a_redirect_is_not_followed_and_counts_as_a_failure(alice_org, endpoint, receiver, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = []
    receiver.reply(Reply(302, headers={"Location": receiver.url + "/elsewhere"}))
    event = record(alice_org)

    run_webhook_jobs()

    assert [r.path for r in receiver.requests] == ["/hooks"]
    delivery = delivery_of(event)
    assert (delivery.status, delivery.last_status_code) == ("failed", 302)


def test_a_delivery_fails_after_its_last_attempt(alice_org, endpoint, receiver):
    receiver.reply(*[Reply(500)] * 4)
    event = record(alice_org)

    run_webhook_jobs()

    delivery = delivery_of(event)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 4, 500)
    assert len(receiver.requests) == 4
    assert webhook_jobs() == []


def test_a_410_disables_the_endpoint_and_fails_the_delivery(alice_org, endpoint, receiver):
    receiver.reply(Reply(410))
    first, second = record(alice_org), record(alice_org)

    run_webhook_jobs()

    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "The endpoint answered 410 Gone.")
    assert (delivery_of(first).status, delivery_of(first).last_status_code) == ("failed", 410)
    # The next one is not sent: the endpoint is off.
    assert (delivery_of(second).status, delivery_of(second).last_error) == ("failed", "endpoint disabled")
    assert len(receiver.requests) == 1
    assert mail.outbox == []


def test_an_endpoint_failing_for_three_days_is_disabled_and_its_admins_are_emailed(
    alice, alice_org, endpoint, receiver
):
    member_of(alice_org, "carol", "admin")
    member_of(alice_org, "dave", "member")
    member_of(alice_org, "erin", "viewer")
    since = timezone.now() - datetime.timedelta(days=3, seconds=1)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=since)
    receiver.reply(Reply(500))
    event = record(alice_org)

    run_webhook_jobs()

    endpoint.refresh_from_db()
    assert not endpoint.enabled
    assert endpoint.disabled_reason.startswith("Every delivery failed since ")
    delivery = delivery_of(event)
    assert (delivery.status, delivery.attempts) == ("failed", 1)
    assert sorted(address for message in mail.outbox for address in message.to) == [
        "alice@example.com",
        "carol@example.com",
    ]
    assert all(len(message.to) == 1 for message in mail.outbox)
    assert mail.outbox[0].subject == f"Webhook endpoint disabled: {endpoint.url}"
    assert f"/api/webhook-endpoints/{endpoint.pk}/" in mail.outbox[0].body


def test_an_endpoint_failing_for_less_than_three_days_keeps_going(alice_org, endpoint, receiver):
    since = timezone.now() - datetime.timedelta(days=2, hours=23)
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failing_since=since)
    receiver.reply(Reply(500))
    event = record(alice_org)

    run_webhook_jobs()

    endpoint.refresh_from_db()
    assert endpoint.enabled
    assert endpoint.failing_since is None
    assert delivery_of(event).status == "delivered"
    assert mail.outbox == []


# --- the SSRF guard ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 (an address refused, not bound)
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fd00::1",
        "fec0::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "::127.0.0.1",
    ],
)
def test_the_guard_refuses_loopback_private_link_local_and_reserved_addresses(address):
    import ipaddress

    assert not address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_the_guard_allows_public_addresses(address):
    import ipaddress

    assert address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hooks",
        "http://10.0.0.1:{port}/hooks",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:{port}/hooks",
        "http://localhost:{port}/hooks",
    ],
)
def test_with_private_networks_off_a_delivery_to_a_private_address_is_refused_at_connect_time(
    alice_org, receiver, settings, url
):
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False
    settings.WEBHOOK_RETRY_SCHEDULE = []
    endpoint_create(organization_id=alice_org.pk, url=url.format(port=receiver.port), events=["*"])
    event = record(alice_org)

    run_webhook_jobs()

    delivery = delivery_of(event)
    assert delivery.status == "failed"
    assert "not a public address" in delivery.last_error
    assert receiver.requests == []


@pytest.mark.parametrize("answer", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1"])
def test_a_hostname_resolving_to_a_private_address_is_refused(settings, monkeypatch, answer):
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False
    monkeypatch.setattr(webhook_transport, "resolve", lambda host, port: [answer])

    with pytest.raises(DeliveryRefused, match="not a public address"):
        webhook_transport.checked_addresses("hooks.example.com", 443)


def test_a_hostname_resolving_to_a_public_and_a_private_address_is_refused(settings, monkeypatch):
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = False
    monkeypatch.setattr(webhook_transport, "resolve", lambda host, port: ["93.184.215.14", "127.0.0.1"])

    with pytest.raises(DeliveryRefused, match=r"127\.0\.0\.1"):
        webhook_transport.checked_addresses("rebinding.example.com", 443)


def test_the_checked_address_is_the_one_connected_to_with_the_hostname_as_host(
    alice_org, receiver, monkeypatch
):
    # `hooks.example` exists nowhere (.example is reserved): only the one lookup, ours, answers for
    # it, so the request reaching the receiver shows that nothing looked the name up again.
    lookups = []

    def resolve(host, port):
        lookups.append((host, port))
        return ["127.0.0.1"]

    monkeypatch.setattr(webhook_transport, "resolve", resolve)
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        assert host != "hooks.example", "a second DNS lookup"
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    _endpoint, secret = endpoint_create(
        organization_id=alice_org.pk, url=f"http://hooks.example:{receiver.port}/in?x=1", events=["*"]
    )
    event = record(alice_org)

    run_webhook_jobs()

    (request,) = receiver.requests
    assert lookups == [("hooks.example", receiver.port)]
    assert request.headers["host"] == f"hooks.example:{receiver.port}"
    assert request.path == "/in?x=1"
    assert request.verifies(secret)
    assert delivery_of(event).status == "delivered"


def test_a_host_that_does_not_resolve_is_a_failed_attempt(alice_org, settings):
    settings.WEBHOOK_RETRY_SCHEDULE = []
    endpoint_create(organization_id=alice_org.pk, url="http://no-such-host.invalid/hooks", events=["*"])
    event = record(alice_org)

    run_webhook_jobs()

    delivery = delivery_of(event)
    assert delivery.status == "failed"
    assert "does not resolve" in delivery.last_error


# --- the worker's lease and the sweeper ------------------------------------------------------------


def test_a_delivery_leased_by_a_live_worker_is_not_sent_twice(alice_org, endpoint, receiver):
    event = record(alice_org)
    delivery = delivery_of(event)
    assert WebhookDelivery.claim(delivery.pk)  # another worker has it

    run_webhook_jobs()

    assert receiver.requests == []
    assert delivery_of(event).status == "sending"


def test_the_sweeper_puts_back_what_a_dead_worker_left_and_what_lost_its_job(alice_org, endpoint, receiver):
    dead, lost, last = record(alice_org), record(alice_org), record(alice_org)
    DBTaskResult.objects.all().delete()  # every job lost
    past = timezone.now() - datetime.timedelta(minutes=10)
    WebhookDelivery.objects.filter(event=dead).update(status="sending", attempts=1, lease_expires_at=past)
    WebhookDelivery.objects.filter(event=lost).update(next_attempt_at=past)
    WebhookDelivery.objects.filter(event=last).update(status="sending", attempts=4, lease_expires_at=past)

    swept = webhooks_sweep()
    run_webhook_jobs()

    assert swept == 2
    assert delivery_of(dead).status == "delivered"
    assert delivery_of(dead).attempts == 2
    assert delivery_of(lost).status == "delivered"
    assert (delivery_of(last).status, delivery_of(last).last_error) == (
        "failed",
        "The worker stopped during the last attempt.",
    )
    assert sorted(r.headers["webhook-id"] for r in receiver.requests) == sorted([dead.id, lost.id])
    assert webhooks_sweep() == 0


def test_the_worker_tick_sweeps_webhooks(alice_org, endpoint, receiver):
    from delivery.management.commands.run_worker import tick

    event = record(alice_org)
    DBTaskResult.objects.all().delete()
    WebhookDelivery.objects.filter(event=event).update(
        next_attempt_at=timezone.now() - datetime.timedelta(hours=1)
    )

    tick()
    run_webhook_jobs()

    assert delivery_of(event).status == "delivered"
