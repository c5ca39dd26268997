"""Payment reminders (delivery.services.reminders_send): each (invoice, step) of the organization's
`reminder_days` at most once, however often the runs come; a missed run caught up with the latest
step due only; nothing after the invoice is paid or voided; the day in the organization's time zone.

`reminders_send(now=...)` is run as the worker's scheduler would, every hour of a simulated month,
and the emails it queues are sent by the jobs (run in-process) to a real SMTP server on 127.0.0.1.
The invoices are issued today (real time), so the simulation runs from now into the next weeks.
"""

from __future__ import annotations

import datetime
import io
import zoneinfo
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from delivery.models import OutboundEmail
from delivery.services import reminders_send
from invoices.models import Invoice
from invoices.services import invoice_void
from payments.services import payment_record
from tests.concurrency import run_concurrently
from tests.invoice_helpers import create_invoice, invoice_url
from tests.smtp_helpers import smtp_server
from tests.test_delivery_api import run_jobs
from users.services import organization_update

__all__ = ["smtp_server"]  # the fixture, imported to be used here

AUCKLAND = "Pacific/Auckland"
STEPS = [-3, 1, 7, 14]
HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
UTC = datetime.UTC


def days(n: int) -> datetime.timedelta:
    return datetime.timedelta(days=n)


def set_reminders(organization, *, zone: str = AUCKLAND, steps=STEPS) -> zoneinfo.ZoneInfo:
    organization_update(organization_id=organization.pk, time_zone=zone, reminder_days=list(steps))
    return zoneinfo.ZoneInfo(zone)


def local_midnight(day: datetime.date, zone: zoneinfo.ZoneInfo) -> datetime.datetime:
    """The instant (UTC) day `day` begins in `zone`."""
    return datetime.datetime.combine(day, datetime.time(0), tzinfo=zone).astimezone(UTC)


def issue(api, customer, due: datetime.date, **fields) -> dict:
    invoice = create_invoice(api, customer, due_date=due.isoformat(), **fields)
    response = api.post(invoice_url(invoice["id"], "send"), {"email": False}, format="json")
    assert response.status_code == 200, response.data
    return response.data


def reminder_steps(invoice_id: int) -> list[int | None]:
    return list(
        OutboundEmail.objects.filter(invoice_id=invoice_id, kind="reminder")
        .order_by("created_at", "pk")
        .values_list("reminder_step", flat=True)
    )


# --- a month of hourly runs ----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_month_of_hourly_runs_with_a_day_skipped(smtp_server, alice_org, alice_api, make_customer):
    zone = set_reminders(alice_org)
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    silent = make_customer(alice_org, name="No Address", email="")
    start = timezone.now().astimezone(UTC).replace(minute=0, second=0, microsecond=0) + HOUR
    today = timezone.localdate(timezone.now(), timezone=zone)

    def on(day: int) -> datetime.date:
        return today + days(day)

    steady = issue(alice_api, customer, on(10))  # steps on days 7, 11, 17 (skipped), 24
    paid = issue(alice_api, customer, on(5))  # days 2, 6 | paid on day 9 | 12, 19
    voided = issue(alice_api, customer, on(4))  # days 1, 5 | voided on day 8 | 11, 18
    partly = issue(alice_api, customer, on(6))  # 40.00 paid on day 1; days 3, 7, 13, 20
    no_address = issue(alice_api, silent, on(5))
    skipped_day = on(17)
    run_jobs()  # the issued PDFs

    queued_at: dict[tuple[int, int], datetime.datetime] = {}
    skipped = 0
    last = OutboundEmail.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    for hour in range(30 * 24):
        now = start + hour * HOUR
        local = now.astimezone(zone)
        if local.date() == skipped_day:
            skipped += 1
            continue  # the scheduler did not run that day
        if local.hour == 12 and local.date() == on(1):
            payment_record(
                organization=alice_org, invoice_id=partly["id"], amount=Decimal("40.00"), method="cash"
            )
        if local.hour == 12 and local.date() == on(8):
            invoice_void(organization=alice_org, invoice_id=voided["id"])
        if local.hour == 12 and local.date() == on(9):
            invoice = Invoice.objects.get(pk=paid["id"])
            payment_record(
                organization=alice_org, invoice_id=invoice.pk, amount=invoice.balance_due, method="card"
            )
        count = reminders_send(now=now)
        new = list(OutboundEmail.objects.filter(pk__gt=last).order_by("pk"))
        assert count == len(new), now
        for email in new:
            key = (email.invoice_id, email.reminder_step)
            assert key not in queued_at, f"{key} queued twice: {queued_at[key]} and {now}"
            queued_at[key] = now
            last = email.pk
        if count:
            run_jobs()
    assert skipped >= 23  # a whole day without a run (23 or 25 hours on a daylight-saving change)

    expected = {
        steady["id"]: {-3: on(7), 1: on(11), 7: on(18), 14: on(24)},  # step 7 caught up the day after
        paid["id"]: {-3: on(2), 1: on(6)},
        voided["id"]: {-3: on(1), 1: on(5)},
        partly["id"]: {-3: on(3), 1: on(7), 7: on(13), 14: on(20)},
    }
    want = {
        (invoice_id, step): local_midnight(day, zone)
        for invoice_id, steps in expected.items()
        for step, day in steps.items()
    }
    # Each step once, at the first run of its day in Auckland (the catch-up at the first after the gap).
    assert queued_at == want
    assert reminder_steps(no_address["id"]) == []
    for invoice_id, steps in expected.items():
        assert reminder_steps(invoice_id) == list(steps), invoice_id

    # Every reminder went out, exactly once, as its own message.
    reminders = list(OutboundEmail.objects.filter(kind="reminder").order_by("pk"))
    assert {r.status for r in reminders} == {"sent"}
    received = [m for m in smtp_server.messages if m["Subject"].startswith("Reminder:")]
    assert sorted(m["Message-ID"] for m in received) == sorted(r.message_id for r in reminders)
    by_id = {m["Message-ID"]: m for m in received}
    for reminder in reminders:
        message = by_id[reminder.message_id]
        assert message["To"] == "ap@acme.example"
        assert reminder.invoice.number in message["Subject"]
    # A part payment does not stop the reminders; they tell the balance left.
    after_payment = [r for r in reminders if r.invoice_id == partly["id"]]
    assert len(after_payment) == 4
    assert all("The balance due is $60.00." in r.body for r in after_payment)

    # Later runs, however many, add nothing: every step is used up, or the invoice is closed.
    for later in (start + days(31), start + days(45), start + days(400)):
        assert reminders_send(now=later) == 0


@pytest.mark.django_db
def test_missed_runs_catch_up_with_the_latest_step_due_only(alice_org, alice_api, make_customer):
    zone = set_reminders(alice_org)
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    today = timezone.localdate(timezone.now(), timezone=zone)
    invoice = issue(alice_api, customer, today + days(10))  # steps on days 7, 11, 17, 24

    # The scheduler's first run is on day 12: step -3's day and step 1's have come: step 1 only.
    assert reminders_send(now=local_midnight(today + days(12), zone) + 5 * HOUR) == 1
    assert reminder_steps(invoice["id"]) == [1]
    for day in range(12, 17):
        assert reminders_send(now=local_midnight(today + days(day), zone) + 23 * HOUR) == 0
    # Then nothing runs for ten days, over step 7's day and step 14's: step 14 only.
    assert reminders_send(now=local_midnight(today + days(27), zone)) == 1
    assert reminder_steps(invoice["id"]) == [1, 14]
    assert reminders_send(now=local_midnight(today + days(60), zone)) == 0


@pytest.mark.django_db
def test_a_step_whose_day_is_before_the_invoice_was_issued_is_never_sent(alice_org, alice_api, make_customer):
    zone = set_reminders(alice_org)
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    today = timezone.localdate(timezone.now(), timezone=zone)
    invoice = issue(alice_api, customer, today + days(2))  # step -3 was yesterday, step 1 is day 3
    assert reminders_send(now=local_midnight(today + days(1), zone)) == 0
    assert reminders_send(now=local_midnight(today + days(3), zone)) == 1
    assert reminder_steps(invoice["id"]) == [1]


# --- the organization's day ------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("zone_name", [AUCKLAND, "America/Los_Angeles", "UTC"])
def test_a_step_is_due_when_its_day_has_come_in_the_organizations_time_zone(
    alice_org, alice_api, make_customer, zone_name
):
    zone = set_reminders(alice_org, zone=zone_name, steps=[-3])
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    today = timezone.localdate(timezone.now(), timezone=zone)
    due = today + days(10)
    invoice = issue(alice_api, customer, due)
    day = due - days(3)
    begins = local_midnight(day, zone)
    utc_midnight = datetime.datetime.combine(day, datetime.time(0), tzinfo=UTC)
    if zone_name == AUCKLAND:
        # Auckland's day begins while it is still the day before in UTC: sent then, not at UTC midnight.
        assert begins.date() == day - DAY
        assert begins < utc_midnight
    elif zone_name == "America/Los_Angeles":
        # Los Angeles' day begins hours after UTC's: nothing at UTC midnight.
        assert begins > utc_midnight
        assert reminders_send(now=utc_midnight) == 0
    else:
        assert begins == utc_midnight

    assert reminders_send(now=begins - datetime.timedelta(seconds=1)) == 0
    assert reminder_steps(invoice["id"]) == []
    assert reminders_send(now=begins) == 1
    assert reminder_steps(invoice["id"]) == [-3]
    assert reminders_send(now=max(begins, utc_midnight) + HOUR) == 0


# --- concurrency -------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_queue_each_step_once(alice, alice_org, make_customer, make_invoice):
    zone = set_reminders(alice_org)
    today = timezone.localdate(timezone.now(), timezone=zone)
    due = today + days(10)
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    invoices = [make_invoice(alice_org, customer, due_date=due) for _ in range(6)]
    at = local_midnight(due - days(3), zone) + HOUR

    results = run_concurrently(lambda i: reminders_send(now=at), 8)

    assert all(isinstance(r, int) for r in results), results
    assert sum(results) == 6, results
    rows = list(OutboundEmail.objects.filter(kind="reminder").values_list("invoice_id", "reminder_step"))
    assert sorted(rows) == sorted((invoice.pk, -3) for invoice in invoices)
    # One job per row: a run that lost the race rolled its job back with its row.
    jobs = DBTaskResult.objects.filter(task_path="delivery.tasks.send_email")
    assert sorted(j.args_kwargs["args"][0] for j in jobs) == sorted(
        OutboundEmail.objects.values_list("pk", flat=True)
    )
    assert reminders_send(now=at + HOUR) == 0


# --- the command and the manual reminder ---------------------------------------------------------------


@pytest.mark.django_db
def test_send_reminders_prints_how_many_it_queued(alice_org, make_customer, make_invoice):
    zone = set_reminders(alice_org)
    today = timezone.localdate(timezone.now(), timezone=zone)
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    # Issued two days ago and due in three: step -3 is today; and one due in ten (nothing yet).
    due_soon = make_invoice(alice_org, customer, due_date=today + days(3))
    make_invoice(alice_org, customer, due_date=today + days(10))
    Invoice.objects.filter(pk=due_soon.pk).update(sent_at=timezone.now() - days(2))

    out = io.StringIO()
    call_command("send_reminders", stdout=out)
    assert out.getvalue() == "1 reminder(s) queued.\n"
    assert reminder_steps(due_soon.pk) == [-3]
    out = io.StringIO()
    call_command("send_reminders", stdout=out)
    assert out.getvalue() == "0 reminder(s) queued.\n"


@pytest.mark.django_db
def test_a_manual_reminder_does_not_use_up_a_scheduled_step(smtp_server, alice_org, alice_api, make_customer):
    zone = set_reminders(alice_org)
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    today = timezone.localdate(timezone.now(), timezone=zone)
    due = today + days(10)
    invoice = issue(alice_api, customer, due)

    manual = alice_api.post(invoice_url(invoice["id"], "remind"))
    assert manual.status_code == 202, manual.data
    assert OutboundEmail.objects.get(pk=manual.data["id"]).reminder_step is None
    at = local_midnight(due - days(3), zone)
    assert reminders_send(now=at) == 1  # step -3, as if no manual one had gone
    assert alice_api.post(invoice_url(invoice["id"], "remind")).status_code == 202  # manual ones any time
    assert reminders_send(now=at + HOUR) == 0
    assert reminders_send(now=local_midnight(due + days(1), zone)) == 1  # and step 1 after it
    assert reminder_steps(invoice["id"]) == [None, -3, None, 1]

    run_jobs()
    reminders = OutboundEmail.objects.filter(kind="reminder")
    assert {r.status for r in reminders} == {"sent"}
    assert sorted(m["Message-ID"] for m in smtp_server.messages) == sorted(r.message_id for r in reminders)
