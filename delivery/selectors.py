"""Reads of the delivery app that are more than a queryset."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import QuerySet

from billing.db import CompiledQuery
from delivery.models import Document
from invoices import selectors as invoice_selectors
from invoices.models import Invoice


@dataclass(frozen=True, slots=True)
class PdfDownload:
    """What a PDF download decides on: the invoice's id, number and status, and its latest version
    (the Document's fields are None when the invoice has none)."""

    invoice_id: int
    number: str | None
    status: str
    document_status: str | None
    file_name: str | None
    sha256: str | None
    size: int | None

    @property
    def stored(self) -> bool:
        """Whether the stored file is the answer: an issued invoice whose latest version is stored
        (a draft's PDF is rendered on each request, marked DRAFT, and never stored)."""
        return self.status != Invoice.Status.DRAFT and self.document_status == Document.Status.STORED

    @property
    def etag(self) -> str:
        """The stored version's entity tag: its SHA-256, quoted (a strong tag: a stored version
        never changes, and another version has another digest)."""
        return f'"{self.sha256}"'


# The invoice joined to every version of its PDF (LEFT JOIN: a draft has none), the highest version
# first, one row kept: the invoice and its latest version in one statement, whatever the number of
# versions (few; the join walks the (invoice, version) unique index).
_FIELDS = (
    "pk",
    "number",
    "status",
    "documents__status",
    "documents__file",
    "documents__sha256",
    "documents__size",
)


def _latest_version(invoices: QuerySet[Invoice]) -> QuerySet:
    """The one row `.first()` reads: `invoices`' invoice and its latest version."""
    return invoices.order_by("-documents__version").values_list(*_FIELDS)[:1]


def _owned_latest_version(organization_id: int, invoice_id: int) -> QuerySet:
    return _latest_version(Invoice.objects.filter(organization_id=organization_id, pk=invoice_id))


def _hosted_latest_version(token: str) -> QuerySet:
    return _latest_version(Invoice.objects.filter(public_token=token).exclude(status=Invoice.Status.DRAFT))


# Every download reads one of these: compiled once (billing.db.CompiledQuery).
_OWNED_DOWNLOAD = CompiledQuery(_owned_latest_version, organization_id=int, invoice_id=int)
_HOSTED_DOWNLOAD = CompiledQuery(_hosted_latest_version, token=str)


def _download(rows: list) -> PdfDownload | None:
    return PdfDownload(*rows[0]) if rows else None


def invoice_pdf_download(*, organization_id: int, invoice_id: int) -> PdfDownload | None:
    """Invoice `invoice_id` of the organization with its latest PDF version, or None (no such
    invoice, or another organization's)."""
    return _download(_OWNED_DOWNLOAD.fetch(organization_id=organization_id, invoice_id=invoice_id))


def hosted_pdf_download(*, token: str) -> PdfDownload | None:
    """The issued invoice whose hosted-page token is `token`, with its latest PDF version, or None."""
    return _download(_HOSTED_DOWNLOAD.fetch(token=token))


def _hosted_invoice(token: str) -> QuerySet:
    return (
        Invoice.objects.filter(public_token=token)
        .exclude(status=Invoice.Status.DRAFT)
        .select_related("organization", "customer")[:1]
    )


_HOSTED_INVOICE = CompiledQuery(_hosted_invoice, token=str)


def hosted_invoice(*, token: str) -> Invoice | None:
    """The issued invoice whose hosted-page token is `token`, with its organization and customer
    joined and its lines loaded (as the detail reads them), or None: two compiled statements."""
    found = _HOSTED_INVOICE.fetch(token=token)
    return invoice_selectors.with_lines_and_payments(found[0], ("lines",)) if found else None
