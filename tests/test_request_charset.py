"""A request's charset may name only a text encoding; any other codec is 415, never used to decode.

A charset parameter names a codec of Python's registry, and that registry holds bz2 and zlib (which
decompress a small body past MAX_REQUEST_BYTES), base64, hex and uu (which transform it) and rot13
(which fails). None of them may decode a body, on the API or in the admin's forms.
"""

import base64
import bz2
import codecs
import io
import json
import time
import tracemalloc
import zlib

import pytest
from django.contrib.auth import get_user_model
from django.contrib.sessions.models import Session
from django.test import Client
from rest_framework.exceptions import UnsupportedMediaType

from billing.parsers import JSONParser, text_encoding
from customers.models import Customer
from payments.models import Payment
from tests.conftest import PASSWORD
from users.models import MemberToken as AuthToken

pytestmark = pytest.mark.django_db

User = get_user_model()

REFUSED = {
    "detail": "Unsupported charset in Content-Type: a request body must be UTF-8 (or UTF-16, UTF-32).",
    "code": "unsupported_media_type",
}

# bz2 of `{"username": "alice<300 MiB of spaces>", "password": "x"}`: 308 bytes. Made once, offline (it
# takes seconds to compress); the test checks that it is what it says, without expanding all of it.
BZ2_BOMB = base64.b64decode(
    "QlpoOTFBWSZTWfYqjHAFfjsZgNAAABAqJxoIAAggAFCmAABNVQIZplOtVFQEt5RUBLnZRUBLjbXVjvvGffbONeayoqAl/MUF"
    "ZJlNZtSJlvwFfjhAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1m1ImW/AV+OEADAAAAIIAAwgE1GQqAlqQqAlzFBWSZTWbUiZb8"
    "BX44QAMAAAAggADCATUZCoCWpCoCXMUFZJlNZtSJlvwFfjhAAwAAACCAAMIBNRkKgJakKgJcxQVkmU1m1ImW/AV+OEADAAAA"
    "IIAAwgE1GQqAlqQqAlzFBWSZTWStOMlsBLBQZhNAEABAkANjCAAEACCAAVBUqNNHqDagUqmgAHwkCke4RIFI01xEgSIXW66e"
    "/XjWrYVCICRD8XckU4UJBAWbIXA="
)

# Codecs of Python's registry that are not text encodings, and a charset no codec answers to.
NOT_TEXT = ["bz2", "zlib", "rot13", "hex", "base64", "uu", "quopri", "no-such-codec"]


def encoded(text: str, charset: str) -> bytes:
    """`text` as a client declaring `charset` would send it, so that decoding it would succeed."""
    if charset == "rot13":
        return codecs.encode(text, "rot13").encode()
    try:
        return codecs.encode(text.encode(), charset)
    except LookupError:
        return text.encode()


def post(client, url: str, payload: dict, charset: str):
    body = encoded(json.dumps(payload), charset)
    return client.generic("POST", url, body, content_type=f"application/json; charset={charset}")


@pytest.fixture
def sent_invoice(alice, alice_customer, make_invoice):
    return make_invoice(alice, alice_customer)


@pytest.fixture
def operator(db):
    return User.objects.create_superuser(username="root", password=PASSWORD, email="root@example.com")


@pytest.mark.parametrize("charset", NOT_TEXT)
def test_login_refuses_a_charset_that_is_not_a_text_encoding(api, alice, charset):
    response = post(api, "/api/login/", {"username": "alice", "password": PASSWORD}, charset)

    assert response.status_code == 415
    assert response.json() == REFUSED
    assert not AuthToken.objects.exists()


@pytest.mark.parametrize("charset", NOT_TEXT)
def test_register_refuses_a_charset_that_is_not_a_text_encoding(api, charset):
    payload = {"username": "carol", "password": "a-long-and-unusual-pass"}

    response = post(api, "/api/register/", payload, charset)

    assert response.status_code == 415
    assert response.json() == REFUSED
    assert not User.objects.filter(username="carol").exists()


@pytest.mark.parametrize("charset", NOT_TEXT)
def test_payments_refuse_a_charset_that_is_not_a_text_encoding(alice_api, sent_invoice, charset):
    payload = {"invoice": sent_invoice.pk, "amount": "1.00", "method": "cash"}

    response = post(alice_api, "/api/payments/", payload, charset)

    assert response.status_code == 415
    assert response.json() == REFUSED
    assert not Payment.objects.exists()
    sent_invoice.refresh_from_db()
    assert sent_invoice.amount_paid == 0


@pytest.mark.parametrize("charset", ["bz2", "rot13", "hex", "no-such-codec"])
@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded; charset={}", "multipart/form-data; boundary=BoUnDaRy; charset={}"],
    ids=["urlencoded", "multipart"],
)
def test_admin_login_refuses_a_charset_that_is_not_a_text_encoding(operator, charset, content_type):
    if content_type.startswith("multipart"):
        body = (
            '--BoUnDaRy\r\nContent-Disposition: form-data; name="username"\r\n\r\nroot\r\n'
            f'--BoUnDaRy\r\nContent-Disposition: form-data; name="password"\r\n\r\n{PASSWORD}\r\n'
            "--BoUnDaRy--\r\n"
        )
    else:
        body = f"username=root&password={PASSWORD}&next=/admin/"

    response = Client().generic(
        "POST", "/admin/login/", encoded(body, charset), content_type=content_type.format(charset)
    )

    assert response.status_code == 415
    assert response.json() == REFUSED
    assert not Session.objects.exists()


def test_a_request_without_a_body_is_refused_too(alice_api):
    response = alice_api.generic("GET", "/api/customers/", content_type="application/json; charset=hex")

    assert response.status_code == 415
    assert response.json() == REFUSED


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", "Utf-8", "utf8", "UTF8", '"utf-8"', "us-ascii"])
def test_login_accepts_utf8_in_any_spelling(api, alice, charset):
    response = api.generic(
        "POST",
        "/api/login/",
        json.dumps({"username": "alice", "password": PASSWORD}).encode(),
        content_type=f"application/json; charset={charset}",
    )

    assert response.status_code == 200
    assert AuthToken.objects.filter(user=alice).count() == 1


def test_a_body_without_a_charset_is_read_as_utf8(api):
    payload = {"username": "zoë", "password": "a-long-and-unusual-pass"}
    body = json.dumps(payload, ensure_ascii=False).encode()

    response = api.generic("POST", "/api/register/", body, content_type="application/json")

    assert response.status_code == 201
    assert User.objects.filter(username="zoë").exists()


@pytest.mark.parametrize("charset", ["utf-16", "utf-16-le", "UTF-16BE", "utf-32", "utf-32-le"])
def test_register_accepts_utf16_and_utf32_bodies_as_rfc_7159_allowed(api, charset):
    body = json.dumps({"username": "zoë", "password": "a-long-and-unusual-pass"}, ensure_ascii=False)

    response = api.generic(
        "POST", "/api/register/", body.encode(charset), content_type=f"application/json; charset={charset}"
    )

    assert response.status_code == 201
    assert response.json()["username"] == "zoë"


def test_a_bz2_bomb_is_refused_without_being_expanded(api, alice, settings):
    expanded = bz2.BZ2Decompressor().decompress(BZ2_BOMB, max_length=2 * settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    assert expanded.startswith(b'{"username": "alice   ')
    assert len(expanded) == 2 * settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # and there is more, 300 MiB in all
    del expanded
    api.get("/api/health/")  # the first request loads the handler; leave that out of the measure

    tracemalloc.start()
    started = time.process_time()
    try:
        response = api.generic("POST", "/api/login/", BZ2_BOMB, content_type="application/json; charset=bz2")
        elapsed = time.process_time() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status_code == 415
    assert elapsed < 0.5
    assert peak < 4 * 1024 * 1024  # decoding it would take 600 MiB
    assert not AuthToken.objects.exists()


def test_a_zlib_body_that_would_expand_past_the_size_limit_is_refused(api, alice, settings):
    payload = b'{"username": "alice", "password": "x", "padding": "' + b" " * (20 << 20) + b'"}'
    body = zlib.compress(payload, 9)
    assert len(body) < settings.DATA_UPLOAD_MAX_MEMORY_SIZE < len(payload)

    response = api.generic("POST", "/api/login/", body, content_type="application/json; charset=zlib")

    assert response.status_code == 415
    assert response.json() == REFUSED


@pytest.mark.parametrize("charset", ["bz2", "rot13", "base64", "no-such-codec"])
def test_the_json_parser_refuses_such_a_charset_on_its_own(charset):
    """The parser's own check, for a request that reaches it without the middleware's."""
    body = io.BytesIO(encoded('{"a": 1}', charset))

    with pytest.raises(UnsupportedMediaType):
        JSONParser().parse(body, "application/json", {"encoding": charset})
    with pytest.raises(UnsupportedMediaType):
        JSONParser().parse(body, f"application/json; charset={charset}", {"encoding": "utf-8"})


def test_the_json_parser_decodes_with_the_declared_text_encoding():
    body = io.BytesIO('{"name": "Café"}'.encode("utf-16"))

    assert JSONParser().parse(body, "application/json; charset=UTF-16", {"encoding": "utf-16"}) == {
        "name": "Café"
    }


@pytest.mark.parametrize(
    ("charset", "encoding"),
    [
        ("UTF8", "utf-8"),
        ("u8", "utf-8"),
        ("us-ascii", "ascii"),
        ("UTF-16LE", "utf-16-le"),
        ("utf_32", "utf-32"),
        ("latin-1", None),  # a text encoding, but not one JSON allows
        ("utf-7", None),
        ("punycode", None),
        ("unicode_escape", None),
        ("bz2", None),
        ("utf-8\x00", None),
        ("", None),
        ("x" * 10_000, None),
    ],
)
def test_only_utf8_utf16_and_utf32_are_text_encodings_for_a_request(charset, encoding):
    assert text_encoding(charset) == encoding


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=rot13", "text/plain; charset*=nosuch''x"]
)
def test_the_server_refuses_a_non_text_charset_with_a_query_string_instead_of_crashing(content_type):
    """Django's own request class re-reads the query string with the charset's codec while the
    request object is built, before any middleware: the project's entry point (billing.wsgi) must
    answer 415 there, not 500."""
    import io

    from billing.wsgi import application

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/api/health/",
        "QUERY_STRING": "page=1",
        "CONTENT_TYPE": content_type,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
    }
    started = []
    body = b"".join(application(environ, lambda status, headers: started.append(status)))

    assert started == ["415 Unsupported Media Type"], body
    assert b"unsupported_media_type" in body


# --- a charset that names no codec at all -------------------------------------------------------------


def test_an_unknown_charset_is_415_and_nothing_is_written(alice_api):
    response = alice_api.generic(
        "POST",
        "/api/customers/",
        '{"name": "Café"}'.encode(),
        content_type="application/json; charset=no-such",
    )

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert not Customer.objects.exists()
