"""Send, remind, emails and PDFs through the API; the outbox written in the send's transaction; the
worker's side run in-process (the locmem mail backend collects what it sends)."""

from decimal import Decimal

import pytest
from django.core import mail
from django.db import transaction
from django_tasks_db.models import DBTaskResult

from delivery import services
from delivery.models import Document, OutboundEmail
from invoices.models import Invoice
from tests.conftest import client_for, member_of
from tests.factories import org
from tests.invoice_helpers import create_invoice, invoice_url

pytestmark = pytest.mark.django_db


def jobs(name: str) -> list[int]:
    """The ids the queued jobs of task `name` carry."""
    return [
        row.args_kwargs["args"][0]
        for row in DBTaskResult.objects.filter(task_path=f"delivery.tasks.{name}").order_by("enqueued_at")
    ]


def run_jobs() -> None:
    """What the worker would do with every job queued so far, in order."""
    for row in DBTaskResult.objects.filter(status="READY").order_by("enqueued_at"):
        row.task.call(*row.args_kwargs["args"])
        row.delete()


@pytest.fixture
def draft(alice_api, alice_customer):
    alice_customer.email = "ap@acme.example"
    alice_customer.save()
    return create_invoice(
        alice_api,
        alice_customer,
        currency="JPY",
        lines=[{"description": "Localisation", "quantity": "3", "unit_price": "333", "tax_rate": "8"}],
    )


def test_send_issues_and_queues_the_pdf_and_the_email_in_its_transaction(alice_api, draft):
    response = alice_api.post(invoice_url(draft["id"], "send"), format="json")
    assert response.status_code == 200, response.data
    body = response.data
    assert body["status"] == "sent"
    assert body["hosted_url"].startswith("http://testserver/i/")
    assert len(body["hosted_url"]) > 50
    assert body["pdf_url"] == f"http://testserver/api/invoices/{draft['id']}/pdf/"
    (email,) = OutboundEmail.objects.filter(invoice_id=draft["id"])
    assert (email.status, email.to) == ("queued", ["ap@acme.example"])
    # No PDF version yet: the email's worker writes version 1, renders and stores it, then sends.
    assert not Document.objects.filter(invoice_id=draft["id"]).exists()
    # One job, named by the invoice.
    assert (jobs("render_document"), jobs("send_email")) == ([], [])
    assert jobs("deliver_invoice") == [draft["id"]]
    assert "¥1,079" in email.body
    assert body["hosted_url"].replace("http://testserver", "http://127.0.0.1:8000") in email.body

    run_jobs()
    (document,) = Document.objects.filter(invoice_id=draft["id"])
    email.refresh_from_db()
    assert (document.version, document.reason, document.status, document.attempts) == (
        1,
        "issued",
        "stored",
        1,
    )
    assert len(document.sha256) == 64
    assert document.size > 1000
    assert email.status == "sent"
    assert email.attempts == 1
    (message,) = mail.outbox
    assert message.to == ["ap@acme.example"]
    assert message.extra_headers["Message-ID"] == email.message_id
    ((name, pdf, kind),) = message.attachments
    assert (name, kind) == (f"{body['number']}.pdf", "application/pdf")
    assert pdf.startswith(b"%PDF")


def test_a_rolled_back_send_leaves_no_email_no_document_and_no_job(alice_org, draft):
    def send_then_fail():
        with transaction.atomic():
            services.invoice_send_and_deliver(organization=alice_org, invoice_id=draft["id"])
            raise RuntimeError("the request failed after the send")

    with pytest.raises(RuntimeError):
        send_then_fail()
    assert Invoice.objects.get(pk=draft["id"]).status == "draft"
    assert not Document.objects.exists()
    assert not OutboundEmail.objects.exists()
    assert not DBTaskResult.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "recipients"),
    [
        ({"email": False}, 200, None),
        ({"to": ["a@b.example", "c@d.example"]}, 200, ["a@b.example", "c@d.example"]),
        ({"email": True}, 200, ["ap@acme.example"]),
        ({"email": False, "to": ["a@b.example"]}, 400, None),
        ({"to": ["not an address"]}, 400, None),
        ({"to": ["a@b.example\r\nBcc: x@evil.example"]}, 400, None),
        ({"to": []}, 400, None),
    ],
)
def test_send_body(alice_api, draft, body, status, recipients):
    response = alice_api.post(invoice_url(draft["id"], "send"), body, format="json")
    assert response.status_code == status, response.data
    sent = Invoice.objects.get(pk=draft["id"]).status == "sent"
    assert sent == (status == 200)
    emails = list(OutboundEmail.objects.values_list("to", flat=True))
    assert emails == ([recipients] if recipients else [])


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (None, None, 200),  # no body: every default (the customer's address)
        ("{}", "application/json", 200),
        ("", "application/x-www-form-urlencoded", 200),
        ("null", "application/json", 400),
        ("[]", "application/json", 400),  # empty, but not an object
        ('""', "application/json", 400),
        ("0", "application/json", 400),
    ],
)
def test_send_without_options_and_bodies_that_are_not_an_object(alice_api, draft, raw, content_type, status):
    url = invoice_url(draft["id"], "send")
    response = alice_api.post(url) if raw is None else alice_api.generic("POST", url, raw, content_type)
    assert response.status_code == status, response.content
    assert (Invoice.objects.get(pk=draft["id"]).status == "sent") == (status == 200)
    emails = list(OutboundEmail.objects.values_list("to", flat=True))
    assert emails == ([["ap@acme.example"]] if status == 200 else [])


def test_send_asking_for_email_without_an_address_is_409_and_issues_nothing(alice, alice_api, make_customer):
    invoice = create_invoice(alice_api, make_customer(alice, name="No Address", email=""))
    response = alice_api.post(invoice_url(invoice["id"], "send"), {"email": True}, format="json")
    assert (response.status_code, response.data.get("code")) == (409, "no_recipient"), response.data
    assert Invoice.objects.get(pk=invoice["id"]).status == "draft"
    # Without the question, an invoice with no address is issued without an email.
    assert alice_api.post(invoice_url(invoice["id"], "send")).status_code == 200
    assert not OutboundEmail.objects.exists()
    assert Document.objects.count() == 1


def test_remind_and_the_emails_list(alice, alice_api, draft):
    assert alice_api.post(invoice_url(draft["id"], "remind")).status_code == 409  # a draft
    alice_api.post(invoice_url(draft["id"], "send"))
    response = alice_api.post(invoice_url(draft["id"], "remind"))
    assert response.status_code == 202, response.data
    assert (response.data["kind"], response.data["status"]) == ("reminder", "queued")
    listed = alice_api.get(invoice_url(draft["id"], "emails"))
    assert [e["kind"] for e in listed.data] == ["invoice", "reminder"]
    viewer = client_for(member_of(org(alice), "vera", "viewer"), org(alice))
    assert viewer.get(invoice_url(draft["id"], "emails")).status_code == 200
    assert viewer.post(invoice_url(draft["id"], "remind")).status_code == 403


def test_another_organizations_invoice_is_404_on_every_delivery_route(bob_api, alice_api, draft):
    alice_api.post(invoice_url(draft["id"], "send"))
    for action, method in (("send", "post"), ("remind", "post"), ("emails", "get"), ("pdf", "get")):
        assert getattr(bob_api, method)(invoice_url(draft["id"], action)).status_code == 404, action


def test_the_pdf_of_a_draft_is_rendered_and_never_stored(alice_api, draft):
    response = alice_api.get(invoice_url(draft["id"], "pdf"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF")
    assert not Document.objects.exists()


def test_an_issued_pdf_not_yet_rendered_is_rendered_stored_and_then_served_as_stored(alice_api, draft):
    alice_api.post(invoice_url(draft["id"], "send"))
    first = alice_api.get(invoice_url(draft["id"], "pdf"))
    document = Document.objects.get()
    assert document.status == "stored"
    assert alice_api.get(invoice_url(draft["id"], "pdf")).getvalue() == first.getvalue()
    run_jobs()  # the worker's job finds it stored: nothing more
    assert Document.objects.count() == 1


def test_a_note_changed_on_an_issued_invoice_renders_a_new_version_and_keeps_the_old(alice_api, draft):
    alice_api.post(invoice_url(draft["id"], "send"), {"email": False}, format="json")
    run_jobs()
    assert (
        alice_api.patch(
            invoice_url(draft["id"]), {"notes": "Paid by card, thank you"}, format="json"
        ).status_code
        == 200
    )
    assert (
        alice_api.patch(
            invoice_url(draft["id"]), {"notes": "Paid by card, thank you"}, format="json"
        ).status_code
        == 200
    )
    run_jobs()
    versions = list(Document.objects.order_by("version").values_list("version", "status", "reason"))
    assert versions == [(1, "stored", "issued"), (2, "stored", "notes changed")]
    old, new = Document.objects.order_by("version")
    assert old.sha256 != new.sha256
    assert old.file.name != new.file.name


def test_the_hosted_page_needs_no_login_and_tells_nobody_else(alice_api, draft):
    sent = alice_api.post(invoice_url(draft["id"], "send")).data
    path = sent["hosted_url"].removeprefix("http://testserver")
    from rest_framework.test import APIClient

    anonymous = APIClient()
    page = anonymous.get(path)
    assert page.status_code == 200
    assert page["X-Robots-Tag"].startswith("noindex")
    assert page["Referrer-Policy"] == "no-referrer"
    assert sent["number"].encode() in page.content
    assert "¥1,079".encode() in page.content
    pdf = anonymous.get(path + "pdf/")
    assert pdf.status_code == 200
    assert pdf.content.startswith(b"%PDF")
    assert anonymous.get("/i/" + "x" * 32 + "/").status_code == 404
    assert anonymous.post(path).status_code == 405


@pytest.mark.parametrize(
    "token", ["a%00b", "%C3%A9t%C3%A9", "x" * 44, "a.b", "a%20b", "%F0%9F%92%B8"], ids=lambda t: t[:12]
)
def test_a_hosted_token_no_invoice_could_have_is_404_before_any_query(token, django_assert_num_queries):
    # A token is URL-safe base64 of at most 43 characters; any other text (a NUL, which PostgreSQL
    # cannot take in a string, other characters, a longer one) is not looked up at all.
    from rest_framework.test import APIClient

    anonymous = APIClient()
    for path in (f"/i/{token}/", f"/i/{token}/pdf/"):
        with django_assert_num_queries(0):
            assert anonymous.get(path).status_code == 404


def test_a_void_invoice_page_says_void(alice_api, draft):
    sent = alice_api.post(invoice_url(draft["id"], "send")).data
    alice_api.post(invoice_url(draft["id"], "void"))
    from rest_framework.test import APIClient

    page = APIClient().get(sent["hosted_url"].removeprefix("http://testserver"))
    assert b"VOID" in page.content


def test_a_failed_email_is_retried_on_the_schedule_then_failed(alice_api, draft, settings, monkeypatch):
    settings.DELIVERY_RETRY_SCHEDULE = [0, 0]
    alice_api.post(invoice_url(draft["id"], "send"))

    def refuse(self, messages):
        raise ConnectionRefusedError("SMTP is down")

    monkeypatch.setattr("django.core.mail.backends.locmem.EmailBackend.send_messages", refuse)
    for _ in range(3):
        run_jobs()
    email = OutboundEmail.objects.get()
    assert (email.status, email.attempts) == ("failed", 3)
    assert "SMTP is down" in email.last_error
    assert services.email_retry(email.pk)
    monkeypatch.undo()
    run_jobs()
    email.refresh_from_db()
    assert (email.status, email.attempts) == ("sent", 1)
    assert len(mail.outbox) == 1


def test_a_send_without_an_email_has_its_pdf_rendered_by_its_job(alice_api, draft):
    alice_api.post(invoice_url(draft["id"], "send"), {"email": False}, format="json")
    (document,) = Document.objects.all()
    assert jobs("deliver_invoice") == [draft["id"]]
    assert (jobs("render_document"), jobs("send_email")) == ([], [])
    run_jobs()
    document.refresh_from_db()
    assert document.status == "stored"


def test_an_email_waits_for_the_pdf_another_worker_is_rendering_instead_of_rendering_it_too(
    alice_api, draft, monkeypatch
):
    renders = []
    render_pdf = services.documents.render_pdf
    monkeypatch.setattr(
        services.documents, "render_pdf", lambda *a, **k: renders.append(a[0].pk) or render_pdf(*a, **k)
    )
    alice_api.post(invoice_url(draft["id"], "send"))
    email = OutboundEmail.objects.get()
    # Another worker (the email's job run twice, or a request for the PDF) has written version 1
    # and renders it.
    document = services._claim_first_version(services._invoice_for_rendering(draft["id"]))

    run_jobs()  # the email's job
    email.refresh_from_db()
    document.refresh_from_db()
    # Back in the queue until that worker's lease ends, not counted as an attempt, no render of its own.
    assert (email.status, email.attempts, email.next_attempt_at) == ("queued", 0, document.lease_expires_at)
    assert renders == []
    (waiting,) = DBTaskResult.objects.filter(status="READY")
    assert (waiting.task_path, waiting.run_after) == ("delivery.tasks.send_email", document.lease_expires_at)
    assert not mail.outbox

    services._store(document, render_pdf(services._invoice_for_rendering(document.invoice_id)))
    OutboundEmail.objects.filter(pk=email.pk).update(next_attempt_at=document.created_at)  # time passes
    run_jobs()
    email.refresh_from_db()
    assert (email.status, email.attempts) == ("sent", 1)
    assert renders == []  # the stored version went out
    ((_, pdf, _),) = mail.outbox[0].attachments
    with Document.objects.get().file.open("rb") as stored:
        assert pdf == stored.read()


def test_without_an_email_backend_the_emails_job_still_renders_the_pdf(alice_api, draft, settings):
    alice_api.post(invoice_url(draft["id"], "send"))
    settings.EMAIL_CONFIGURED = False
    run_jobs()
    assert Document.objects.get().status == "stored"
    assert OutboundEmail.objects.get().status == "queued"
    assert not mail.outbox


def test_a_reminder_of_an_invoice_paid_meanwhile_is_cancelled(alice_api, draft):
    alice_api.post(invoice_url(draft["id"], "send"), {"email": False}, format="json")
    alice_api.post(invoice_url(draft["id"], "remind"))
    alice_api.post(
        "/api/payments/", {"invoice": draft["id"], "amount": "1079", "method": "cash"}, format="json"
    )
    run_jobs()
    assert OutboundEmail.objects.get().status == "cancelled"
    assert not mail.outbox


def test_money_in_the_email_is_written_with_the_currencys_places(alice_api, alice_customer):
    alice_customer.email = "ap@acme.example"
    alice_customer.save()
    invoice = create_invoice(
        alice_api,
        alice_customer,
        currency="KWD",
        lines=[{"description": "Words", "quantity": "1.5", "unit_price": "0.333", "tax_rate": "5"}],
    )
    alice_api.post(invoice_url(invoice["id"], "send"))
    assert "KWD" in OutboundEmail.objects.get().body
    assert "0.525" in OutboundEmail.objects.get().body
    assert Decimal(Invoice.objects.get(pk=invoice["id"]).total) == Decimal("0.525")


@pytest.mark.parametrize("action", ["send", "remind"])
@pytest.mark.parametrize("body", ["null", "[]", '"x"', "1"])
def test_a_body_that_is_not_an_object_is_400(alice_api, draft, action, body):
    if action == "remind":
        alice_api.post(invoice_url(draft["id"], "send"), {"email": False}, format="json")
    response = alice_api.post(invoice_url(draft["id"], action), body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert OutboundEmail.objects.count() == 0


def test_queue_documents_gives_each_issued_invoice_without_a_pdf_its_first_version(
    alice, alice_org, alice_api, draft, alice_customer
):
    from io import StringIO

    from django.core.management import call_command

    from invoices.services import invoice_send
    from tests.factories import InvoiceFactory

    issued_before = invoice_send(organization=alice_org, invoice_id=draft["id"])  # no delivery then
    InvoiceFactory(organization=alice_org, customer=alice_customer)  # a draft: nothing to store
    delivered = create_invoice(alice_api, alice_customer)
    alice_api.post(invoice_url(delivered["id"], "send"), {"email": False}, format="json")
    out = StringIO()
    call_command("queue_documents", stdout=out)
    assert out.getvalue().strip() == "1 document(s) queued."
    (document,) = Document.objects.filter(invoice=issued_before)
    assert (document.version, document.status) == (1, "pending")
    assert document.pk in jobs("render_document")
    call_command("queue_documents", stdout=out)  # again: nothing more
    assert Document.objects.count() == 2
    run_jobs()
    assert set(Document.objects.values_list("status", flat=True)) == {"stored"}


def test_the_emails_write_the_due_date_as_the_date_filter_does(alice_api, alice_org, draft):
    # One text for the due date, written once (services.email_queue): what the templates'
    # `date:"j F Y"` wrote, in the invoice's email, its HTML and a reminder's "when".
    import datetime

    from django.template.defaultfilters import date as date_filter

    Invoice.objects.filter(pk=draft["id"]).update(due_date=datetime.date(2031, 3, 7))
    assert alice_api.post(invoice_url(draft["id"], "send"), format="json").status_code == 200
    (sent,) = OutboundEmail.objects.filter(invoice_id=draft["id"])
    due = date_filter(datetime.date(2031, 3, 7), "j F Y")
    assert due == "7 March 2031"
    assert f"due on {due}." in sent.body
    assert f"due on {due}.</p>" in sent.html
    services.invoice_remind(organization=alice_org, invoice_id=draft["id"])
    reminder = OutboundEmail.objects.get(invoice_id=draft["id"], kind="reminder")
    assert f"on {due}. The balance due is" in reminder.body


def test_the_hosted_pages_read_is_the_orms_own_statement_and_rows(alice_api, draft, bob_org):
    # Compiled once (delivery.selectors.hosted_invoice): the SQL, text and values, is the ORM's own
    # `.first()` of the page's queryset, its lines the rows `prefetch_related("lines")` reads.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from delivery import selectors

    alice_api.post(invoice_url(draft["id"], "send"))
    invoice = Invoice.objects.get(pk=draft["id"])

    def orm():
        return (
            Invoice.objects.filter(public_token=invoice.public_token)
            .exclude(status=Invoice.Status.DRAFT)
            .select_related("organization", "customer")
            .first()
        )

    with CaptureQueriesContext(connection) as ours:
        found = selectors.hosted_invoice(token=invoice.public_token)
    with CaptureQueriesContext(connection) as theirs:
        expected = orm()
    assert ours.captured_queries[0]["sql"] == theirs.captured_queries[0]["sql"]
    assert len(ours.captured_queries) == 2  # the invoice, then its lines
    assert (found.pk, found.organization.name, found.customer.name) == (
        expected.pk,
        expected.organization.name,
        expected.customer.name,
    )
    with CaptureQueriesContext(connection) as none:
        lines = [(line.pk, line.description, line.invoice is found) for line in found.lines.all()]
    assert none.captured_queries == []
    assert lines == [(line.pk, line.description, True) for line in expected.lines.all()]
    assert selectors.hosted_invoice(token="no-such-token") is None
    Invoice.objects.filter(pk=invoice.pk).update(status=Invoice.Status.DRAFT)
    assert selectors.hosted_invoice(token=invoice.public_token) is None
