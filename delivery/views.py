"""The invoices API with delivery composed in (send, remind, emails, PDF), and the hosted invoice page.

`InvoiceDeliveryViewSet` is the invoices viewset with the writes that deliver routed through this
app's services (DESIGN.md: imports go one way, a write that needs a higher app's effect is composed
from above): `send` issues and queues the PDF and the email in one transaction, an edit of an issued
invoice's notes queues a new PDF version.

A PDF whose latest version is stored is served from storage as it is, without reading the invoice's
lines (see `stored_pdf_response`); only a draft's, or an issued one's not stored yet, is rendered
on the request (`services.invoice_pdf`).
"""

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponse
from django.http.response import HttpResponseBase
from django.utils.cache import get_conditional_response
from django.views.decorators.http import require_safe
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from billing.tenancy import organization_id_of
from delivery import documents, selectors, services
from delivery.models import OutboundEmail
from delivery.serializers import EmailSerializer, RemindInputSerializer, SendInputSerializer
from invoices.models import Invoice
from invoices.serializers import InvoiceDetailSerializer
from invoices.views import InvoiceViewSet
from users.throttling import LoginRateThrottle

PDF = OpenApiResponse(
    OpenApiTypes.BINARY,
    description="The invoice as a PDF (`application/pdf`). A stored version comes with an `ETag` "
    "(its SHA-256, quoted); a draft's, rendered on the request, with none.",
)
NOT_MODIFIED = OpenApiResponse(
    description="`If-None-Match` names the stored version's `ETag`: the PDF has not changed."
)


def pdf_response(pdf: bytes, invoice: Invoice) -> HttpResponse:
    response = HttpResponse(pdf, content_type="application/pdf")
    response["Content-Disposition"] = _content_disposition(invoice.number, invoice.pk)
    return response


def stored_pdf_response(request, download: selectors.PdfDownload) -> HttpResponseBase:
    """The stored latest version of an issued invoice's PDF, streamed from storage as it is (a
    `FileResponse`: on disk, gunicorn sends it with sendfile), with the headers `pdf_response`
    gives, its stored size as Content-Length and its SHA-256 as a strong ETag.

    The request's preconditions are evaluated as Django's conditional views evaluate them
    (`get_conditional_response`, RFC 9110 section 13.2.2), before the file is opened: an
    `If-None-Match` naming the tag (or `*`) is answered 304 with the tag, an `If-Match` that does
    not is 412. A PDF rendered on the request (a draft's, or one not stored yet) has no tag.
    """
    etag = download.etag
    not_modified = get_conditional_response(request, etag=etag)
    if not_modified is not None:
        not_modified["ETag"] = etag
        return not_modified
    response = FileResponse(default_storage.open(download.file_name, "rb"), content_type="application/pdf")
    response["Content-Length"] = str(download.size)
    response["Content-Disposition"] = _content_disposition(download.number, download.invoice_id)
    response["ETag"] = etag
    return response


def _content_disposition(number: str | None, invoice_id: int) -> str:
    return f'inline; filename="{_safe_filename(number or f"draft-{invoice_id}")}.pdf"'


def _safe_filename(name: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)


class InvoiceDeliveryViewSet(InvoiceViewSet):
    update_service = staticmethod(services.invoice_update_and_render)

    @extend_schema(
        request=SendInputSerializer,
        responses=InvoiceDetailSerializer,
        summary="Send a draft (draft → sent): issue it, store its PDF and email it",
    )
    @action(detail=True, methods=["post"])
    def send(self, request, pk=None):
        invoice_id = self.object_id()
        # No body (or {}) is all defaults, without building the serializer (most sends carry none);
        # a JSON null or any other non-object is 400.
        options = {}
        if not (isinstance(request.data, dict) and not request.data):
            body = SendInputSerializer(data=request.data)
            body.is_valid(raise_exception=True)
            options = body.validated_data
        invoice = services.invoice_send_and_deliver(
            organization=self.organization,
            invoice_id=invoice_id,
            actor=self.actor,
            email=options.get("email"),
            to=options.get("to"),
        )
        return self._detail(invoice)

    @extend_schema(
        request=RemindInputSerializer,
        responses={202: EmailSerializer},
        summary="Email a payment reminder now (sent or overdue invoices)",
    )
    @action(detail=True, methods=["post"])
    def remind(self, request, pk=None):
        invoice_id = self.object_id()
        body = RemindInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        email = services.invoice_remind(
            organization=self.organization,
            invoice_id=invoice_id,
            to=body.validated_data.get("to"),
            actor=self.actor,
        )
        return Response(EmailSerializer(email).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        responses=EmailSerializer(many=True), summary="The messages sent or queued for the invoice"
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def emails(self, request, pk=None):
        invoice = self._owned_invoice()
        emails = OutboundEmail.objects.filter(organization=self.organization, invoice=invoice).order_by(
            "created_at", "id"
        )
        return Response(EmailSerializer(emails, many=True).data)

    @extend_schema(
        responses={
            (200, "application/pdf"): PDF,
            304: NOT_MODIFIED,
            503: OpenApiResponse(
                description="`pdf_unavailable`: no PDF engine on this server; `pdf_busy` (with "
                "`Retry-After`): it renders as many PDFs as it takes at once already"
            ),
        },
        summary="The invoice as a PDF",
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def pdf(self, request, pk=None):
        organization_id = organization_id_of(request)
        # A stored version is served after this one statement: no lines, customer or seller to read.
        download = selectors.invoice_pdf_download(
            organization_id=organization_id, invoice_id=self.object_id()
        )
        if download is None:
            raise Invoice.DoesNotExist
        if download.stored:
            return stored_pdf_response(request, download)
        invoice = (
            Invoice.objects.filter(organization_id=organization_id, pk=download.invoice_id)
            .select_related("organization", "customer")
            .prefetch_related("lines")
            .first()
        )
        if invoice is None:  # deleted since (a draft)
            raise Invoice.DoesNotExist
        return pdf_response(services.invoice_pdf(invoice), invoice)

    def _owned_invoice(self) -> Invoice:
        invoice = (
            Invoice.objects.filter(organization=self.organization, pk=self.object_id()).only("pk").first()
        )
        if invoice is None:
            raise Invoice.DoesNotExist
        return invoice


# --- the hosted invoice page -----------------------------------------------------------------------


class HostedPageThrottle(LoginRateThrottle):
    """Per client address, at HOSTED_PAGE_THROTTLE_RATE: a page found by its token alone is not a
    place to guess tokens at speed."""

    scope = "hosted"

    def get_rate(self):
        from django.conf import settings

        return settings.HOSTED_PAGE_THROTTLE_RATE


HOSTED_HEADERS = {
    "X-Robots-Tag": "noindex, nofollow",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
}


class _Refused(Exception):
    """A hosted request answered without the invoice: throttled (429) or no such token (404)."""

    def __init__(self, response: HttpResponse):
        self.response = response


def _check_throttle(request) -> None:
    throttle = HostedPageThrottle()
    if not throttle.allow_request(request, None):
        raise _Refused(
            HttpResponse(
                "Too many requests; try again shortly.",
                status=429,
                headers={"Retry-After": str(int(throttle.wait() or 60))},
                content_type="text/plain",
            )
        )


def _hosted_invoice(token: str) -> Invoice:
    invoice = selectors.hosted_invoice(token=token)
    if invoice is None:
        raise Http404("No such invoice.")
    return invoice


def _with_headers(response: HttpResponseBase) -> HttpResponseBase:
    for name, value in HOSTED_HEADERS.items():
        response[name] = value
    return response


@require_safe
def hosted_invoice(request, token: str):
    """The invoice as its customer sees it: no login, found by its unguessable token."""
    try:
        _check_throttle(request)
    except _Refused as refused:
        return _with_headers(refused.response)
    invoice = _hosted_invoice(token)
    pdf_url = request.build_absolute_uri(f"/i/{token}/pdf/")
    return _with_headers(HttpResponse(documents.render_page(invoice, pdf_url=pdf_url)))


@require_safe
def hosted_invoice_pdf(request, token: str):
    """The hosted page's PDF: the stored version as the API serves it (`stored_pdf_response`), else
    rendered on the request."""
    try:
        _check_throttle(request)
    except _Refused as refused:
        return _with_headers(refused.response)
    download = selectors.hosted_pdf_download(token=token)
    if download is None:
        raise Http404("No such invoice.")
    if download.stored:
        return _with_headers(stored_pdf_response(request, download))
    invoice = _hosted_invoice(token)
    try:
        pdf = services.invoice_pdf(invoice)
    except services.PdfUnavailable:
        return _with_headers(
            HttpResponse("The PDF is unavailable on this server.", status=503, content_type="text/plain")
        )
    except services.PdfBusy as busy:
        return _with_headers(
            HttpResponse(
                "The server is busy rendering other PDFs; try again in a few seconds.",
                status=503,
                content_type="text/plain",
                headers={"Retry-After": str(busy.retry_after)},
            )
        )
    return _with_headers(pdf_response(pdf, invoice))
