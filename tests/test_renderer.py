"""The API's JSON renderer (`billing.renderers.FastJSONRenderer`) writes exactly the bytes DRF's own
`JSONRenderer` writes: for the responses the API gives, and for the values that trip up a fast
encoder (U+2028, control characters, dates, decimals, lazy strings, what orjson cannot write)."""

import datetime
import uuid
from decimal import Decimal

import pytest
from django.utils.translation import gettext_lazy
from rest_framework.exceptions import ErrorDetail
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from billing.renderers import FastJSONRenderer
from tests.invoice_helpers import INVOICES, SUMMARY, invoice_url

# What JSON escapes or a naive encoder gets wrong: a name (one line, but U+2028 is allowed in one)
# and notes (which also hold line breaks and control characters).
NAME = 'Ünïcødé "quoted" back\\slash line\u2028separator paragraph\u2029separator 😀 \ufeff\u200b </script>'
AWKWARD = NAME + " tab\t new\nline \x01\x1f\x7f"


def drf(data, accepted_media_type=None, renderer_context=None) -> bytes:
    return JSONRenderer().render(data, accepted_media_type, renderer_context)


def fast(data, accepted_media_type=None, renderer_context=None) -> bytes:
    return FastJSONRenderer().render(data, accepted_media_type, renderer_context)


def test_the_api_renders_with_it():
    from rest_framework.settings import api_settings

    assert api_settings.DEFAULT_RENDERER_CLASSES[0] is FastJSONRenderer


@pytest.mark.django_db
def test_api_responses_are_byte_equal_to_drfs(alice, alice_api, make_customer, make_invoice):
    customer = make_customer(alice, name=NAME, email="ap@example.com")
    invoice = make_invoice(alice, customer, amount="1234.56", notes=AWKWARD)
    alice_api.post("/api/payments/", {"invoice": invoice.pk, "amount": "0.56", "method": "card"})
    for _ in range(3):
        make_invoice(alice, customer, amount="10.00")

    responses = {
        "detail": alice_api.get(invoice_url(invoice.pk)),
        "list": alice_api.get(f"{INVOICES}?page_size=20"),
        "summary": alice_api.get(SUMMARY),
        "customers": alice_api.get("/api/customers/"),
        "payments": alice_api.get("/api/payments/"),
        "me": alice_api.get("/api/me/"),
        "events": alice_api.get("/api/events/?page_size=50"),
        "field errors": alice_api.post(INVOICES, {"customer": "x", "lines": [{"quantity": "1e2"}]}),
        "not found": alice_api.get(invoice_url(10**9)),
        "conflict": alice_api.post(invoice_url(invoice.pk, "send")),
    }
    assert responses["detail"].json()["notes"] == AWKWARD
    assert b"\\u2028" in responses["detail"].content  # escaped, as DRF escapes it
    assert "\u2028".encode() not in responses["detail"].content
    assert responses["events"].json()["results"]  # nested JSON (the objects as they were)
    assert responses["field errors"].status_code == 400
    assert responses["not found"].status_code == 404
    assert responses["conflict"].status_code == 409
    for name, response in responses.items():
        assert response.content == drf(response.data), name
        assert response["Content-Type"] == "application/json", name


@pytest.mark.parametrize(
    "data",
    [
        {"name": AWKWARD, "nested": [{"k": AWKWARD}, [], {}], "n": None, "t": True, "f": False},
        {"amount": Decimal("12.50"), "yen": Decimal("1E+3"), "tiny": Decimal("0.000001")},
        {"at": datetime.datetime(2026, 12, 3, 10, 11, 12, 345678, tzinfo=datetime.UTC)},
        {
            "at": datetime.datetime(
                2026, 12, 3, 10, 11, 12, tzinfo=datetime.timezone(datetime.timedelta(hours=1))
            )
        },
        {"naive": datetime.datetime(2026, 12, 3, 10, 11, 12, 5), "day": datetime.date(2026, 12, 3)},
        {"time": datetime.time(10, 11, 12, 345678), "span": datetime.timedelta(days=1, seconds=5)},
        {"id": uuid.UUID(int=12345), "lazy": gettext_lazy("This field is required.")},
        {"errors": {"lines": [ErrorDetail("Not valid.", code="invalid")]}},
        ReturnDict({"a": 1, "b": ReturnList([1, 2], serializer=None)}, serializer=None),
        {"big": 2**64, "negative": -(2**63) - 1, "int": 2**63 - 1},
        {1: "an integer key", "set": {1}, "tuple": (1, 2), "bytes": b"raw"},
        [AWKWARD, 0, -1, 10**18],
        "a bare string\u2029",
    ],
)
def test_values_render_as_drf_renders_them(data):
    assert fast(data) == drf(data)


def test_deeper_nesting_than_orjson_writes_renders_as_drf_does():
    data: list = []
    for _ in range(300):
        data = [data]
    assert fast(data) == drf(data)


def test_an_asked_for_indent_renders_as_drf_does():
    data = {"name": AWKWARD, "amount": Decimal("1.00"), "list": [1, 2]}
    assert fast(data, "application/json; indent=4") == drf(data, "application/json; indent=4")
    assert fast(data, "application/json; indent=4") != fast(data)
    assert fast(data, renderer_context={"indent": 2}) == drf(data, renderer_context={"indent": 2})


def test_nothing_renders_as_nothing():
    assert fast(None) == drf(None) == b""


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"lone surrogate": "\ud800"}, UnicodeEncodeError),
        ({"object": object()}, TypeError),
        ({"nan": Decimal("NaN")}, ValueError),
    ],
)
def test_what_drf_refuses_is_refused_alike(data, error):
    with pytest.raises(error):
        drf(data)
    with pytest.raises(error):
        fast(data)
