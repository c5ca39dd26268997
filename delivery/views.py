"""The invoices API with delivery composed in (send, remind, emails, PDF), and the hosted invoice page.

`InvoiceDeliveryViewSet` is the invoices viewset with the writes that deliver routed through this
app's services (DESIGN.md: imports go one way, a write that needs a higher app's effect is composed
from above): `send` issues and queues the PDF and the email in one transaction, an edit of an issued
invoice's notes queues a new PDF version.
"""

from django.http import Http404, HttpResponse
from django.views.decorators.http import require_safe
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from delivery import documents, services
from delivery.models import OutboundEmail
from delivery.serializers import EmailSerializer, RemindInputSerializer, SendInputSerializer
from invoices.models import Invoice
from invoices.serializers import InvoiceDetailSerializer
from invoices.views import InvoiceViewSet
from users.throttling import LoginRateThrottle

PDF = OpenApiResponse(OpenApiTypes.BINARY, description="The invoice as a PDF (`application/pdf`).")


def pdf_response(pdf: bytes, invoice: Invoice) -> HttpResponse:
    response = HttpResponse(pdf, content_type="application/pdf")
    name = invoice.number or f"draft-{invoice.pk}"
    response["Content-Disposition"] = f'inline; filename="{_safe_filename(name)}.pdf"'
    return response


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
        # No body is all defaults ({}); a JSON null or any other non-object is 400.
        body = SendInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        invoice = services.invoice_send_and_deliver(
            organization=self.organization,
            invoice_id=invoice_id,
            actor=self.actor,
            email=body.validated_data.get("email"),
            to=body.validated_data.get("to"),
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
        responses={(200, "application/pdf"): PDF, 503: OpenApiResponse(description="`pdf_unavailable`")},
        summary="The invoice as a PDF",
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def pdf(self, request, pk=None):
        invoice = (
            Invoice.objects.filter(organization=self.organization, pk=self.object_id())
            .select_related("organization", "customer")
            .prefetch_related("lines")
            .first()
        )
        if invoice is None:
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


def _hosted_invoice(request, token: str) -> Invoice:
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
    invoice = (
        Invoice.objects.filter(public_token=token)
        .exclude(status=Invoice.Status.DRAFT)
        .select_related("organization", "customer")
        .prefetch_related("lines")
        .first()
    )
    if invoice is None:
        raise Http404("No such invoice.")
    return invoice


def _with_headers(response: HttpResponse) -> HttpResponse:
    for name, value in HOSTED_HEADERS.items():
        response[name] = value
    return response


@require_safe
def hosted_invoice(request, token: str):
    """The invoice as its customer sees it: no login, found by its unguessable token."""
    try:
        invoice = _hosted_invoice(request, token)
    except _Refused as refused:
        return _with_headers(refused.response)
    pdf_url = request.build_absolute_uri(f"/i/{token}/pdf/")
    return _with_headers(HttpResponse(documents.render_page(invoice, pdf_url=pdf_url)))


@require_safe
def hosted_invoice_pdf(request, token: str):
    try:
        invoice = _hosted_invoice(request, token)
    except _Refused as refused:
        return _with_headers(refused.response)
    try:
        pdf = services.invoice_pdf(invoice)
    except services.PdfUnavailable:
        return _with_headers(
            HttpResponse("The PDF is unavailable on this server.", status=503, content_type="text/plain")
        )
    return _with_headers(pdf_response(pdf, invoice))
