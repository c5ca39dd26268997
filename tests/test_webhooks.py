"""The webhook endpoints' API (API.md: Events and webhooks): admins and owners make, change, list and
remove endpoints; the secret is shown once and stored encrypted; rotation keeps the old secret
signing for 24 hours; a ping goes to one endpoint alone; the deliveries are listed and retried.
Other roles are 403, another organization's endpoints and deliveries 404, bad input 400."""

import base64
import datetime

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from events import secrets
from events.models import PING, Event, WebhookDelivery, WebhookEndpoint
from events.services import Change, events_record
from tests.conftest import client_for, key_client, member_of
from tests.schema_helpers import assert_matches, response_schema
from tests.webhook_helpers import webhook_jobs

pytestmark = pytest.mark.django_db

ENDPOINTS = "/api/webhook-endpoints/"
FIELDS = {"id", "url", "events", "enabled", "description", "created_at"}
DELIVERY_FIELDS = {
    "id",
    "event",
    "status",
    "attempts",
    "next_attempt_at",
    "last_status_code",
    "last_error",
    "delivered_at",
}


def endpoint_url(pk, action: str | None = None) -> str:
    return f"{ENDPOINTS}{pk}/" + (f"{action}/" if action else "")


def create(client, **fields) -> dict:
    body = {"url": "https://hooks.example.com/billing", "events": ["invoice.paid"], **fields}
    response = client.post(ENDPOINTS, body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def record(organization, type_: str = "invoice.paid") -> Event:
    with transaction.atomic():
        (event,) = events_record(
            organization_id=organization.pk, changes=[Change(type=type_, object={"id": 1})]
        )
    return event


# --- create, read, change, remove ---------------------------------------------------------------------


def test_an_admin_adds_an_endpoint_and_sees_its_secret_once(alice_api):
    response = alice_api.post(
        ENDPOINTS,
        {"url": "https://hooks.example.com/billing", "events": ["invoice.paid", "payment.created"]},
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) == FIELDS | {"secret"}
    assert body["url"] == "https://hooks.example.com/billing"
    assert body["events"] == ["invoice.paid", "payment.created"]
    assert (body["enabled"], body["description"]) == (True, "")
    assert body["secret"].startswith("whsec_")
    assert len(base64.b64decode(body["secret"].removeprefix("whsec_"), validate=True)) == 32
    assert_matches(response_schema("/api/webhook-endpoints/", "post", 201), body)
    # Never again: not in the detail, not in the list.
    detail = alice_api.get(endpoint_url(body["id"])).json()
    listed = alice_api.get(ENDPOINTS).json()
    assert detail == {k: v for k, v in body.items() if k != "secret"}
    assert listed["count"] == 1
    assert listed["results"] == [detail]
    assert_matches(response_schema("/api/webhook-endpoints/", "get", 200), listed)


def test_each_endpoint_gets_its_own_secret(alice_api):
    assert create(alice_api)["secret"] != create(alice_api)["secret"]


def test_creating_an_endpoint_sends_nothing(alice_api, alice_org):
    record(alice_org)  # an event from before the endpoint
    jobs_before = DBTaskResult.objects.count()

    create(alice_api, events=["*"])

    assert WebhookDelivery.objects.count() == 0
    assert DBTaskResult.objects.count() == jobs_before


def test_the_secret_is_stored_encrypted(alice_api, settings):
    body = create(alice_api)
    secret = body["secret"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM events_webhookendpoint WHERE id = %s", [body["id"]])
        (stored,) = cursor.fetchone()

    assert secret not in stored
    assert secret.removeprefix("whsec_") not in stored
    assert secrets.decrypt(stored) == secret
    # With another key the stored value reads as nothing.
    settings.WEBHOOK_SECRET_KEYS = ["another key"]
    with pytest.raises(secrets.SecretUnreadable):
        secrets.decrypt(stored)


def test_a_new_encryption_key_goes_first_and_the_old_one_still_decrypts(settings):
    settings.WEBHOOK_SECRET_KEYS = ["old key"]
    stored = secrets.encrypt("whsec_abc")
    settings.WEBHOOK_SECRET_KEYS = ["new key", "old key"]

    moved = secrets.reencrypt(stored)

    assert secrets.decrypt(stored) == "whsec_abc"
    settings.WEBHOOK_SECRET_KEYS = ["new key"]
    assert secrets.decrypt(moved) == "whsec_abc"


def test_all_events_is_a_star_alone(alice_api):
    assert create(alice_api, events=["*"])["events"] == ["*"]


def test_description_and_enabled_may_be_given(alice_api):
    body = create(alice_api, description="Accounting sync", enabled=False)

    assert (body["description"], body["enabled"]) == ("Accounting sync", False)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("url", "ftp://hooks.example.com/"),
        ("url", "hooks.example.com/billing"),
        ("url", "javascript:alert(1)"),
        ("url", "https://user:pass@hooks.example.com/"),
        ("url", "https://token@hooks.example.com/"),
        ("url", "https://hooks.example.com/" + "a" * 2000),
        ("url", 12),
        ("url", None),
        ("events", []),
        ("events", ["invoice.exploded"]),
        ("events", [PING]),
        ("events", ["*", "invoice.paid"]),
        ("events", ["invoice.paid", "invoice.paid"]),
        ("events", "invoice.paid"),
        ("events", None),
        ("description", "x" * 501),
        ("description", 5),
        ("enabled", "yes please"),
    ],
)
def test_it_rejects_an_invalid_endpoint(alice_api, field, value):
    body = {"url": "https://hooks.example.com/billing", "events": ["invoice.paid"], field: value}

    response = alice_api.post(ENDPOINTS, body, format="json")

    assert response.status_code == 400, response.json()
    assert list(response.json()) == [field]
    assert WebhookEndpoint.objects.count() == 0


@pytest.mark.parametrize("missing", ["url", "events"])
def test_url_and_events_are_required(alice_api, missing):
    body = {"url": "https://hooks.example.com/billing", "events": ["invoice.paid"]}
    del body[missing]

    response = alice_api.post(ENDPOINTS, body, format="json")

    assert (response.status_code, list(response.json())) == (400, [missing])


def test_an_admin_changes_an_endpoint(alice_api):
    body = create(alice_api)

    response = alice_api.patch(
        endpoint_url(body["id"]),
        {"events": ["*"], "description": "All of it", "enabled": False},
        format="json",
    )

    assert response.status_code == 200, response.json()
    assert response.json() == {
        **{k: v for k, v in body.items() if k != "secret"},
        "events": ["*"],
        "description": "All of it",
        "enabled": False,
    }
    endpoint = WebhookEndpoint.objects.get(pk=body["id"])
    assert (endpoint.events, endpoint.enabled) == (["*"], False)


def test_a_patch_with_invalid_values_changes_nothing(alice_api):
    body = create(alice_api)

    response = alice_api.patch(endpoint_url(body["id"]), {"url": "ftp://x.example/"}, format="json")

    assert (response.status_code, list(response.json())) == (400, ["url"])
    assert WebhookEndpoint.objects.get(pk=body["id"]).url == body["url"]


def test_enabling_an_endpoint_the_worker_disabled_clears_why(alice_api):
    body = create(alice_api)
    WebhookEndpoint.objects.filter(pk=body["id"]).update(
        enabled=False, disabled_reason="The endpoint answered 410 Gone.", failing_since=timezone.now()
    )

    response = alice_api.patch(endpoint_url(body["id"]), {"enabled": True}, format="json")

    assert (response.status_code, response.json()["enabled"]) == (200, True)
    endpoint = WebhookEndpoint.objects.get(pk=body["id"])
    assert (endpoint.disabled_reason, endpoint.failing_since) == ("", None)


def test_an_admin_removes_an_endpoint_with_its_deliveries(alice_api, alice_org):
    body = create(alice_api, events=["*"])
    record(alice_org)

    response = alice_api.delete(endpoint_url(body["id"]))

    assert response.status_code == 204
    assert not WebhookEndpoint.objects.filter(pk=body["id"]).exists()
    assert WebhookDelivery.objects.count() == 0
    assert Event.objects.count() == 1  # the event itself stays
    assert alice_api.get(endpoint_url(body["id"])).status_code == 404


# --- the secret's rotation ---------------------------------------------------------------------------------


def test_rotating_returns_a_new_secret_and_keeps_the_old_one_for_24_hours(alice_api):
    body = create(alice_api)
    before = timezone.now()

    response = alice_api.post(endpoint_url(body["id"], "rotate-secret"))

    assert response.status_code == 200, response.json()
    rotated = response.json()
    assert set(rotated) == FIELDS | {"secret"}
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != body["secret"]
    assert_matches(response_schema("/api/webhook-endpoints/{id}/rotate-secret/", "post", 200), rotated)
    endpoint = WebhookEndpoint.objects.get(pk=body["id"])
    assert secrets.decrypt(endpoint.secret) == rotated["secret"]
    assert secrets.decrypt(endpoint.previous_secret) == body["secret"]
    overlap = endpoint.previous_secret_expires_at - before
    assert datetime.timedelta(hours=24) <= overlap < datetime.timedelta(hours=24, seconds=5)


def test_a_second_rotation_drops_the_oldest_secret(alice_api):
    body = create(alice_api)
    second = alice_api.post(endpoint_url(body["id"], "rotate-secret")).json()["secret"]

    third = alice_api.post(endpoint_url(body["id"], "rotate-secret")).json()["secret"]

    endpoint = WebhookEndpoint.objects.get(pk=body["id"])
    assert secrets.decrypt(endpoint.secret) == third
    assert secrets.decrypt(endpoint.previous_secret) == second


# --- the ping ---------------------------------------------------------------------------------------


def test_a_test_queues_a_ping_to_that_endpoint_alone(alice_api, alice_org):
    body = create(alice_api, events=["invoice.paid"])
    other = create(alice_api, events=["*"])

    response = alice_api.post(endpoint_url(body["id"], "test"))

    assert response.status_code == 202, response.json()
    (delivery,) = WebhookDelivery.objects.all()
    assert delivery.endpoint_id == body["id"]
    assert response.json() == {
        "id": delivery.pk,
        "event": delivery.event_id,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": response.json()["next_attempt_at"],
        "last_status_code": None,
        "last_error": "",
        "delivered_at": None,
    }
    event = delivery.event
    assert (event.type, event.organization_id, event.object_id) == (PING, alice_org.pk, body["id"])
    assert event.data == {"object": {k: v for k, v in body.items() if k != "secret"}}
    assert event.actor["type"] == "user"
    assert webhook_jobs() == [[delivery.pk]]
    assert not WebhookDelivery.objects.filter(endpoint_id=other["id"]).exists()


def test_a_disabled_endpoint_is_not_pinged(alice_api):
    body = create(alice_api, enabled=False)

    response = alice_api.post(endpoint_url(body["id"], "test"))

    assert (response.status_code, response.json()["code"]) == (409, "invalid_transition")
    assert WebhookDelivery.objects.count() == 0


# --- deliveries ----------------------------------------------------------------------------------


def test_the_deliveries_are_listed_newest_first_paginated_with_sending_as_pending(alice_api, alice_org):
    body = create(alice_api, events=["*"])
    other = create(alice_api, events=["*"])
    events = [record(alice_org) for _ in range(3)]
    ours = WebhookDelivery.objects.filter(endpoint_id=body["id"])
    ours.filter(event=events[0]).update(
        status="delivered", attempts=1, last_status_code=204, delivered_at=timezone.now()
    )
    ours.filter(event=events[1]).update(status="sending", attempts=2)
    ours.filter(event=events[2]).update(
        status="failed", attempts=10, last_status_code=500, last_error="500 oops"
    )

    response = alice_api.get(endpoint_url(body["id"], "deliveries") + "?page_size=2")

    assert response.status_code == 200, response.json()
    page = response.json()
    assert page["count"] == 3
    assert page["next"] is not None
    assert_matches(response_schema("/api/webhook-endpoints/{id}/deliveries/", "get", 200), page)
    rows = page["results"] + alice_api.get(page["next"]).json()["results"]
    assert [row["event"] for row in rows] == [e.id for e in reversed(events)]
    assert all(set(row) == DELIVERY_FIELDS for row in rows)
    assert [(row["status"], row["attempts"], row["last_status_code"]) for row in rows] == [
        ("failed", 10, 500),
        ("pending", 2, None),
        ("delivered", 1, 204),
    ]
    assert rows[0]["next_attempt_at"] is None
    assert rows[1]["next_attempt_at"] is not None
    assert rows[2]["delivered_at"] is not None
    assert alice_api.get(endpoint_url(other["id"], "deliveries")).json()["count"] == 3


def test_a_failed_delivery_is_retried_now_from_a_fresh_count_with_a_new_job(alice_api, alice_org):
    body = create(alice_api, events=["*"])
    record(alice_org)
    delivery = WebhookDelivery.objects.get()
    DBTaskResult.objects.all().delete()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="failed", attempts=10, last_error="500 oops")

    response = alice_api.post(f"/api/webhook-deliveries/{delivery.pk}/retry/")

    assert response.status_code == 202, response.json()
    assert (response.json()["status"], response.json()["attempts"]) == ("pending", 0)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 0)
    assert delivery.next_attempt_at <= timezone.now()
    assert webhook_jobs() == [[delivery.pk]]
    assert body["id"] == delivery.endpoint_id


def test_a_pending_delivery_waiting_for_its_next_attempt_is_retried_now(alice_api, alice_org):
    create(alice_api, events=["*"])
    record(alice_org)
    delivery = WebhookDelivery.objects.get()
    later = timezone.now() + datetime.timedelta(hours=5)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(attempts=6, next_attempt_at=later)

    response = alice_api.post(f"/api/webhook-deliveries/{delivery.pk}/retry/")

    assert response.status_code == 202
    delivery.refresh_from_db()
    assert delivery.attempts == 0
    assert delivery.next_attempt_at <= timezone.now()


@pytest.mark.parametrize(("status", "enabled"), [("delivered", True), ("sending", True), ("failed", False)])
def test_it_refuses_to_retry_a_delivered_or_sending_delivery_or_one_to_a_disabled_endpoint(
    alice_api, alice_org, status, enabled
):
    body = create(alice_api, events=["*"])
    record(alice_org)
    delivery = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status=status, attempts=1)
    WebhookEndpoint.objects.filter(pk=body["id"]).update(enabled=enabled)
    jobs = webhook_jobs()

    response = alice_api.post(f"/api/webhook-deliveries/{delivery.pk}/retry/")

    assert (response.status_code, response.json()["code"]) == (409, "invalid_transition")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (status, 1)
    assert webhook_jobs() == jobs


# --- roles and organizations ----------------------------------------------------------------------


def _every_request(client, endpoint_id: int, delivery_id: int) -> dict[str, int]:
    calls = {
        "GET list": lambda: client.get(ENDPOINTS),
        "POST list": lambda: client.post(
            ENDPOINTS, {"url": "https://x.example.com/", "events": ["*"]}, format="json"
        ),
        "GET detail": lambda: client.get(endpoint_url(endpoint_id)),
        "PATCH detail": lambda: client.patch(endpoint_url(endpoint_id), {"description": "x"}, format="json"),
        "POST rotate-secret": lambda: client.post(endpoint_url(endpoint_id, "rotate-secret")),
        "POST test": lambda: client.post(endpoint_url(endpoint_id, "test")),
        "GET deliveries": lambda: client.get(endpoint_url(endpoint_id, "deliveries")),
        "POST retry": lambda: client.post(f"/api/webhook-deliveries/{delivery_id}/retry/"),
        "DELETE detail": lambda: client.delete(endpoint_url(endpoint_id)),
    }
    return {name: call().status_code for name, call in calls.items()}


@pytest.fixture
def alices_endpoint(alice_org):
    """One endpoint of Alice's with a failed delivery (which may be retried)."""
    from events.webhooks import endpoint_create

    endpoint, _ = endpoint_create(
        organization_id=alice_org.pk, url="https://hooks.example.com/", events=["*"]
    )
    record(alice_org)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="failed")
    return endpoint, delivery


@pytest.mark.parametrize("role", ["viewer", "member"])
@pytest.mark.parametrize("kind", ["member token", "api key"])
def test_viewers_and_members_may_not_touch_webhooks(alice_org, alices_endpoint, role, kind):
    endpoint, delivery = alices_endpoint
    if kind == "member token":
        client = client_for(member_of(alice_org, f"a-{role}", role), alice_org)
    else:
        client, _ = key_client(alice_org, role=role)
    before = list(WebhookEndpoint.objects.values()), list(WebhookDelivery.objects.values())

    statuses = _every_request(client, endpoint.pk, delivery.pk)

    assert statuses == dict.fromkeys(statuses, 403)
    assert (list(WebhookEndpoint.objects.values()), list(WebhookDelivery.objects.values())) == before


@pytest.mark.parametrize("kind", ["admin token", "owner token", "admin api key"])
def test_admins_and_owners_may(alice, alice_org, alices_endpoint, kind):
    endpoint, delivery = alices_endpoint
    if kind == "owner token":
        client = client_for(alice)
    elif kind == "admin token":
        client = client_for(member_of(alice_org, "an-admin", "admin"), alice_org)
    else:
        client, _ = key_client(alice_org, role="admin")

    statuses = _every_request(client, endpoint.pk, delivery.pk)

    assert statuses == {
        "GET list": 200,
        "POST list": 201,
        "GET detail": 200,
        "PATCH detail": 200,
        "POST rotate-secret": 200,
        "POST test": 202,
        "GET deliveries": 200,
        "POST retry": 202,
        "DELETE detail": 204,
    }


def test_another_organizations_endpoints_and_deliveries_are_404(bob_api, alice_org, alices_endpoint):
    endpoint, delivery = alices_endpoint
    before = list(WebhookEndpoint.objects.values()), list(WebhookDelivery.objects.values())

    statuses = _every_request(bob_api, endpoint.pk, delivery.pk)
    listed = bob_api.get(ENDPOINTS).json()

    assert {name: status for name, status in statuses.items() if "list" not in name} == {
        "GET detail": 404,
        "PATCH detail": 404,
        "POST rotate-secret": 404,
        "POST test": 404,
        "GET deliveries": 404,
        "POST retry": 404,
        "DELETE detail": 404,
    }
    assert listed["count"] == 1  # Bob's own, made by "POST list"
    assert WebhookEndpoint.objects.filter(organization=alice_org).count() == 1
    assert list(WebhookDelivery.objects.values()) == before[1]


def test_an_endpoint_id_that_cannot_be_one_is_404(alice_api):
    assert alice_api.get(endpoint_url("abc")).status_code == 404
    assert alice_api.post(f"/api/webhook-deliveries/{2**63}/retry/").status_code == 404


# --- the admin ------------------------------------------------------------------------------------


def test_the_admin_lists_events_read_only_searchable_by_object_id_and_organization(alice_org, bob_org):
    from tests.admin_helpers import operator_client

    ours = record(alice_org)
    with transaction.atomic():
        events_record(organization_id=bob_org.pk, changes=[Change(type="invoice.sent", object={"id": 99})])
    operator = operator_client()

    listed = operator.get("/admin/events/event/")
    by_object = operator.get("/admin/events/event/?q=1")
    by_words = operator.get("/admin/events/event/?q=alice")
    by_type = operator.get("/admin/events/event/?type__exact=invoice.sent")
    page = operator.get(f"/admin/events/event/{ours.pk}/change/")

    assert listed.status_code == 200
    assert [e.pk for e in by_object.context["cl"].result_list] == [ours.pk]
    assert [e.pk for e in by_words.context["cl"].result_list] == [ours.pk]
    assert [e.type for e in by_type.context["cl"].result_list] == ["invoice.sent"]
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert operator.post(f"/admin/events/event/{ours.pk}/delete/").status_code == 403
    assert Event.objects.filter(pk=ours.pk).exists()


def test_the_admin_endpoint_page_never_shows_a_secret_and_links_its_deliveries(alice_api):
    from tests.admin_helpers import operator_client

    body = create(alice_api, events=["*"])
    rotated = alice_api.post(endpoint_url(body["id"], "rotate-secret")).json()
    endpoint = WebhookEndpoint.objects.get(pk=body["id"])
    operator = operator_client()

    page = operator.get(f"/admin/events/webhookendpoint/{endpoint.pk}/change/").content.decode()
    listed = operator.get("/admin/events/webhookendpoint/").content.decode()

    for shown in (page, listed):
        for secret in (body["secret"], rotated["secret"], endpoint.secret, endpoint.previous_secret):
            assert secret not in shown
    assert f"/admin/events/webhookdelivery/?endpoint__id__exact={endpoint.pk}" in page
    assert 'name="_save"' not in page


def test_the_admin_disables_and_enables_endpoints_through_the_service(alice_api):
    from tests.admin_helpers import operator_client

    body = create(alice_api)
    WebhookEndpoint.objects.filter(pk=body["id"]).update(failing_since=timezone.now())
    operator = operator_client()
    url = "/admin/events/webhookendpoint/"

    operator.post(url, {"action": "disable", "_selected_action": [body["id"]]})
    disabled = WebhookEndpoint.objects.get(pk=body["id"]).enabled
    operator.post(url, {"action": "enable", "_selected_action": [body["id"]]})

    endpoint = WebhookEndpoint.objects.get(pk=body["id"])
    assert disabled is False
    assert (endpoint.enabled, endpoint.failing_since) == (True, None)


def test_the_admin_retries_deliveries_through_the_service_and_says_what_it_refused(alice_api, alice_org):
    from tests.admin_helpers import operator_client

    create(alice_api, events=["*"])
    failed, delivered = record(alice_org), record(alice_org)
    WebhookDelivery.objects.filter(event=failed).update(status="failed", attempts=10)
    WebhookDelivery.objects.filter(event=delivered).update(status="delivered", attempts=1)
    ids = list(WebhookDelivery.objects.values_list("pk", flat=True))
    DBTaskResult.objects.all().delete()

    response = operator_client().post(
        "/admin/events/webhookdelivery/", {"action": "retry", "_selected_action": ids}, follow=True
    )

    messages = [str(m) for m in response.context["messages"]]
    assert "1 delivery(ies) queued again." in messages
    assert any(m.startswith("Not retried: ") and "was delivered" in m for m in messages)
    retried = WebhookDelivery.objects.get(event=failed)
    assert (retried.status, retried.attempts) == ("pending", 0)
    assert webhook_jobs() == [[retried.pk]]
    assert WebhookDelivery.objects.get(event=delivered).status == "delivered"


@pytest.mark.parametrize(
    ("url", "events"),
    [
        ("ftp://example.com/hooks", ["*"]),
        ("https://user:pass@example.com/hooks", ["*"]),
        ("https://example.com/hooks", []),
        ("https://example.com/hooks", ["*", "invoice.paid"]),
        ("https://example.com/hooks", ["invoice.exploded"]),
        ("https://example.com/hooks", ["invoice.paid", "invoice.paid"]),
    ],
)
def test_the_endpoint_rules_hold_in_the_service_whoever_calls_it(alice_org, url, events):
    from billing.exceptions import BusinessRuleViolation
    from events.models import WebhookEndpoint
    from events.webhooks import endpoint_create

    with pytest.raises(BusinessRuleViolation):
        endpoint_create(organization_id=alice_org.pk, url=url, events=events)
    assert not WebhookEndpoint.objects.exists()
