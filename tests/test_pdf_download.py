"""The invoice PDF download (`GET /api/invoices/{id}/pdf/`) and the hosted page's (`/i/<token>/pdf/`):
a stored latest version is streamed from storage as it is (a FileResponse, with its size and an
ETag) after one statement that reads the invoice with its latest version; a draft's, or a version
not stored yet, is rendered on the request as before."""

import hashlib
import io

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from django.http import FileResponse
from django.test.utils import CaptureQueriesContext
from pypdf import PdfReader
from rest_framework.test import APIClient

from delivery.models import Document
from invoices.models import Invoice
from tests.invoice_helpers import create_invoice, invoice_url

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    """The stored PDFs of each test in a folder of its own."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def draft(alice_api, alice_customer) -> dict:
    return create_invoice(
        alice_api,
        alice_customer,
        lines=[{"description": "Consulting", "quantity": "2", "unit_price": "150.00", "tax_rate": "20"}],
    )


@pytest.fixture
def issued(alice_api, draft) -> dict:
    """A sent invoice whose PDF is not stored yet (its version pending, no email)."""
    response = alice_api.post(invoice_url(draft["id"], "send"), {"email": False}, format="json")
    assert response.status_code == 200, response.data
    return response.data


@pytest.fixture
def stored(alice_api, issued) -> Document:
    """The sent invoice's version 1, stored: rendered and stored by the first download."""
    assert not alice_api.get(invoice_url(issued["id"], "pdf")).streaming
    document = Document.objects.get(invoice_id=issued["id"])
    assert (document.version, document.status) == (1, Document.Status.STORED)
    return document


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def stored_bytes(document: Document) -> bytes:
    with default_storage.open(document.file.name, "rb") as stored_file:
        return stored_file.read()


def pdf_text(pdf: bytes) -> str:
    assert pdf.startswith(b"%PDF-")
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def hosted_path(issued: dict) -> str:
    return issued["hosted_url"].removeprefix("http://testserver") + "pdf/"


# --- the API ----------------------------------------------------------------------------------------


def test_a_stored_pdf_is_streamed_from_storage_as_it_is(alice_api, issued, stored):
    response = alice_api.get(invoice_url(issued["id"], "pdf"))
    assert response.status_code == 200
    assert isinstance(response, FileResponse)
    pdf = body(response)
    assert pdf == stored_bytes(stored)
    assert hashlib.sha256(pdf).hexdigest() == stored.sha256
    assert issued["number"] in pdf_text(pdf)
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Length"] == str(stored.size) == str(len(pdf))
    assert response["Content-Disposition"] == f'inline; filename="{issued["number"]}.pdf"'
    assert response["ETag"] == f'"{stored.sha256}"'


def test_a_stored_pdf_is_one_statement_after_authentication(alice_api, issued, stored):
    with CaptureQueriesContext(connection) as queries:
        response = alice_api.get(invoice_url(issued["id"], "pdf"))
    assert response.status_code == 200
    assert response.streaming
    statements = [query["sql"] for query in queries.captured_queries]
    assert len(statements) == 2, statements  # the token, then the invoice with its latest version
    assert "users_membertoken" in statements[0]
    assert 'FROM "invoices_invoice" LEFT OUTER JOIN "delivery_document"' in statements[1]
    assert not any("invoices_line" in sql for sql in statements)


def test_a_matching_if_none_match_is_304_without_opening_the_file(alice_api, issued, stored, monkeypatch):
    etag = f'"{stored.sha256}"'
    expected = stored_bytes(stored)
    opened = []
    real_open = default_storage.open
    monkeypatch.setattr(default_storage, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    url = invoice_url(issued["id"], "pdf")
    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        response = alice_api.get(url, HTTP_IF_NONE_MATCH=if_none_match)
        assert response.status_code == 304, if_none_match
        assert response["ETag"] == etag
        assert response.content == b""
    assert opened == []
    changed = alice_api.get(url, HTTP_IF_NONE_MATCH='"' + "0" * 64 + '"')
    assert changed.status_code == 200
    assert body(changed) == expected
    assert len(opened) == 1


def test_an_if_match_naming_another_version_is_412(alice_api, issued, stored):
    url = invoice_url(issued["id"], "pdf")
    assert alice_api.get(url, HTTP_IF_MATCH='"' + "0" * 64 + '"').status_code == 412
    assert alice_api.get(url, HTTP_IF_MATCH=f'"{stored.sha256}"').status_code == 200


def test_another_organizations_invoice_is_404(bob_api, alice_api, issued, stored):
    assert bob_api.get(invoice_url(issued["id"], "pdf")).status_code == 404
    assert bob_api.get(invoice_url(issued["id"], "pdf"), HTTP_IF_NONE_MATCH="*").status_code == 404
    assert alice_api.get(invoice_url(issued["id"] + 1000, "pdf")).status_code == 404
    assert alice_api.get("/api/invoices/x1/pdf/").status_code == 404


def test_a_draft_is_still_rendered_with_its_draft_mark_and_never_stored(alice_api, draft):
    with CaptureQueriesContext(connection) as queries:
        response = alice_api.get(invoice_url(draft["id"], "pdf"))
    assert response.status_code == 200
    assert not response.streaming
    assert "ETag" not in response
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Disposition"] == f'inline; filename="draft-{draft["id"]}.pdf"'
    assert "DRAFT" in pdf_text(response.content)
    assert not Document.objects.exists()
    # the token, the invoice with its latest version (none), then the invoice as rendering needs it
    assert len(queries) == 4, [query["sql"] for query in queries.captured_queries]


def test_a_version_not_stored_yet_is_rendered_stored_then_streamed(alice_api, issued):
    first = alice_api.get(invoice_url(issued["id"], "pdf"))
    assert first.status_code == 200
    assert not first.streaming
    assert "ETag" not in first
    assert "DRAFT" not in pdf_text(first.content)
    document = Document.objects.get(invoice_id=issued["id"])
    assert document.status == Document.Status.STORED
    second = alice_api.get(invoice_url(issued["id"], "pdf"))
    assert second.streaming
    assert body(second) == first.content == stored_bytes(document)


def test_the_latest_version_decides(alice_api, issued, stored):
    """A new version asked for (the notes changed) and not rendered yet: the request renders the
    invoice as it is now, not the older stored version."""
    changed = alice_api.patch(invoice_url(issued["id"]), {"notes": "Paid by card, thank you"}, format="json")
    assert changed.status_code == 200, changed.data
    latest = Document.objects.filter(invoice_id=issued["id"]).order_by("-version").first()
    assert (latest.version, latest.status) == (2, Document.Status.PENDING)
    response = alice_api.get(invoice_url(issued["id"], "pdf"))
    assert not response.streaming
    assert response.content != stored_bytes(stored)
    assert "Paid by card" in pdf_text(response.content)
    latest.refresh_from_db()
    assert latest.status == Document.Status.STORED
    again = alice_api.get(invoice_url(issued["id"], "pdf"))
    assert again["ETag"] == f'"{latest.sha256}"'
    assert body(again) == response.content


def test_the_download_reads_are_the_orms_own_statements_and_rows(alice_api, bob_org, issued, stored):
    """Both reads are compiled once (billing.db.CompiledQuery): the SQL sent, text and values, is
    the ORM's own `.first()` of the same queryset, and so are the rows; another organization's
    invoice, an unknown token and a draft's token find nothing."""
    from delivery import selectors

    invoice = Invoice.objects.get(pk=issued["id"])

    def sent(read):
        with CaptureQueriesContext(connection) as ctx:
            result = read()
        return result, [q["sql"] for q in ctx.captured_queries]

    for ours, theirs in [
        (
            lambda: selectors.invoice_pdf_download(
                organization_id=invoice.organization_id, invoice_id=invoice.pk
            ),
            lambda: Invoice.objects.filter(organization_id=invoice.organization_id, pk=invoice.pk)
            .order_by("-documents__version")
            .values_list(*selectors._FIELDS)
            .first(),
        ),
        (
            lambda: selectors.hosted_pdf_download(token=invoice.public_token),
            lambda: Invoice.objects.filter(public_token=invoice.public_token)
            .exclude(status=Invoice.Status.DRAFT)
            .order_by("-documents__version")
            .values_list(*selectors._FIELDS)
            .first(),
        ),
    ]:
        download, our_sql = sent(ours)
        row, their_sql = sent(theirs)
        assert our_sql == their_sql
        assert download == selectors.PdfDownload(*row)
        assert (download.invoice_id, download.sha256, download.stored) == (invoice.pk, stored.sha256, True)
    assert selectors.invoice_pdf_download(organization_id=bob_org.pk, invoice_id=invoice.pk) is None
    assert selectors.hosted_pdf_download(token="no-such-token") is None
    Invoice.objects.filter(pk=invoice.pk).update(status=Invoice.Status.DRAFT)
    assert selectors.hosted_pdf_download(token=invoice.public_token) is None


# --- the hosted page --------------------------------------------------------------------------------


def test_the_hosted_pdf_is_streamed_with_the_hosted_headers(issued, stored):
    anonymous = APIClient()
    response = anonymous.get(hosted_path(issued))
    assert response.status_code == 200
    assert isinstance(response, FileResponse)
    assert body(response) == stored_bytes(stored)
    assert response["Content-Type"] == "application/pdf"
    assert response["Content-Length"] == str(stored.size)
    assert response["Content-Disposition"] == f'inline; filename="{issued["number"]}.pdf"'
    assert response["ETag"] == f'"{stored.sha256}"'
    assert response["X-Robots-Tag"] == "noindex, nofollow"
    assert response["Referrer-Policy"] == "no-referrer"
    assert response["Cache-Control"] == "private, no-store"
    not_modified = anonymous.get(hosted_path(issued), HTTP_IF_NONE_MATCH=f'"{stored.sha256}"')
    assert not_modified.status_code == 304
    assert not_modified["ETag"] == f'"{stored.sha256}"'
    assert not_modified["X-Robots-Tag"] == "noindex, nofollow"


def test_the_hosted_pdf_is_the_throttle_and_one_statement(issued, stored):
    anonymous = APIClient()
    assert anonymous.get(hosted_path(issued)).status_code == 200  # the client's first in the window purges
    with CaptureQueriesContext(connection) as queries:
        response = anonymous.get(hosted_path(issued))
    assert response.streaming
    statements = [query["sql"] for query in queries.captured_queries]
    # the throttle's count (its own savepoint: SAVEPOINT, INSERT, RELEASE), then the invoice with its latest version
    assert len(statements) == 4, statements
    assert "users_throttlecounter" in statements[1]
    assert 'FROM "invoices_invoice" LEFT OUTER JOIN "delivery_document"' in statements[3]


def test_the_hosted_pdf_of_an_unknown_token_or_a_draft_is_404(draft):
    anonymous = APIClient()
    assert anonymous.get("/i/" + "x" * 32 + "/pdf/").status_code == 404
    # A draft has no token; one given a token anyway is still not served.
    Invoice.objects.filter(pk=draft["id"]).update(public_token="d" * 32)
    assert anonymous.get("/i/" + "d" * 32 + "/pdf/").status_code == 404


def test_the_hosted_pdf_not_stored_yet_is_rendered(issued):
    response = APIClient().get(hosted_path(issued))
    assert response.status_code == 200
    assert not response.streaming
    assert issued["number"] in pdf_text(response.content)
    assert response["X-Robots-Tag"] == "noindex, nofollow"


def test_the_hosted_pdf_is_still_throttled(issued, stored, settings):
    settings.HOSTED_PAGE_THROTTLE_RATE = "1/min"
    anonymous = APIClient()
    assert anonymous.get(hosted_path(issued)).status_code == 200
    refused = anonymous.get(hosted_path(issued), HTTP_IF_NONE_MATCH=f'"{stored.sha256}"')
    assert refused.status_code == 429
    assert refused["X-Robots-Tag"] == "noindex, nofollow"
    assert "ETag" not in refused


# --- a server that renders as many PDFs as it takes (gevent workers: billing.cooperative) ---------


def _busy(monkeypatch):
    from billing import cooperative
    from delivery import documents

    def refuse(*args, **kwargs):
        raise cooperative.Busy("2 calls are running or waiting already")

    monkeypatch.setattr(documents, "off_the_loop", refuse)


def test_a_draft_pdf_while_the_renders_are_taken_is_503_pdf_busy_with_retry_after(
    alice_api, draft, monkeypatch
):
    _busy(monkeypatch)
    response = alice_api.get(invoice_url(draft["id"], "pdf"))
    assert response.status_code == 503
    assert response.json()["code"] == "pdf_busy"
    assert response["Retry-After"] == "5"


def test_a_version_not_stored_yet_while_busy_is_503_and_stays_pending(alice_api, issued, monkeypatch):
    _busy(monkeypatch)
    response = alice_api.get(invoice_url(issued["id"], "pdf"))
    assert (response.status_code, response.json()["code"]) == (503, "pdf_busy")
    # Nothing was claimed or stored: the worker, or the next request, renders it.
    assert not Document.objects.filter(invoice_id=issued["id"], status=Document.Status.STORED).exists()
    monkeypatch.undo()
    assert alice_api.get(invoice_url(issued["id"], "pdf")).status_code == 200


def test_the_hosted_pdf_while_busy_is_503_with_retry_after_and_the_hosted_headers(issued, monkeypatch):
    _busy(monkeypatch)
    response = APIClient().get(hosted_path(issued))
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response["X-Robots-Tag"] == "noindex, nofollow"
    assert b"busy" in response.content
