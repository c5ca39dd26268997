"""What an organization's settings change in the invoices and payments it makes: "today" is the date
in its time zone (the default issue and payment dates, the latest payment date, and what
`mark_overdue` moves), issued numbers carry its prefix and follow its own sequence, and a missing
currency or due date comes from its default currency and payment terms."""

import datetime
import logging
import zoneinfo

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from invoices.models import Invoice
from invoices.services import MarkOverdueIncomplete, invoice_mark_overdue
from tests.concurrency import run_concurrently
from tests.conftest import client_for, make_user
from tests.factories import InvoiceFactory, LinePayloadFactory, org
from tests.invoice_helpers import INVOICES, create_invoice, invoice_url, send_invoice
from users.models import Organization

pytestmark = pytest.mark.django_db

ORGANIZATION = "/api/organization/"
PAYMENTS = "/api/payments/"
AUCKLAND, LOS_ANGELES = "Pacific/Auckland", "America/Los_Angeles"
# 2026-03-11 00:30 in Auckland (NZDT, UTC+13), still 2026-03-10 04:30 in Los Angeles (PDT, UTC-7).
INSTANT = datetime.datetime(2026, 3, 10, 11, 30, tzinfo=datetime.UTC)
MARCH = {day: datetime.date(2026, 3, day) for day in range(1, 12)}


def organization_in(zone: str, name: str) -> Organization:
    """A new user's own organization, moved to `zone`."""
    organization = org(make_user(name))
    organization.time_zone = zone
    organization.save()
    return organization


def sent_due(organization: Organization, due_date: datetime.date) -> Invoice:
    return InvoiceFactory(organization=organization, issue_date=MARCH[1], due_date=due_date, sent=True)


def statuses(invoices) -> list[str]:
    return [Invoice.objects.get(pk=invoice.pk).status for invoice in invoices]


def data_statements(queries) -> list[str]:
    """The statements over the data: not the savepoints that wrap each zone's move."""
    return [q["sql"] for q in queries if "SAVEPOINT" not in q["sql"].upper()]


# --- mark_overdue: "today" is the organization's ----------------------------------------------------


def test_the_test_instant_is_a_day_apart_in_the_two_zones():
    assert INSTANT.astimezone(zoneinfo.ZoneInfo(AUCKLAND)).date() == MARCH[11]
    assert INSTANT.astimezone(zoneinfo.ZoneInfo(LOS_ANGELES)).date() == MARCH[10]


def test_mark_overdue_moves_what_is_due_before_today_in_each_organizations_zone():
    auckland, los_angeles = organization_in(AUCKLAND, "kiwi"), organization_in(LOS_ANGELES, "angeleno")
    due_yesterday_in_auckland = sent_due(auckland, MARCH[10])
    due_today_in_los_angeles = sent_due(los_angeles, MARCH[10])
    due_yesterday_in_los_angeles = sent_due(los_angeles, MARCH[9])
    due_today_in_auckland = sent_due(auckland, MARCH[11])

    assert invoice_mark_overdue(now=INSTANT) == 2

    assert statuses([due_yesterday_in_auckland, due_yesterday_in_los_angeles]) == ["overdue"] * 2
    assert statuses([due_today_in_los_angeles, due_today_in_auckland]) == ["sent"] * 2
    assert invoice_mark_overdue(now=INSTANT) == 0
    # A day later in Los Angeles, what was due there on the 10th is overdue too.
    assert invoice_mark_overdue(now=INSTANT + datetime.timedelta(days=1)) == 2
    assert statuses([due_today_in_los_angeles, due_today_in_auckland]) == ["overdue"] * 2


def test_mark_overdue_is_one_statement_per_time_zone_in_use_whatever_the_organizations():
    """One read of the zones in use, then one move per zone with its events, whatever the
    organizations in the zone: on PostgreSQL one statement (the UPDATE ... RETURNING feeding the
    history insert and the events' insert, invoices.overdue_sql); on SQLite two (the history insert,
    then the UPDATE), then the events in bulk: a read of the moved invoices, their lines, their
    payments, one INSERT of the events, one read of the webhook endpoints."""
    per_zone = 1 if connection.vendor == "postgresql" else 2 + 5
    organizations = [
        organization_in(AUCKLAND, "kiwi"),
        organization_in(AUCKLAND, "kiwi-2"),
        organization_in(LOS_ANGELES, "angeleno"),
    ]
    for organization in organizations:
        for day in (9, 10, 11):
            sent_due(organization, MARCH[day])

    with CaptureQueriesContext(connection) as queries:
        moved = invoice_mark_overdue(now=INSTANT)

    statements = data_statements(queries)
    assert len(statements) == 1 + 2 * per_zone, statements  # 3 organizations in 2 zones
    assert "time_zone" in statements[0]
    assert moved == 2 + 2 + 1  # Auckland: due the 9th and the 10th; Los Angeles: the 9th

    # Three more organizations in the same two zones: the same statements.
    for name, zone in (("kiwi-3", AUCKLAND), ("angeleno-2", LOS_ANGELES), ("angeleno-3", LOS_ANGELES)):
        sent_due(organization_in(zone, name), MARCH[1])
    with CaptureQueriesContext(connection) as queries:
        assert invoice_mark_overdue(now=INSTANT) == 3
    assert len(data_statements(queries)) == 1 + 2 * per_zone


def _refuse_updates_of(organization_id: int) -> None:
    """Make the database refuse any UPDATE of the organization's invoices (as a corrupt row or a
    failing trigger would); undone with the test's transaction."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION test_refuse_zone() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'refused for the test'; END $$"
            )
            cursor.execute(
                "CREATE TRIGGER test_refuse_zone BEFORE UPDATE ON invoices_invoice FOR EACH ROW "
                f"WHEN (NEW.organization_id = {int(organization_id)}) EXECUTE FUNCTION test_refuse_zone()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER test_refuse_zone BEFORE UPDATE ON invoices_invoice "
                f"WHEN NEW.organization_id = {int(organization_id)} "
                "BEGIN SELECT RAISE(ABORT, 'refused for the test'); END"
            )


def test_a_zone_whose_move_fails_blocks_neither_the_other_zones_nor_its_other_organizations(caplog):
    """Los Angeles comes first (zones are moved in name order): its statement fails on one
    organization's rows; that zone is moved again organization by organization, so its other
    organization's invoices move, and Auckland's move after it as if nothing had happened."""
    failing = organization_in(LOS_ANGELES, "angeleno")
    neighbour = organization_in(LOS_ANGELES, "angeleno-2")
    elsewhere = organization_in(AUCKLAND, "kiwi")
    invoices = [sent_due(organization, MARCH[9]) for organization in (failing, neighbour, elsewhere)]
    _refuse_updates_of(failing.pk)

    with (
        caplog.at_level(logging.ERROR, logger="invoices.services"),
        pytest.raises(MarkOverdueIncomplete) as incomplete,
    ):
        invoice_mark_overdue(now=INSTANT)

    assert (incomplete.value.moved, incomplete.value.failed_organization_ids) == (2, [failing.pk])
    assert statuses(invoices) == ["sent", "overdue", "overdue"]
    assert f"time zone '{LOS_ANGELES}' failed" in caplog.text
    assert f"organization {failing.pk} could not be moved" in caplog.text
    assert f"time zone '{AUCKLAND}'" not in caplog.text


# --- numbers: the organization's prefix and its own sequence -------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_sends_in_each_of_two_organizations_number_each_with_its_prefix():
    """40 sends at once, 20 in each organization: each organization's numbers are exactly its prefix
    and 000001..000020 (the sends of one organization queue on its sequence's row lock, and those of
    the other do not wait for them). Changing the prefix later keeps the sequence."""
    acme, globex = make_user("acme-owner"), make_user("globex-owner")
    prefixes = {acme: "ACME-", globex: "GLX/2026/"}
    for user, prefix in prefixes.items():
        response = client_for(user).patch(ORGANIZATION, {"invoice_prefix": prefix}, format="json")
        assert response.status_code == 200, response.content
    work = [
        (client_for(user), InvoiceFactory(organization=org(user)).pk) for user in prefixes for _ in range(20)
    ]

    responses = run_concurrently(lambda i: work[i][0].post(invoice_url(work[i][1], "send")), len(work))

    assert [r.status_code for r in responses] == [200] * 40, [
        r.content for r in responses if r.status_code != 200
    ]
    for user, prefix in prefixes.items():
        numbers = sorted(Invoice.objects.filter(organization=org(user)).values_list("number", flat=True))
        assert numbers == [f"{prefix}{n:06d}" for n in range(1, 21)]
    assert sorted(r.json()["number"] for r in responses) == sorted(
        f"{prefix}{n:06d}" for prefix in prefixes.values() for n in range(1, 21)
    )

    api = client_for(acme)
    assert api.patch(ORGANIZATION, {"invoice_prefix": "AC/2027-"}, format="json").status_code == 200
    later = InvoiceFactory(organization=org(acme))
    assert send_invoice(api, later.pk)["number"] == "AC/2027-000021"
    assert Invoice.objects.filter(organization=org(acme), number__startswith="ACME-").count() == 20


# --- defaults by the organization's settings, through the API ------------------------------------


def zone_on_another_date_than_utc() -> str:
    """A time zone whose date now is not UTC's: UTC+14 (already tomorrow from 10:00 UTC) or UTC-11
    (still yesterday until 11:00 UTC), whichever is further from its own midnight, so that the
    date cannot change there while a test runs."""
    now = datetime.datetime.now(datetime.UTC)
    best, margin = None, datetime.timedelta(0)
    for zone in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):
        local = now.astimezone(zoneinfo.ZoneInfo(zone))
        if local.date() == now.date():
            continue
        since = datetime.datetime.combine(local.date(), datetime.time(), local.tzinfo)
        to_midnight = min(local - since, since + datetime.timedelta(days=1) - local)
        if to_midnight > margin:
            best, margin = zone, to_midnight
    assert best is not None
    return best


def today_in(zone: str) -> datetime.date:
    return datetime.datetime.now(zoneinfo.ZoneInfo(zone)).date()


@pytest.fixture
def far_organization(alice):
    """alice's organization, in a zone whose date differs from UTC's, with settings of its own."""
    organization = org(alice)
    organization.time_zone = zone_on_another_date_than_utc()
    organization.default_currency = "JPY"
    organization.payment_terms_days = 45
    organization.save()
    return organization


def test_a_new_invoice_takes_the_organizations_currency_today_and_payment_terms(
    alice_api, alice_customer, far_organization
):
    zone = far_organization.time_zone
    before = today_in(zone)
    response = alice_api.post(
        INVOICES,
        {"customer": alice_customer.pk, "lines": [LinePayloadFactory(unit_price="1250")]},
        format="json",
    )
    after = today_in(zone)

    assert response.status_code == 201, response.json()
    body = response.json()
    issue_date = datetime.date.fromisoformat(body["issue_date"])
    assert issue_date in {before, after}
    assert issue_date != datetime.datetime.now(datetime.UTC).date()  # not the server's (UTC) today
    assert body["due_date"] == (issue_date + datetime.timedelta(days=45)).isoformat()
    assert body["currency"] == "JPY"
    invoice = Invoice.objects.get(pk=body["id"])
    assert (invoice.issue_date, invoice.currency) == (issue_date, "JPY")


def test_given_values_win_over_the_organizations_defaults(alice_api, alice_customer, far_organization):
    body = create_invoice(
        alice_api, alice_customer, currency="EUR", issue_date="2026-03-01", due_date="2026-03-05"
    )

    assert (body["currency"], body["issue_date"], body["due_date"]) == ("EUR", "2026-03-01", "2026-03-05")
    # An issue date given without a due date: the terms count from it.
    response = alice_api.post(
        INVOICES, {"customer": alice_customer.pk, "issue_date": "2026-03-01"}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["due_date"] == "2026-04-15"


@pytest.fixture
def sent_invoice(alice, far_organization):
    return InvoiceFactory(organization=far_organization, issue_date=datetime.date(2026, 1, 1), sent=True)


def pay(api, invoice, **fields):
    return api.post(
        PAYMENTS, {"invoice": invoice.pk, "amount": "1", "method": "card", **fields}, format="json"
    )


def test_a_payment_is_dated_today_in_the_organizations_zone_by_default(
    alice_api, sent_invoice, far_organization
):
    zone = far_organization.time_zone
    before = today_in(zone)
    response = pay(alice_api, sent_invoice)
    after = today_in(zone)

    assert response.status_code == 201, response.json()
    paid_at = datetime.date.fromisoformat(response.json()["paid_at"])
    assert paid_at in {before, after}
    assert paid_at != datetime.datetime.now(datetime.UTC).date()


def test_a_payment_may_be_dated_today_in_the_organizations_zone_but_not_tomorrow(
    alice_api, sent_invoice, far_organization
):
    """In a zone ahead of UTC its today is UTC's tomorrow, and is accepted; in one behind it, UTC's
    today is its tomorrow, and is refused: the organization's date decides, not the server's."""
    zone = far_organization.time_zone
    local_today = today_in(zone)
    utc_today = datetime.datetime.now(datetime.UTC).date()
    assert local_today != utc_today

    tomorrow = pay(alice_api, sent_invoice, paid_at=(local_today + datetime.timedelta(days=1)).isoformat())
    assert tomorrow.status_code == 400
    assert tomorrow.json() == {"paid_at": ["A payment cannot be dated in the future."]}
    assert pay(alice_api, sent_invoice, paid_at=local_today.isoformat()).status_code == 201
    utc = pay(alice_api, sent_invoice, paid_at=utc_today.isoformat())
    assert utc.status_code == (201 if utc_today < local_today else 400)
    sent_invoice.refresh_from_db()
    assert sent_invoice.amount_paid == (2 if utc_today < local_today else 1)
