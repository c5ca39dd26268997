"""The email outbox with real parts: a real SMTP server (aiosmtpd on 127.0.0.1, tests.smtp_helpers)
receiving what the worker sends, parsed back with the standard `email` package and the PDF with
pypdf; SMTP going down and coming back; a real `manage.py run_worker` process killed mid-send, and
one stopped with SIGTERM.

The in-process tests run the queued jobs as the worker would (tests.test_delivery_api.run_jobs); the
process tests start `manage.py run_worker` against the test database (transactional tests, so the
worker sees what the test committed), on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import datetime
import io
import os
import re
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from pypdf import PdfReader

from delivery import services
from delivery.models import Document, OutboundEmail
from tests.conftest import client_for, member_of
from tests.invoice_helpers import create_invoice, invoice_url
from tests.smtp_helpers import SmtpServer, attachments, html_part, point_django_at, smtp_server, text_part
from tests.test_delivery_api import run_jobs
from users.services import organization_update

__all__ = ["smtp_server"]  # the fixture, imported to be used here

HOSTILE = "<script>alert(1)</script> \"double\" & 'single'"
BASE_DIR = Path(django_settings.BASE_DIR)


# --- helpers ------------------------------------------------------------------------------------


def pdf_text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def squeeze(text: str) -> str:
    return " ".join(text.split())


class Markup(HTMLParser):
    """The tags, attributes and text of an HTML document, as a browser's parser reads them."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes.extend(attrs)

    def handle_data(self, data):
        self.text.append(data)


def member_api(organization):
    return client_for(member_of(organization, "mia", "member"), organization)


def send(api, invoice_id: int, body: dict | None = None) -> dict:
    response = api.post(invoice_url(invoice_id, "send"), body or {}, format="json")
    assert response.status_code == 200, response.data
    return response.data


def the_pdf(message) -> bytes:
    (attachment,) = [a for a in attachments(message) if a[1] == "application/pdf"]
    return attachment[2]


def email_jobs() -> list[DBTaskResult]:
    return list(
        DBTaskResult.objects.filter(task_path="delivery.tasks.send_email", status="READY").order_by(
            "enqueued_at"
        )
    )


# --- the invoice email, received by a real SMTP server ---------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("currency", "lines", "paid", "total", "balance"),
    [
        # 2 x 50.14 = 100.28, tax 8 % = 8.0224 -> 8.02: 108.30; 8.30 paid before the worker renders.
        (
            "USD",
            [{"description": "Design work", "quantity": "2", "unit_price": "50.14", "tax_rate": "8"}],
            "8.30",
            "$108.30",
            "$100.00",
        ),
        # 3 x 333 = 999, tax 8 % = 79.92 -> 80: 1,079 yen, no minor unit.
        (
            "JPY",
            [{"description": "Localisation", "quantity": "3", "unit_price": "333", "tax_rate": "8"}],
            None,
            "¥1,079",
            "¥1,079",
        ),
    ],
    ids=["USD", "JPY"],
)
def test_the_invoice_email_reaches_the_smtp_server_with_link_html_and_pdf(
    smtp_server, alice_org, make_customer, currency, lines, paid, total, balance
):
    organization_update(
        organization_id=alice_org.pk,
        name="Alice Studio",
        legal_name="Alice Trading Ltd",
        email="accounts@alice.example",
    )
    api = member_api(alice_org)
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    draft = create_invoice(api, customer, lines=lines, currency=currency)
    sent = send(api, draft["id"])
    number = sent["number"]
    if paid:
        paying = api.post(
            "/api/payments/", {"invoice": draft["id"], "amount": paid, "method": "cash"}, format="json"
        )
        assert paying.status_code == 201, paying.data

    run_jobs()

    (row,) = OutboundEmail.objects.filter(invoice_id=draft["id"])
    assert (row.status, row.attempts, row.last_error) == ("sent", 1, "")
    assert row.sent_at is not None
    (message,) = smtp_server.messages
    assert smtp_server.envelopes == [(django_settings.DEFAULT_FROM_EMAIL, ["ap@acme.example"])]
    assert message["Subject"] == f"Invoice {number} from Alice Trading Ltd"
    assert number in message["Subject"]
    assert message["To"] == "ap@acme.example"
    assert message["Reply-To"] == "accounts@alice.example"
    assert message["Message-ID"] == row.message_id
    assert re.fullmatch(r"<[0-9a-f]{32}@[^>]+>", row.message_id)

    hosted = f"{django_settings.PUBLIC_URL}/i/{sent['hosted_url'].rstrip('/').rsplit('/', 1)[1]}/"
    assert sent["hosted_url"].endswith(hosted.removeprefix(django_settings.PUBLIC_URL))
    text = text_part(message)
    assert hosted in text
    assert total in text
    html = html_part(message)
    assert Markup(html).attributes.count(("href", hosted)) == 1

    ((name, kind, pdf),) = attachments(message)
    assert (name, kind) == (f"{number}.pdf", "application/pdf")
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) >= 1
    content = pdf_text(pdf)
    assert number in content
    assert total in content
    assert balance in content
    # The attachment is the stored version, byte for byte.
    (document,) = Document.objects.filter(invoice_id=draft["id"])
    assert document.status == "stored"
    with document.file.open("rb") as stored:
        assert stored.read() == pdf


@pytest.mark.django_db
def test_markup_and_quotes_in_names_and_footer_are_escaped_in_html_and_kept_as_text(
    smtp_server, alice_org, alice_api, make_customer
):
    organization_update(
        organization_id=alice_org.pk, name=f"Org {HOSTILE}", invoice_footer=f"Footer {HOSTILE}"
    )
    customer = make_customer(alice_org, name=f"Customer {HOSTILE}", email="ap@acme.example")
    draft = create_invoice(alice_api, customer)
    number = send(alice_api, draft["id"])["number"]

    run_jobs()

    (message,) = smtp_server.messages
    assert message["Subject"] == f"Invoice {number} from Org {HOSTILE}"
    html = html_part(message)
    markup = Markup(html)
    assert "script" not in markup.tags
    assert not [name for name, _ in markup.attributes if name.startswith("on")]
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # What the reader sees is the text as written, markup characters and quotes included.
    seen = "".join(markup.text)
    for written in (f"Customer {HOSTILE}", f"Org {HOSTILE}", f"Footer {HOSTILE}"):
        assert written in seen, written
    text = text_part(message)
    assert f"Hello Customer {HOSTILE}," in text
    assert f"Org {HOSTILE}" in text
    assert f"Footer {HOSTILE}" in text
    assert "&lt;" not in text
    assert "&quot;" not in text
    assert "&#x27;" not in text
    # The PDF shows the names as text (markup in them is neither run nor dropped).
    content = squeeze(pdf_text(the_pdf(message)))
    assert "alert(1)" in content
    assert "<script>" in content


@pytest.mark.django_db
def test_line_breaks_in_names_never_make_headers_and_non_ascii_arrives_intact(
    smtp_server, alice_org, alice_api, make_customer
):
    # A name is one line: the API refuses a line break in one with 400 on that field ...
    hostile_org, hostile_customer = "Ærø Café\r\nBcc: spy@evil.example", "Zoë\r\nBcc: spy2@evil.example"
    response = alice_api.patch("/api/organization/", {"name": hostile_org}, format="json")
    assert response.status_code == 400
    assert list(response.json()) == ["name"]
    response = alice_api.post(
        "/api/customers/", {"name": hostile_customer, "email": "z@acme.example"}, format="json"
    )
    assert response.status_code == 400
    assert list(response.json()) == ["name"]
    # ... and one stored anyway (written past the services, an old row) still makes no header.
    type(alice_org).objects.filter(pk=alice_org.pk).update(name=hostile_org)
    customer = make_customer(alice_org, name="Zoë", email="zoe@acme.example")
    type(customer).objects.filter(pk=customer.pk).update(name=hostile_customer)
    draft = create_invoice(alice_api, customer)
    number = send(alice_api, draft["id"])["number"]

    run_jobs()

    (message,) = smtp_server.messages
    assert smtp_server.envelopes[0][1] == ["zoe@acme.example"]
    assert message.get_all("Bcc") is None
    headers = {name.lower() for name in message}  # an EmailMessage iterates over its header names
    assert headers == {
        "content-type",
        "mime-version",
        "subject",
        "from",
        "to",
        "date",
        "message-id",
        "reply-to",
    }
    # (Django 5.2 folds a long encoded subject from its first line: it decodes with a leading space.)
    assert message["Subject"].strip() == f"Invoice {number} from Ærø Café Bcc: spy@evil.example"
    assert "\n" not in message["Subject"]
    assert text_part(message).startswith("Hello Zoë\nBcc: spy2@evil.example,\n")


# --- SMTP down, then back ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_smtp_down_is_retried_with_attempts_recorded_then_sent_once_when_it_returns(
    smtp_server, settings, alice_org, alice_api, make_customer
):
    settings.DELIVERY_RETRY_SCHEDULE = [0, 0, 0, 0, 0]
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    draft = create_invoice(alice_api, customer)
    send(alice_api, draft["id"])
    row = OutboundEmail.objects.get()
    smtp_server.stop()

    for attempt in (1, 2):
        before = timezone.now()
        run_jobs()
        row.refresh_from_db()
        assert (row.status, row.attempts) == ("queued", attempt)
        assert "Connection refused" in row.last_error or "ConnectionRefusedError" in row.last_error, (
            row.last_error
        )
        assert row.lease_expires_at is None
        assert before <= row.next_attempt_at <= timezone.now()
        (job,) = email_jobs()  # the retry is a new job, to run at the next attempt
        assert job.args_kwargs["args"] == [row.pk]
        assert job.run_after == row.next_attempt_at
    assert Document.objects.get().status == "stored"  # the PDF did not need SMTP
    assert smtp_server.messages == []

    smtp_server.start()  # the same port again
    run_jobs()
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == ("sent", 3, "")
    assert [m["Message-ID"] for m in smtp_server.messages] == [row.message_id]
    # Nothing sends it again: no job left, and the sweeper finds nothing to put back.
    assert email_jobs() == []
    assert services.outbox_sweep(now=timezone.now() + datetime.timedelta(days=1)) == 0
    run_jobs()
    assert len(smtp_server.messages) == 1


@pytest.mark.django_db
def test_smtp_down_through_every_try_ends_failed_and_is_not_sent_when_it_returns(
    smtp_server, settings, alice_org, alice_api, make_customer
):
    settings.DELIVERY_RETRY_SCHEDULE = [0, 0, 0, 0, 0]
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    draft = create_invoice(alice_api, customer)
    send(alice_api, draft["id"])
    row = OutboundEmail.objects.get()
    smtp_server.stop()

    for attempt in range(1, 6):
        run_jobs()
        row.refresh_from_db()
        assert (row.status, row.attempts) == ("queued", attempt)
    run_jobs()  # the sixth try: 1 + 5 retries
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("failed", 6)
    assert "refused" in row.last_error.lower()
    assert email_jobs() == []

    smtp_server.start()
    assert services.outbox_sweep(now=timezone.now() + datetime.timedelta(days=1)) == 0
    run_jobs()
    row.refresh_from_db()
    assert row.status == "failed"
    assert smtp_server.messages == []


@pytest.mark.django_db
def test_a_retry_waits_for_its_time_on_the_default_schedule(
    smtp_server, settings, alice_org, alice_api, make_customer
):
    """A failed attempt's next one is `DELIVERY_RETRY_SCHEDULE[0]` seconds later, and its job is not
    ready for a worker before then."""
    settings.DELIVERY_RETRY_SCHEDULE = [60, 300, 900, 1800, 3600]
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    draft = create_invoice(alice_api, customer)
    send(alice_api, draft["id"])
    smtp_server.stop()
    before = timezone.now()
    run_jobs()
    row = OutboundEmail.objects.get()
    assert (row.status, row.attempts) == ("queued", 1)
    delay = (row.next_attempt_at - before).total_seconds()
    assert 60 <= delay < 70, delay
    (job,) = email_jobs()
    assert job.run_after == row.next_attempt_at
    assert not DBTaskResult.objects.ready().filter(pk=job.pk).exists()
    # Run early (a job taken anyway), the row's own time refuses it: no attempt is spent.
    smtp_server.start()
    services.email_deliver(row.pk)
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("queued", 1)
    assert smtp_server.messages == []


@pytest.mark.django_db
def test_exactly_one_message_per_outbox_row_in_the_normal_path(
    smtp_server, alice_org, alice_api, make_customer
):
    first = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    second = make_customer(alice_org, name="Globex", email="ap@globex.example")
    ids = [create_invoice(alice_api, c)["id"] for c in (first, second, first)]
    send(alice_api, ids[0])
    send(alice_api, ids[1], {"to": ["one@globex.example", "two@globex.example"]})
    send(alice_api, ids[2])
    alice_api.post(invoice_url(ids[0], "remind"))

    run_jobs()
    run_jobs()  # a second pass and a sweep find nothing more to send
    assert services.outbox_sweep(now=timezone.now() + datetime.timedelta(hours=1)) == 0
    run_jobs()

    rows = list(OutboundEmail.objects.order_by("pk"))
    assert len(rows) == 4
    assert {r.status for r in rows} == {"sent"}
    received = sorted(m["Message-ID"] for m in smtp_server.messages)
    assert received == sorted(r.message_id for r in rows)
    assert len(set(received)) == 4
    by_id = {m["Message-ID"]: m for m in smtp_server.messages}
    assert by_id[rows[1].message_id]["To"] == "one@globex.example, two@globex.example"


@pytest.mark.django_db
def test_a_lease_left_by_a_dead_worker_is_swept_back_then_failed_after_the_last_try(
    smtp_server, settings, alice_org, alice_api, make_customer
):
    """What the sweeper does with a row whose worker died (claimed, never finished): queued again
    with a new job while tries remain, `failed` when the dead attempt was the last."""
    settings.DELIVERY_RETRY_SCHEDULE = [0]  # two tries
    settings.DELIVERY_LEASE_SECONDS = 30
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    draft = create_invoice(alice_api, customer)
    send(alice_api, draft["id"])
    row = OutboundEmail.objects.get()
    DBTaskResult.objects.filter(
        task_path="delivery.tasks.send_email"
    ).delete()  # the job died with its worker
    claimed = timezone.now()
    assert OutboundEmail.claim(row.pk, now=claimed)  # a worker took it, then died
    assert not OutboundEmail.claim(row.pk, now=claimed + datetime.timedelta(seconds=29))  # its lease holds
    assert services.outbox_sweep(now=claimed + datetime.timedelta(seconds=29)) == 0
    assert services.outbox_sweep(now=claimed + datetime.timedelta(seconds=31)) == 1
    row.refresh_from_db()
    assert (row.status, row.attempts, row.lease_expires_at) == ("queued", 1, None)
    assert [j.args_kwargs["args"] for j in email_jobs()] == [[row.pk]]

    DBTaskResult.objects.filter(task_path="delivery.tasks.send_email").delete()  # died again
    again = claimed + datetime.timedelta(seconds=32)  # the clock moved on past the sweep
    assert OutboundEmail.claim(row.pk, now=again)
    assert services.outbox_sweep(now=again + datetime.timedelta(seconds=31)) == 0
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("failed", 2)
    assert row.last_error == "The worker stopped during the last attempt."
    run_jobs()
    assert smtp_server.messages == []
    # An operator's retry (the admin's action) sends it, once, with the Message-ID it always had.
    assert services.email_retry(row.pk)
    run_jobs()
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("sent", 1)
    assert [m["Message-ID"] for m in smtp_server.messages] == [row.message_id]


# --- real worker processes -------------------------------------------------------------------------


def worker_database_url() -> str:
    """DATABASE_URL of the test database (the one this test process is connected to)."""
    name = connection.settings_dict["NAME"]
    if connection.vendor == "sqlite":
        assert os.path.isabs(name), name
        assert os.path.exists(name), name
        return f"sqlite:///{name}"
    return urlunsplit(urlsplit(os.environ["DATABASE_URL"])._replace(path=f"/{name}"))


class Worker:
    """`manage.py run_worker` in a process of its own, its output in a file."""

    def __init__(self, smtp: SmtpServer, log: Path, **env: str):
        self.log = log
        self.output = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_worker", "--interval", "0.1", "--no-startup-delay"],
            cwd=BASE_DIR,
            env={
                **os.environ,
                "DATABASE_URL": worker_database_url(),
                "EMAIL_URL": smtp.url,
                "DELIVERY_LEASE_SECONDS": "2",
                "PYTHONUNBUFFERED": "1",
                **env,
            },
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_started(self, timeout: float = 60) -> None:
        wait_until(
            lambda: "Starting worker" in self.text() or self.process.poll() is not None, timeout, "a worker"
        )
        assert self.process.poll() is None, self.text()

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.pid} still running after {timeout}s:\n{self.text()}"
            ) from None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.output.close()


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"waited {timeout}s for {what}")


def email_status(pk: int) -> str:
    return OutboundEmail.objects.values_list("status", flat=True).get(pk=pk)


@pytest.fixture
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_send_the_message_still_goes_out_with_the_same_message_id(
    smtp, settings, tmp_path, alice, alice_org, make_customer
):
    point_django_at(settings, smtp)
    api = client_for(alice)
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    draft = create_invoice(api, customer)
    number = send(api, draft["id"])["number"]
    row = OutboundEmail.objects.get()
    smtp.block_next_data()
    workers: list[Worker] = []
    try:
        # The first worker renders the PDF, then sends: the server holds its message unanswered.
        first = Worker(smtp, tmp_path / "first.log")
        workers.append(first)
        assert smtp.data_arrived.wait(90), first.text()
        assert email_status(row.pk) == "sending"
        first.signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        smtp.release()
        row.refresh_from_db()
        assert (row.status, row.attempts) == ("sending", 1)  # its lease outlives it
        assert Document.objects.get().status == "stored"

        # A new worker: its scheduler finds the expired lease, queues the row again, and sends it.
        second = Worker(smtp, tmp_path / "second.log", DELIVERY_TICK_SECONDS="1")
        workers.append(second)
        wait_until(lambda: email_status(row.pk) == "sent", 60, f"the email sent:\n{second.text()}")
        second.signal(signal.SIGTERM)
        assert second.wait(15) == 0, second.text()
    finally:
        for worker in workers:
            worker.close()

    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == ("sent", 2, "")
    # Delivered at least once: the copy the killed worker handed over, and the new worker's.
    assert len(smtp.messages) == 2
    assert {m["Message-ID"] for m in smtp.messages} == {row.message_id}
    for message in smtp.messages:
        assert message["Subject"] == f"Invoice {number} from {alice_org.name}"
        assert number in pdf_text(the_pdf(message))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_send_each_message_exactly_once(
    smtp, settings, tmp_path, alice, alice_org, make_customer
):
    point_django_at(settings, smtp)
    api = client_for(alice)
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    ids = [create_invoice(api, customer)["id"] for _ in range(6)]
    workers = [Worker(smtp, tmp_path / f"worker-{n}.log") for n in range(2)]
    try:
        for invoice_id in ids:
            send(api, invoice_id)
        wait_until(
            lambda: OutboundEmail.objects.filter(status="sent").count() == 6,
            90,
            "six emails sent:\n" + "\n".join(w.text() for w in workers),
        )
        time.sleep(1)  # room for a duplicate to arrive, if one were coming
        for worker in workers:
            worker.signal(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(15) == 0, worker.text()
    finally:
        for worker in workers:
            worker.close()
    rows = list(OutboundEmail.objects.all())
    assert {(r.status, r.attempts) for r in rows} == {("sent", 1)}
    assert sorted(m["Message-ID"] for m in smtp.messages) == sorted(r.message_id for r in rows)
    assert Document.objects.filter(status="stored").count() == 6


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_run_worker_stops_on_sigterm_at_once_when_idle_and_after_its_send_when_busy(
    smtp, settings, tmp_path, alice, alice_org, make_customer
):
    point_django_at(settings, smtp)
    idle = Worker(smtp, tmp_path / "idle.log")
    try:
        idle.wait_started()
        time.sleep(0.5)  # idle, polling
        started = time.monotonic()
        idle.signal(signal.SIGTERM)
        assert idle.wait(5) == 0, idle.text()
        assert time.monotonic() - started < 5
    finally:
        idle.close()

    api = client_for(alice)
    customer = make_customer(alice_org, name="Acme Corp", email="ap@acme.example")
    draft = create_invoice(api, customer)
    send(api, draft["id"])
    row = OutboundEmail.objects.get()
    smtp.block_next_data()
    busy = Worker(smtp, tmp_path / "busy.log")
    try:
        assert smtp.data_arrived.wait(90), busy.text()
        busy.signal(signal.SIGTERM)  # mid-send: it finishes the message, then stops
        time.sleep(0.5)
        assert busy.process.poll() is None, busy.text()
        smtp.release()
        assert busy.wait(10) == 0, busy.text()
    finally:
        busy.close()
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("sent", 1)
    assert [m["Message-ID"] for m in smtp.messages] == [row.message_id]
