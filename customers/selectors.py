from django.db import connections, router

from billing import db
from customers.models import Customer

# The count of an unfiltered customer list, without compiling the ORM's `count()` on every request
# (the same statement: tests/test_customers.py pins its value to the ORM's).
_COUNT_SQL = db.keep('SELECT COUNT(*) FROM "customers_customer" WHERE "organization_id" = %s')


def organization_customer_count(*, organization_id: int) -> int:
    """How many customers an organization has (the unfiltered list's `count`)."""
    with connections[router.db_for_read(Customer)].cursor() as cursor:
        cursor.execute(_COUNT_SQL, [organization_id])
        return int(cursor.fetchone()[0])
