"""A Python client generated from the schema with openapi-python-client, without a warning, runs a
billing scenario against the live server: what a generated client's user would write.

The client sends its key as `Authorization: Bearer <key>` (its default), parses every documented
error into the `Error` or `FieldErrors` model, and names the descending orderings.
"""

import datetime
import importlib
import json
import subprocess
import sys

import httpx
import pytest

PACKAGE = "billing_client"
CONFIG = f"""\
project_name_override: billing-client
package_name_override: {PACKAGE}
post_hooks: []
# The invoice PDF (application/pdf) is a file download, as the generator knows octet-stream bodies.
content_type_overrides:
  application/pdf: application/octet-stream
"""


@pytest.fixture(scope="module")
def client_package(tmp_path_factory):
    from drf_spectacular.generators import SchemaGenerator
    from drf_spectacular.renderers import OpenApiJsonRenderer

    workdir = tmp_path_factory.mktemp("generated")
    schema = workdir / "schema.json"
    schema.write_bytes(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
    config = workdir / "config.yaml"
    config.write_text(CONFIG)

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(schema),
            "--config",
            str(config),
            "--meta",
            "none",
            "--output-path",
            str(workdir / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Warning" not in output, output
    sys.path.insert(0, str(workdir))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(workdir))
        for name in [name for name in sys.modules if name == PACKAGE or name.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def api(name: str):
    return importlib.import_module(f"{PACKAGE}.api.{name}")


def models():
    return importlib.import_module(f"{PACKAGE}.models")


@pytest.mark.django_db(transaction=True)
def test_a_generated_client_bills_and_collects_an_invoice(client_package, live_server):
    m = models()
    anonymous = client_package.Client(base_url=live_server.url)

    registered = api("register.register_create").sync_detailed(
        client=anonymous, body=m.RegisterRequest(username="alice", password="a-long-and-unusual-pass")
    )
    assert registered.status_code == 201
    token = api("login.login_create").sync(
        client=anonymous, body=m.LoginRequest(username="alice", password="a-long-and-unusual-pass")
    )
    assert isinstance(token, m.Token)
    alice = client_package.AuthenticatedClient(base_url=live_server.url, token=token.token)  # "Bearer <key>"
    assert api("me.me_retrieve").sync(client=alice).username == "alice"

    customer = api("customers.customers_create").sync(
        client=alice, body=m.CustomerRequest(name="Acme Corp", email="billing@acme.test")
    )
    assert isinstance(customer, m.Customer)

    draft = api("invoices.invoices_create").sync(
        client=alice,
        idempotency_key="invoice-1",
        body=m.InvoiceInputRequest(
            customer=customer.id,
            currency=m.CurrencyEnum.USD,
            due_date=datetime.date.today() + datetime.timedelta(days=30),
            lines=[
                m.LineInputRequest(description="Consulting", quantity="2", unit_price="50.00", tax_rate="10"),
                m.LineInputRequest(description="Travel", quantity="1", unit_price="15.50"),
            ],
        ),
    )
    assert isinstance(draft, m.InvoiceDetail)
    assert (draft.status, draft.number) == (m.InvoiceStatusEnum.DRAFT, None)
    assert (draft.subtotal, draft.tax_total, draft.total) == ("115.50", "10.00", "125.50")
    assert [line.amount for line in draft.lines] == ["100.00", "15.50"]

    sent = api("invoices.invoices_send_create").sync(client=alice, id=draft.id)
    assert sent.status == m.InvoiceStatusEnum.SENT
    assert sent.number == "INV-000001"

    pay = api("payments.payments_create")
    first = pay.sync_detailed(
        client=alice,
        idempotency_key="payment-1",
        body=m.PaymentInputRequest(invoice=sent.id, amount="50.00", method=m.MethodEnum.BANK_TRANSFER),
    )
    replay = pay.sync_detailed(
        client=alice,
        idempotency_key="payment-1",
        body=m.PaymentInputRequest(invoice=sent.id, amount="50.00", method=m.MethodEnum.BANK_TRANSFER),
    )
    assert first.status_code == replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.parsed.id == first.parsed.id
    assert first.parsed.invoice_status == m.InvoiceStatusEnum.SENT
    assert first.parsed.invoice_balance_due == "75.50"

    rest = pay.sync(
        client=alice,
        idempotency_key="payment-2",
        body=m.PaymentInputRequest(invoice=sent.id, amount="75.50", method=m.MethodEnum.CARD),
    )
    assert (rest.invoice_status, rest.invoice_balance_due) == (m.InvoiceStatusEnum.PAID, "0.00")

    paid_again = pay.sync(
        client=alice,
        body=m.PaymentInputRequest(invoice=sent.id, amount="1.00", method=m.MethodEnum.CASH),
    )
    assert isinstance(paid_again, m.Error)
    assert paid_again.code == m.ErrorCodeEnum.INVALID_TRANSITION

    largest_first = api("payments.payments_list").sync(
        client=alice, ordering=[m.PaymentsListOrderingItem.AMOUNT_DESC]
    )
    assert [payment.amount for payment in largest_first.results] == ["75.50", "50.00"]

    summary = api("invoices.invoices_summary_retrieve").sync(client=alice)
    assert summary.count == 1
    assert summary.by_status.to_dict() == {"draft": 0, "sent": 0, "overdue": 0, "paid": 1, "void": 0}
    assert [total.to_dict() for total in summary.totals] == [
        {
            "currency": "USD",
            "invoiced": "125.50",
            "collected": "125.50",
            "outstanding": "0.00",
            "overdue": "0.00",
        }
    ]
    assert summary.totals[0].currency == m.CurrencyEnum.USD


def test_the_generated_client_parses_both_error_shapes(client_package):
    m = models()
    create = api("invoices.invoices_create")
    client = client_package.AuthenticatedClient(base_url="http://testserver", token="key")

    def parse(status: int, body) -> object:
        return create._parse_response(
            client=client, response=httpx.Response(status, content=json.dumps(body))
        )

    field_errors = parse(400, {"lines": [{}, {"quantity": ["Ensure this value is greater than 0."]}]})
    assert isinstance(field_errors, m.FieldErrors)
    assert field_errors.to_dict() == {"lines": [{}, {"quantity": ["Ensure this value is greater than 0."]}]}
    assert parse(400, {"lines": [["This field may not be null."]]}).to_dict() == {
        "lines": [["This field may not be null."]]
    }
    unreadable = parse(400, {"detail": "JSON parse error", "code": "parse_error"})
    assert isinstance(unreadable, m.Error)
    assert unreadable.code == m.ErrorCodeEnum.PARSE_ERROR
    for status, code in [(413, "request_too_large"), (415, "unsupported_media_type"), (500, "server_error")]:
        error = parse(status, {"detail": "…", "code": code})
        assert isinstance(error, m.Error)
        assert error.code == m.ErrorCodeEnum(code)
