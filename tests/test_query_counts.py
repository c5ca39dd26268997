"""The number of queries a request makes does not grow with the page size or the data."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from invoices.services import invoice_send
from tests.factories import InvoiceFactory, LineFactory, LinePayloadFactory, org

pytestmark = pytest.mark.django_db


def lines(n):
    """`n` lines of 2 x 5.00 at 10% tax."""
    return LineFactory.build_batch(
        n, quantity=Decimal("2"), unit_price=Decimal("5.00"), tax_rate=Decimal("10")
    )


@pytest.fixture
def many_invoices(alice, make_customer):
    customers = [make_customer(alice, name=f"Customer {i}") for i in range(5)]
    return [
        InvoiceFactory(organization=org(alice), customer=customers[i % 5], lines=lines(3), sent=i < 40)
        for i in range(120)
    ]


def count_queries(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.content
    return len(ctx.captured_queries)


def test_invoice_list_queries_do_not_grow_with_page_size(alice_api, many_invoices):
    small = count_queries(alice_api, "/api/invoices/?page_size=1")
    large = count_queries(alice_api, "/api/invoices/?page_size=100")

    assert small == large
    assert large <= 4  # token, count, page (with customer joined)


def test_invoice_detail_queries_do_not_grow_with_lines(alice, alice_api, alice_customer):
    few = InvoiceFactory(organization=org(alice), customer=alice_customer, lines=lines(1))
    many = InvoiceFactory(organization=org(alice), customer=alice_customer, lines=lines(200))

    assert count_queries(alice_api, f"/api/invoices/{few.pk}/") == count_queries(
        alice_api, f"/api/invoices/{many.pk}/"
    )
    assert count_queries(alice_api, f"/api/invoices/{many.pk}/") <= 4


def test_summary_is_one_aggregate_query(alice_api, many_invoices):
    assert count_queries(alice_api, "/api/invoices/summary/") == 2  # the token, then the aggregate
    assert count_queries(alice_api, "/api/invoices/summary/?status=sent&search=Customer") == 2


def test_create_queries_do_not_grow_with_lines(alice_api, alice_customer):
    def create(n):
        body = {
            "customer": alice_customer.pk,
            "due_date": "2030-01-31",
            "lines": LinePayloadFactory.build_batch(n, description="x", quantity="1", unit_price="1.00"),
        }
        with CaptureQueriesContext(connection) as ctx:
            response = alice_api.post("/api/invoices/", body, format="json")
        assert response.status_code == 201
        return len(ctx.captured_queries)

    assert create(1) == create(100)
    assert create(100) <= 10


def test_customer_list_queries_do_not_grow_with_page_size(alice_api, alice, make_customer):
    for i in range(30):
        make_customer(alice, name=f"C{i}")

    assert count_queries(alice_api, "/api/customers/?page_size=1") == count_queries(
        alice_api, "/api/customers/?page_size=100"
    )


@pytest.mark.django_db(transaction=True)
def test_write_requests_make_a_bounded_number_of_queries(alice, alice_api, alice_customer, make_invoice):
    """Counted outside any test transaction, as in production: BEGIN and COMMIT count too."""
    invoice = make_invoice(alice, amount="100.00")

    def count(method, url, body, **headers):
        with CaptureQueriesContext(connection) as ctx:
            response = getattr(alice_api, method)(url, body, format="json", **headers)
        assert response.status_code == 201, response.content
        return len(ctx.captured_queries)

    payment = {"invoice": invoice.pk, "amount": "1.00", "method": "card"}
    # token, BEGIN, lock the invoice, insert the payment, update the invoice, COMMIT
    assert count("post", "/api/payments/", payment) == 6
    # + the key's lock and lookup in one statement, + the key's insert, + the service's own
    # transaction as a savepoint inside the idempotency layer's (SAVEPOINT, RELEASE)
    assert count("post", "/api/payments/", payment, HTTP_IDEMPOTENCY_KEY="p-1") == 10

    def json_lines(n):
        return LinePayloadFactory.build_batch(n, quantity="2", unit_price="5.00")

    body = {"customer": alice_customer.pk, "due_date": "2030-01-31", "lines": json_lines(3)}
    with_key = count("post", "/api/invoices/", {**body, "lines": json_lines(100)}, HTTP_IDEMPOTENCY_KEY="i-1")
    assert count("post", "/api/invoices/", body) <= with_key - 2
    assert with_key <= 12


def _write_counts(alice, alice_api, alice_customer, n_lines):
    """The service's locked read is the only read before a write; the response is built from what
    it returns plus at most one read each of the lines and the payments. Counted outside any test
    transaction, as in production (BEGIN and COMMIT count too), and the same for 1 and 60 lines."""

    def count(method, url, body=None) -> tuple[int, list[str]]:
        with CaptureQueriesContext(connection) as ctx:
            response = getattr(alice_api, method)(url, body, format="json")
        assert response.status_code == 200, response.content
        return len(ctx.captured_queries), [q["sql"] for q in ctx.captured_queries]

    def draft():
        return InvoiceFactory(organization=org(alice), customer=alice_customer, lines=lines(n_lines))

    # An owner's first send creates its number sequence: + its insert and a second lock attempt.
    first, sql = count("post", f"/api/invoices/{draft().pk}/send/")
    assert first <= 12, sql
    # token, BEGIN, lock (customer joined), the sequence's lock, the number's check, UPDATE the
    # invoice, its status change, UPDATE the sequence, COMMIT, the lines (a draft has no payments)
    sent, sql = count("post", f"/api/invoices/{draft().pk}/send/")
    assert sent <= 10, sql
    # token, BEGIN, lock, UPDATE, COMMIT, the lines, the payments
    notes, sql = count("patch", f"/api/invoices/{draft().pk}/", {"notes": "Thanks"})
    assert notes <= 9, sql
    issued = invoice_send(organization=org(alice), invoice_id=draft().pk)
    notes_issued, sql = count("patch", f"/api/invoices/{issued.pk}/", {"notes": "Thanks"})
    assert notes_issued <= 9, sql
    # token, BEGIN, lock, UPDATE, the status change, COMMIT, the lines (nothing paid: no payments)
    voided, sql = count("post", f"/api/invoices/{issued.pk}/void/")
    assert voided <= 8, sql
    body = {
        "lines": LinePayloadFactory.build_batch(n_lines, description="x", quantity="1", unit_price="1.00")
    }
    replaced, sql = count("patch", f"/api/invoices/{draft().pk}/", body)
    assert replaced <= 9, sql
    return sent, notes, voided, replaced


@pytest.mark.django_db(transaction=True)
def test_each_write_reads_its_invoice_once_whatever_its_lines(alice, alice_api, alice_customer):
    few = _write_counts(alice, alice_api, alice_customer, 1)
    many = _write_counts(alice, alice_api, alice_customer, 60)
    assert few == many
