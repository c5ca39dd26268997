"""The reads compiled once (billing.db.CompiledQuery): the invoice writers' locked read
(invoices.locks.lock_invoice). The SQL sent, text and values, is the ORM's own `get()` of the same
queryset, the instances the same (joined rows included), each value in its place, and a FOR UPDATE
read outside a transaction refused as the ORM refuses it — on both databases."""

import pytest
from django.db import connection, transaction
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from billing import db
from invoices.locks import lock_invoice
from invoices.models import Invoice

pytestmark = pytest.mark.django_db


def _orm_get(organization_id, invoice_id, with_customer):
    """lock_invoice as the ORM alone would send it."""
    queryset = Invoice.objects.filter(organization_id=organization_id, pk=invoice_id)
    if with_customer:
        queryset = queryset.select_related(
            "customer", "created_by_user", "created_by_api_key"
        ).select_for_update(of=("self",))
    else:
        queryset = queryset.select_for_update()
    return queryset.get()


def _sent(read):
    with CaptureQueriesContext(connection) as ctx:
        result = read()
    return result, [q["sql"] for q in ctx.captured_queries]


@pytest.mark.parametrize("with_customer", [True, False])
def test_the_locked_read_is_the_orms_get_text_values_and_instances(alice, bob, make_invoice, with_customer):
    invoices = [make_invoice(alice), make_invoice(alice, amount="7.50"), make_invoice(bob)]
    with transaction.atomic():
        for invoice in invoices:  # the same shape, each value in its place
            ours, our_sql = _sent(
                lambda invoice=invoice: lock_invoice(
                    organization_id=invoice.organization_id,
                    invoice_id=invoice.pk,
                    with_customer=with_customer,
                )
            )
            theirs, their_sql = _sent(
                lambda invoice=invoice: _orm_get(invoice.organization_id, invoice.pk, with_customer)
            )
            assert our_sql == their_sql
            assert ours.pk == theirs.pk == invoice.pk
            assert ours.__dict__.keys() == theirs.__dict__.keys()
            for name in ("total", "amount_paid", "status", "number", "currency", "version", "issue_date"):
                assert getattr(ours, name) == getattr(theirs, name)
                assert type(getattr(ours, name)) is type(getattr(theirs, name))
            if with_customer:
                assert ours._state.fields_cache.keys() == theirs._state.fields_cache.keys()
                assert ours.customer.name == theirs.customer.name
                assert ours.created_by_user_id == theirs.created_by_user_id


def test_another_organizations_invoice_is_not_found(alice, bob, make_invoice):
    bobs = make_invoice(bob)
    with transaction.atomic(), pytest.raises(Invoice.DoesNotExist):
        lock_invoice(organization_id=make_invoice(alice).organization_id, invoice_id=bobs.pk)


@pytest.mark.django_db(transaction=True)
def test_a_locked_read_outside_a_transaction_is_refused_as_the_orm_refuses_it(alice, make_invoice):
    invoice = make_invoice(alice)
    if not connection.features.has_select_for_update:
        lock_invoice(
            organization_id=invoice.organization_id, invoice_id=invoice.pk
        )  # SQLite: no lock to take
        return
    with pytest.raises(TransactionManagementError):
        _orm_get(invoice.organization_id, invoice.pk, True)
    with pytest.raises(TransactionManagementError):
        lock_invoice(organization_id=invoice.organization_id, invoice_id=invoice.pk)


def test_switched_off_the_orm_compiles_every_read(alice, make_invoice, monkeypatch):
    invoice = make_invoice(alice)
    monkeypatch.setattr(db, "ENABLED", False)
    with transaction.atomic():
        assert lock_invoice(organization_id=invoice.organization_id, invoice_id=invoice.pk).pk == invoice.pk


def test_the_credential_reads_are_the_orms_own(alice_org):
    from knox.models import get_token_model

    from tests.conftest import client_for, key_client
    from users import auth
    from users.models import ApiKey, Membership

    _, key = key_client(alice_org)
    ours, our_sql = _sent(lambda: auth._API_KEY.fetch(prefix=key.prefix))
    theirs, their_sql = _sent(
        lambda: ApiKey.objects.select_related("organization").filter(prefix=key.prefix).first()
    )
    assert our_sql == their_sql
    assert [k.pk for k in ours] == [theirs.pk]
    assert ours[0].organization.name == theirs.organization.name
    assert auth._API_KEY.fetch(prefix="nothing") == []

    membership = Membership.objects.filter(organization=alice_org).first()
    token, _ = get_token_model().objects.create(user=membership.user, membership=membership)
    ours, our_sql = _sent(lambda: auth._MEMBER_TOKENS.fetch(token_key=token.token_key))
    theirs, their_sql = _sent(
        lambda: list(
            get_token_model()
            .objects.select_related("user", "membership__organization")
            .filter(token_key=token.token_key)
        )
    )
    assert our_sql == their_sql
    assert [(t.pk, t.user.username, t.membership.organization.pk) for t in ours] == [
        (t.pk, t.user.username, t.membership.organization.pk) for t in theirs
    ]
    # And through a request: the credential is still one statement.
    client = client_for(membership.user)
    with CaptureQueriesContext(connection) as ctx:
        assert client.get("/api/me/").status_code == 200
    assert 'FROM "users_membertoken"' in ctx.captured_queries[0]["sql"]


def test_the_memberships_read_of_me_is_the_orms_own(alice_org, bob_org):
    from knox.models import get_token_model

    from tests.conftest import client_for
    from users import auth, views
    from users.models import Membership

    owner = Membership.objects.filter(organization=alice_org).first().user
    Membership.objects.create(organization=bob_org, user=owner, role="viewer")
    ours, our_sql = _sent(lambda: views._MEMBERSHIPS.fetch(user_id=owner.pk))
    theirs, their_sql = _sent(
        lambda: list(
            Membership.objects.filter(user=owner).values_list("organization_id", "organization__name", "role")
        )
    )
    assert our_sql == their_sql
    assert ours == theirs == [(alice_org.pk, alice_org.name, "owner"), (bob_org.pk, bob_org.name, "viewer")]
    assert views._MEMBERSHIPS.fetch(user_id=owner.pk + 10_000) == []

    # `/api/me/` reads them with the token: the ORM's own statement, a row per membership.
    client = client_for(owner)
    token = get_token_model().objects.filter(user=owner).get()
    rows, rows_sql = _sent(lambda: auth._MEMBER_TOKENS_LISTING.fetch(token_key=token.token_key))
    orm, orm_sql = _sent(lambda: list(auth._member_tokens_listing_organizations(token.token_key)))
    assert rows_sql == orm_sql
    assert [(r.pk, r.listed_organization_id, r.listed_role) for r in rows] == [
        (r.pk, r.listed_organization_id, r.listed_role) for r in orm
    ]
    # Through a request: the credential and the organizations, one statement.
    with CaptureQueriesContext(connection) as ctx:
        body = client.get("/api/me/").json()
    assert len(ctx.captured_queries) == 1
    assert [(o["id"], o["name"], o["role"]) for o in body["organizations"]] == ours
    assert (body["organization"]["id"], body["role"]) == (alice_org.pk, "owner")

    # Another token whose key starts the same (knox looks tokens up by the first characters): the
    # right one is found by its digest, and each organization is listed once.
    other, _ = get_token_model().objects.create(
        user=owner, membership=Membership.objects.get(user=owner, organization=bob_org)
    )
    get_token_model().objects.filter(pk=other.pk).update(token_key=token.token_key)
    assert len(auth._MEMBER_TOKENS_LISTING.fetch(token_key=token.token_key)) == 4
    body = client.get("/api/me/").json()
    assert [(o["id"], o["role"]) for o in body["organizations"]] == [
        (alice_org.pk, "owner"),
        (bob_org.pk, "viewer"),
    ]
    assert (body["organization"]["id"], body["role"]) == (alice_org.pk, "owner")


def test_the_detail_reads_are_the_prefetchs_rows(alice, bob, alice_api, make_invoice):
    """An invoice's detail and the response of every write read its lines and payments with one
    compiled statement each: the rows `detail_prefetch` reads (the same order, the creator joined),
    each row's invoice the one read, no statement of its own; the detail's JSON is the one DRF's
    filtered read renders; another organization's invoice is not found."""
    import datetime
    from decimal import Decimal

    from django.db.models import prefetch_related_objects

    from invoices.selectors import detail_prefetch, invoice_detail
    from payments.services import payment_record
    from tests.factories import org

    invoice = make_invoice(alice, amount="90.00")
    for amount, day in (("10.00", 3), ("20.00", 1), ("5.00", 1)):
        payment_record(
            organization=org(alice),
            invoice_id=invoice.pk,
            amount=Decimal(amount),
            method="bank_transfer",
            paid_at=datetime.date(2026, 1, day),
            actor=alice,
        )
    theirs = Invoice.objects.get(pk=invoice.pk)
    prefetch_related_objects([theirs], detail_prefetch("lines"), detail_prefetch("payments"))
    with CaptureQueriesContext(connection) as ctx:
        ours = invoice_detail(organization_id=invoice.organization_id, invoice_id=invoice.pk)
        lines, payments = list(ours.lines.all()), list(ours.payments.all())
        assert {line.invoice for line in lines} | {p.invoice for p in payments} == {ours}
        assert {p.created_by_user.username for p in payments} == {"alice"}
    assert len(ctx.captured_queries) == 3
    assert [line.pk for line in lines] == [line.pk for line in theirs.lines.all()]
    assert [p.pk for p in payments] == [p.pk for p in theirs.payments.all()]
    assert [p.amount for p in payments] == [Decimal("20.00"), Decimal("5.00"), Decimal("10.00")]
    # The relations are querysets as a prefetch leaves them: a further filter is a query of its own.
    assert list(ours.payments.filter(amount=Decimal("5.00"))) == [payments[1]]
    assert ours.lines.count() == len(lines) == 1
    with pytest.raises(Invoice.DoesNotExist):
        invoice_detail(organization_id=org(bob).pk, invoice_id=invoice.pk)

    compiled = alice_api.get(f"/api/invoices/{invoice.pk}/")
    filtered = alice_api.get(f"/api/invoices/{invoice.pk}/?status=sent")  # a filter: DRF's read
    assert compiled.status_code == filtered.status_code == 200
    assert compiled.json() == filtered.json()
    assert alice_api.get(f"/api/invoices/{invoice.pk}/?status=paid").status_code == 404
    # An id DRF's lookup reads though it is not plain digits is still DRF's to answer.
    for odd in (f"+{invoice.pk}", f"{invoice.pk}%20"):
        assert alice_api.get(f"/api/invoices/{odd}/").json() == compiled.json()
    assert alice_api.get("/api/invoices/abc/").status_code == 404
    other = make_invoice(bob)
    assert alice_api.get(f"/api/invoices/{other.pk}/").status_code == 404


def test_a_page_of_the_list_is_the_orms_slice(alice, bob, alice_api, make_invoice):
    """An unfiltered list's page is one compiled read whose SQL is the ORM's own for the view's
    queryset and that slice, text and values; the rows and the JSON those of DRF's filtered read."""
    from invoices.selectors import organization_invoices_page
    from invoices.views import InvoiceViewSet
    from tests.factories import org

    for i in range(7):
        make_invoice(alice, amount=f"{10 + i}.00", send=i % 2 == 0)
    make_invoice(bob)
    organization_id = org(alice).pk
    view_queryset = InvoiceViewSet.queryset.filter(organization_id=organization_id)
    for offset, limit in ((0, 3), (3, 3), (6, 3), (0, 100), (9, 20)):
        ours, our_sql = _sent(
            lambda offset=offset, limit=limit: organization_invoices_page(
                organization_id=organization_id, offset=offset, limit=limit
            )
        )
        theirs, their_sql = _sent(
            lambda offset=offset, limit=limit: list(view_queryset[offset : offset + limit])
        )
        assert our_sql == their_sql
        assert [i.pk for i in ours] == [i.pk for i in theirs]
        assert [i.customer.name for i in ours] == [i.customer.name for i in theirs]
    with pytest.raises(ValueError, match="offset >= 0"):
        organization_invoices_page(organization_id=organization_id, offset=0, limit=0)

    for query in ("page_size=3", "page_size=3&page=3", "page_size=100"):
        compiled = alice_api.get(f"/api/invoices/?{query}").json()
        # A filter that keeps every one of alice's invoices: DRF's filtered queryset and its count.
        filtered = alice_api.get(f"/api/invoices/?{query}&total_min=0").json()
        assert compiled["results"] == filtered["results"]
        assert compiled["count"] == filtered["count"] == 7
        assert (compiled["next"] is None) == (filtered["next"] is None)
    assert alice_api.get("/api/invoices/?page_size=3&page=4").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_a_closed_connection_is_not_kept_alive_by_the_compiled_reads():
    """The converters a compiled read finds for a connection live on that connection: a thread's
    (a greenlet's) connection goes when it is closed, whatever it read."""
    import gc
    import threading
    import weakref

    from django.db import connections

    from invoices.selectors import organization_invoices_page

    kept = []

    def read():
        assert organization_invoices_page(organization_id=10**9, offset=0, limit=1) == []
        kept.append(weakref.ref(connections["default"]))
        connections.close_all()

    for _ in range(3):
        thread = threading.Thread(target=read)
        thread.start()
        thread.join()
    gc.collect()
    assert len(kept) == 3
    assert [ref() for ref in kept] == [None, None, None]
