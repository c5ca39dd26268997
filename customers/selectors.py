from django.db import connections, router

from billing import db
from billing.db import CompiledQuery
from customers.models import Customer

# The count of an unfiltered customer list, without compiling the ORM's `count()` on every request
# (the same statement: tests/test_customers.py pins its value to the ORM's).
_COUNT_SQL = db.keep('SELECT COUNT(*) FROM "customers_customer" WHERE "organization_id" = %s')


def organization_customer_count(*, organization_id: int) -> int:
    """How many customers an organization has (the unfiltered list's `count`)."""
    with connections[router.db_for_read(Customer)].cursor() as cursor:
        cursor.execute(_COUNT_SQL, [organization_id])
        return int(cursor.fetchone()[0])


def _list_of(organization_id: int):
    """The list's rows, as the view's queryset reads them when no filter is named (by name)."""
    return Customer.objects.filter(organization_id=organization_id)


_LIST = CompiledQuery(_list_of, organization_id=int)


def organization_customers_page(*, organization_id: int, offset: int, limit: int) -> list[Customer]:
    """A page of the organization's customers by name: one compiled statement (the ORM's own for
    that slice, tests/test_customers.py)."""
    return _LIST.page(organization_id=organization_id, offset=offset, limit=limit)
