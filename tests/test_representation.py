"""The fast read path renders exactly what DRF's own serializers render, and is the one used.

`billing.serializers.PlainRepresentationMixin` replaces DRF's per-object machinery for the read-only
invoice and payment serializers; `billing.filters.FilterBackend` skips the filter form when a request
names no filter. Both are pure speed: these tests pin that nothing a client sees changes.
"""

import datetime
import zoneinfo
from decimal import Decimal
from types import SimpleNamespace
from unittest import mock

import django_filters
import pytest
from django.db import connection
from django.db.models import Prefetch
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from billing.filters import FilterBackend, names_a_filter
from billing.serializers import PlainRepresentationMixin
from invoices.filters import InvoiceFilterSet
from invoices.models import Invoice, Line
from invoices.selectors import CREATOR, invoice_summary, organization_summary
from invoices.serializers import (
    InvoiceDetailSerializer,
    InvoicePaymentSerializer,
    InvoiceSerializer,
    InvoiceSummarySerializer,
    LineSerializer,
)
from payments.filters import PaymentFilterSet
from payments.models import Payment
from payments.serializers import PaymentResultSerializer, PaymentSerializer
from payments.services import payment_record
from tests.conftest import key_client
from tests.factories import org
from tests.invoice_helpers import INVOICES, SUMMARY, invoice_url

pytestmark = pytest.mark.django_db


def drf_output(serializer_class, instance, many=False):
    """What DRF's generic `Serializer.to_representation` renders (nested serializers included)."""
    with mock.patch.object(
        PlainRepresentationMixin, "to_representation", serializers.Serializer.to_representation
    ):
        return serializer_class(instance, many=many).data


@pytest.fixture
def api_key(alice):
    return key_client(org(alice), role="member")[1]


@pytest.fixture
def invoices(alice, api_key, make_customer, make_invoice):
    """Invoices in every state, with awkward values: no number, big and fractional amounts,
    several lines and payments, a customer name with non-ASCII characters, made by a member, by an
    API key and by no one (the system)."""
    customer = make_customer(alice, name="Société Générale — Zürich")
    draft = make_invoice(alice, customer, send=False, amount="0.00", notes="", actor=alice)
    sent = make_invoice(alice, customer, amount="999999999.99", currency="JPY", actor=api_key)
    paid = make_invoice(alice, customer, amount="100.00")
    payment_record(
        organization=org(alice), invoice_id=paid.pk, amount=Decimal("33.33"), method="card", actor=api_key
    )
    payment_record(
        organization=org(alice),
        invoice_id=paid.pk,
        amount=Decimal("66.67"),
        method="cash",
        reference="R-1",
        paid_at=datetime.date(2024, 2, 29),
        actor=alice,
    )
    partly = make_invoice(alice, customer, amount="10.01", actor=alice)
    payment_record(organization=org(alice), invoice_id=partly.pk, amount=Decimal("0.01"), method="check")
    # An odd line added as the services add lines (bulk_create: Line.save() refuses one line alone).
    Line.objects.bulk_create(
        [
            Line(
                organization=org(alice),
                invoice=draft,
                position=2,
                description="Fractional",
                quantity=Decimal("0.001"),
                unit_price=Decimal("0.01"),
                tax_rate=Decimal("99.99"),
                amount=Decimal("0.00"),
                tax_amount=Decimal("0.00"),
            )
        ]
    )
    Invoice.objects.filter(pk=sent.pk).update(status="overdue")
    void = make_invoice(alice, customer, amount="5.00")
    Invoice.objects.filter(pk=void.pk).update(status="void")
    return (
        Invoice.objects.select_related("customer", *CREATOR)
        .prefetch_related(
            Prefetch("lines", queryset=Line.objects.order_by("position")),
            Prefetch("payments", queryset=Payment.objects.select_related(*CREATOR).order_by("paid_at", "id")),
        )
        .order_by("id")
    )


@pytest.mark.parametrize("zone", ["UTC", "America/St_Johns", "Asia/Kathmandu"])
def test_invoice_serializers_render_as_drf_does(invoices, zone):
    with timezone.override(zoneinfo.ZoneInfo(zone)):
        for serializer_class in (InvoiceSerializer, InvoiceDetailSerializer):
            for invoice in invoices:
                assert serializer_class(invoice).data == drf_output(serializer_class, invoice)
            assert serializer_class(invoices, many=True).data == drf_output(
                serializer_class, invoices, many=True
            )


def test_line_and_payment_serializers_render_as_drf_does(invoices):
    lines = Line.objects.order_by("id")
    payments = Payment.objects.select_related("invoice", *CREATOR).order_by("id")
    assert len(lines) >= 6
    assert len(payments) == 3
    for line in lines:
        assert LineSerializer(line).data == drf_output(LineSerializer, line)
    for payment in payments:
        for serializer_class in (PaymentSerializer, PaymentResultSerializer, InvoicePaymentSerializer):
            assert serializer_class(payment).data == drf_output(serializer_class, payment)


def test_values_are_formatted_as_the_schema_says(invoices):
    data = InvoiceDetailSerializer(invoices.get(status="paid")).data
    assert (data["total"], data["balance_due"]) == ("100.00", "0.00")
    assert [p["amount"] for p in data["payments"]] == ["66.67", "33.33"]  # oldest first
    assert data["payments"][0]["paid_at"] == "2024-02-29"
    assert data["paid_at"].endswith("Z")
    assert data["lines"][0]["quantity"] == "1.000"
    draft = InvoiceSerializer(invoices.get(status="draft")).data
    assert (draft["number"], draft["sent_at"]) == (None, None)
    assert draft["available_actions"] == ["edit", "delete", "send"]


def test_created_by_says_who_made_each_invoice_and_payment(alice, api_key, invoices):
    """The same on both paths (the tests above): a member by their username, a key by its name, and
    null for what the system made; read from the joined rows, with no query of its own."""
    member = {"type": "user", "id": alice.pk, "name": "alice"}
    key = {"type": "api_key", "id": api_key.pk, "name": "member key"}
    rows = list(invoices)
    with CaptureQueriesContext(connection) as queries:
        data = InvoiceDetailSerializer(rows, many=True).data
        payments = PaymentResultSerializer(
            Payment.objects.select_related("invoice", *CREATOR).order_by("id"), many=True
        ).data
    assert len(queries) == 1  # the payments themselves
    by_status = {invoice["status"]: invoice for invoice in data}
    assert by_status["draft"]["created_by"] == member
    assert by_status["overdue"]["created_by"] == key
    assert by_status["paid"]["created_by"] is None
    assert [p["created_by"] for p in by_status["paid"]["payments"]] == [member, key]  # oldest first
    assert [p["created_by"] for p in payments] == [key, member, None]
    assert data == drf_output(InvoiceDetailSerializer, rows, many=True)


def test_the_fast_path_is_the_one_used(invoices):
    """DRF builds a serializer's fields (deep copies of the declared ones) only when it renders
    through them; the plain path never asks for them."""
    serializer = InvoiceDetailSerializer(invoices[0])
    assert serializer.data["lines"]
    assert "fields" not in serializer.__dict__
    many = InvoiceSerializer(invoices, many=True)
    assert len(many.data) == 5
    assert "fields" not in many.child.__dict__


def test_the_summary_renders_as_drf_does(alice, bob, invoices):
    """A serializer of dicts, with a nested serializer and a list of them."""
    summaries = [
        organization_summary(organization_id=org(alice).pk),
        invoice_summary(invoices=Invoice.objects.filter(organization=org(alice), status="paid")),
        organization_summary(organization_id=org(bob).pk),  # no invoices: zeros and no currency
        {
            "count": 1,
            "by_status": dict.fromkeys(Invoice.Status.values, 0),
            "totals": [
                {
                    "currency": "EUR",
                    "invoiced": Decimal("12345678901234567.5"),
                    "collected": Decimal("-0.001"),
                    "outstanding": Decimal("0"),
                    "overdue": Decimal("1E+2"),
                },
            ],
        },
    ]
    assert len(summaries[0]["totals"]) == 2
    for summary in summaries:
        serializer = InvoiceSummarySerializer(summary)
        assert serializer.data == drf_output(InvoiceSummarySerializer, summary)
        assert "fields" not in serializer.__dict__


def test_objects_still_in_memory_render_as_drf_does(alice, make_customer, make_invoice):
    """The create and payment responses render objects that were just written, not read back."""
    invoice = make_invoice(alice, make_customer(alice), amount="10.5")
    payment = payment_record(
        organization=org(alice), invoice_id=invoice.pk, amount=Decimal("0.5"), method="card"
    )
    assert PaymentResultSerializer(payment).data == drf_output(PaymentResultSerializer, payment)
    unsaved = Invoice(
        pk=7,
        organization=org(alice),
        customer=invoice.customer,
        status="sent",
        currency="EUR",
        total=Decimal("1.5"),
        subtotal=Decimal("1"),
        tax_total=Decimal("0.5"),
        amount_paid=Decimal("0"),
        issue_date=datetime.date(2026, 1, 1),
        due_date=datetime.date(2026, 2, 1),
        created_at=timezone.now(),
        updated_at=timezone.now(),
        notes="",
    )
    assert InvoiceSerializer(unsaved).data == drf_output(InvoiceSerializer, unsaved)
    assert InvoiceSerializer(unsaved).data["total"] == "1.50"


class Unusual(PlainRepresentationMixin, serializers.ModelSerializer):
    """Sources the invoice serializers do not use today, read the way DRF reads them."""

    status_label = serializers.CharField(source="get_status_display", read_only=True)
    paid_year = serializers.IntegerField(source="paid_at.year", read_only=True)
    customer_email = serializers.CharField(source="customer.email", read_only=True)
    total_short = serializers.DecimalField(
        source="total", max_digits=14, decimal_places=2, normalize_output=True, read_only=True
    )
    local_sent_at = serializers.DateTimeField(source="sent_at", format="%Y-%m-%d %H:%M", read_only=True)

    class Meta:
        model = Invoice
        fields = ["id", "status_label", "paid_year", "customer_email", "total_short", "local_sent_at"]


def test_unusual_sources_render_as_drf_does(invoices):
    for invoice in invoices:
        assert Unusual(invoice).data == drf_output(Unusual, invoice)
    draft = Unusual(invoices.get(status="draft")).data
    assert "paid_year" not in draft  # None part-way along a dotted source: DRF leaves the key out
    assert draft["status_label"] == "Draft"
    paid = Unusual(invoices.get(status="paid")).data
    assert paid["total_short"] == "100"
    assert paid["paid_year"] == timezone.now().year


def test_a_field_the_plan_does_not_know_is_refused():
    class WithHyperlink(PlainRepresentationMixin, serializers.ModelSerializer):
        customer = serializers.HyperlinkedRelatedField(view_name="customer-detail", read_only=True)

        class Meta:
            model = Invoice
            fields = ["id", "customer"]

    class WithNested(PlainRepresentationMixin, serializers.ModelSerializer):
        lines = serializers.ListSerializer(child=serializers.DictField(), read_only=True)

        class Meta:
            model = Invoice
            fields = ["id", "lines"]

    for serializer_class in (WithHyperlink, WithNested):
        with pytest.raises(TypeError, match=r"not supported|plain too"):
            serializer_class(Invoice(pk=1)).to_representation(Invoice(pk=1))


@pytest.mark.parametrize("filterset_class", [InvoiceFilterSet, PaymentFilterSet])
def test_a_filter_set_given_no_values_leaves_the_queryset_as_it_is(alice, filterset_class):
    """The premise of the filter backend's shortcut, for every filter of every filter set."""
    request = APIRequestFactory().get("/")
    request.user = alice
    queryset = filterset_class._meta.model.objects.filter(organization=org(alice))
    filterset = filterset_class(data={}, queryset=queryset, request=request)
    assert filterset.is_valid()
    assert str(filterset.qs.query) == str(queryset.query)


@pytest.mark.parametrize(
    ("filterset_class", "expected"),
    [
        (
            InvoiceFilterSet,
            {"status", "issue_date_after", "due_date_before", "total_min", "search", "ordering"},
        ),
        (PaymentFilterSet, {"invoice", "customer", "method", "paid_at_after", "paid_at_before", "ordering"}),
    ],
)
def test_every_key_a_filter_reads_is_recognised(alice, filterset_class, expected):
    """The keys come from the filter form's own widgets, so a new filter is covered when added."""
    request = APIRequestFactory().get("/")
    request.user = alice
    form = filterset_class(data={}, queryset=filterset_class._meta.model.objects.none(), request=request).form
    keys = set()
    for name, field in form.fields.items():
        suffixes = getattr(field.widget, "suffixes", None)
        keys |= {f"{name}_{suffix}" for suffix in suffixes} if suffixes else {name}
    assert expected <= keys
    for key in keys:
        assert names_a_filter({key: "x"}, filterset_class), key
    assert not names_a_filter({"page": "2", "page_size": "5", "format": "json"}, filterset_class)


def test_named_filters_still_apply_to_lists_and_detail(alice_api, alice, make_invoice):
    sent = make_invoice(alice)
    draft = make_invoice(alice, send=False)
    assert alice_api.get(invoice_url(sent.pk), {"status": "draft"}).status_code == 404
    assert alice_api.get(invoice_url(draft.pk), {"status": "draft"}).status_code == 200
    assert alice_api.get(INVOICES, {"status": "draft"}).json()["count"] == 1
    assert alice_api.get(INVOICES, {"status": "nope"}).status_code == 400
    assert alice_api.get(INVOICES).json()["count"] == 2


def test_the_filter_form_is_built_only_when_a_filter_is_named(alice_api, alice, make_invoice):
    invoice = make_invoice(alice)
    with mock.patch.object(
        DjangoFilterBackend, "filter_queryset", autospec=True, side_effect=DjangoFilterBackend.filter_queryset
    ) as full_path:
        assert alice_api.get(INVOICES, {"page_size": 5}).status_code == 200
        assert alice_api.get(invoice_url(invoice.pk)).status_code == 200
        assert alice_api.get(SUMMARY).status_code == 200
        assert full_path.call_count == 0
        assert alice_api.get(INVOICES, {"ordering": "-total"}).status_code == 200
        assert alice_api.get(SUMMARY, {"status": "sent"}).status_code == 200
        assert full_path.call_count == 2


def test_a_required_filter_is_still_enforced_without_any_filter_named(alice):
    class RequiredCurrency(django_filters.FilterSet):
        currency = django_filters.CharFilter(required=True)

        class Meta:
            model = Invoice
            fields = []

    view = SimpleNamespace(filterset_class=RequiredCurrency)
    request = Request(APIRequestFactory().get("/", {"page": "1"}))
    request.user = alice
    with pytest.raises(ValidationError) as refused:
        FilterBackend().filter_queryset(request, Invoice.objects.filter(organization=org(alice)), view)
    assert "currency" in refused.value.detail


@pytest.mark.parametrize(
    ("currency", "unit_price", "paid", "expected"),
    [
        # (unit price, amount, tax, total, amount paid, balance due) as written; 2 x price at 10 %.
        ("JPY", "333", "100", ("333", "666", "67", "733", "100", "633")),
        ("USD", "0.0125", "0.01", ("0.0125", "0.03", "0.00", "0.03", "0.01", "0.02")),
        ("KWD", "1.2345", "0.001", ("1.2345", "2.469", "0.247", "2.716", "0.001", "2.715")),
        ("BHD", "5", "1.5", ("5.000", "10.000", "1.000", "11.000", "1.500", "9.500")),
    ],
)
def test_each_currency_renders_with_its_places_on_both_paths(
    alice, make_customer, currency, unit_price, paid, expected
):
    """Every money field with exactly its currency's places (a unit price with more, up to 4), the
    same on the fast path and DRF's, for invoices, lines, payments and the summary."""
    from invoices.services import invoice_create, invoice_send

    organization = org(alice)
    invoice = invoice_create(
        organization=organization,
        customer_id=make_customer(alice).pk,
        currency=currency,
        lines=[
            {
                "description": "x",
                "quantity": Decimal("2"),
                "unit_price": Decimal(unit_price),
                "tax_rate": Decimal("10"),
            }
        ],
    )
    invoice_send(organization=organization, invoice_id=invoice.pk)
    payment_record(organization=organization, invoice_id=invoice.pk, amount=Decimal(paid), method="cash")
    invoice = (
        Invoice.objects.select_related("customer", *CREATOR)
        .prefetch_related(
            Prefetch("lines", queryset=Line.objects.order_by("position")),
            Prefetch("payments", queryset=Payment.objects.select_related(*CREATOR)),
        )
        .get(pk=invoice.pk)
    )
    data = InvoiceDetailSerializer(invoice).data
    assert data == drf_output(InvoiceDetailSerializer, invoice)
    line = data["lines"][0]
    assert (line["unit_price"], line["amount"], line["tax_amount"], data["total"]) == expected[:4]
    assert (data["amount_paid"], data["balance_due"], data["payments"][0]["amount"]) == (
        expected[4],
        expected[5],
        expected[4],
    )
    payment = Payment.objects.select_related("invoice", *CREATOR).get(invoice=invoice)
    result = PaymentResultSerializer(payment).data
    assert result == drf_output(PaymentResultSerializer, payment)
    assert (result["amount"], result["currency"], result["invoice_balance_due"]) == (
        expected[4],
        currency,
        expected[5],
    )
    for summary in (
        organization_summary(organization_id=organization.pk),
        invoice_summary(invoices=Invoice.objects.filter(organization=organization)),
    ):
        rendered = InvoiceSummarySerializer(summary).data
        assert rendered == drf_output(InvoiceSummarySerializer, summary)
        (row,) = rendered["totals"]
        assert (row["invoiced"], row["collected"], row["outstanding"]) == (
            expected[3],
            expected[4],
            expected[5],
        )


@pytest.mark.parametrize(
    ("host", "secure"), [("testserver", False), ("billing.example.com:8443", True), ("[::1]:8000", False)]
)
def test_the_links_are_the_requests_absolute_uris(invoices, settings, host, secure):
    """`pdf_url` and `hosted_url` on the scheme and host of the request, as `build_absolute_uri`
    writes them (the serializer finds the base once per request)."""
    from django.urls import reverse

    settings.ALLOWED_HOSTS = ["*"]
    request = Request(APIRequestFactory().get("/api/invoices/", HTTP_HOST=host, secure=secure))
    rows = list(invoices)
    for data, invoice in zip(
        InvoiceSerializer(rows, many=True, context={"request": request}).data, rows, strict=True
    ):
        assert data["pdf_url"] == request.build_absolute_uri(reverse("invoice-pdf", args=[invoice.pk]))
        if invoice.public_token is None:
            assert data["hosted_url"] is None
        else:
            assert data["hosted_url"] == request.build_absolute_uri(
                reverse("hosted-invoice", args=[invoice.public_token])
            )
    assert any(invoice.public_token for invoice in rows)
