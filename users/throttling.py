"""The login throttle: per client address, at LOGIN_THROTTLE_RATE, for login, register and the admin's login form.

Counts are rows of `ThrottleCounter` in the database, shared by every worker and every server, in fixed
windows of the rate's period aligned to the clock (`10/min`: 10:00:00-10:00:59, 10:01:00-...). A burst
that straddles a boundary may therefore see up to twice the rate within one period.
"""

import ipaddress
import logging
from datetime import UTC, datetime

from django.conf import settings
from django.db import DatabaseError, connections, router, transaction
from django.utils.crypto import salted_hmac
from rest_framework import status
from rest_framework.exceptions import APIException
from rest_framework.throttling import SimpleRateThrottle

from users.models import ThrottleCounter

logger = logging.getLogger(__name__)


class ThrottleUnavailable(APIException):
    """The request could not be counted, so it is refused: a throttle that fails must not open."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Logging in is unavailable for a moment; retry later."
    default_code = "throttle_unavailable"


def client_address(request) -> str:
    """The address of the client that sent `request`, as the login throttle counts it.

    REMOTE_ADDR, unless `TRUSTED_PROXIES` proxies stand in front: each appends the address it received
    the request from to X-Forwarded-For, so the client is the entry that many places from the right; the
    entries left of it are the client's to write and never trusted. A header with fewer entries, or an
    entry that is not an IP address (garbage, overlong), means the request did not come through the
    proxies as configured: it is counted against REMOTE_ADDR, never let through uncounted.
    """
    remote_addr = request.META.get("REMOTE_ADDR") or ""
    proxies = settings.TRUSTED_PROXIES
    if proxies > 0:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
        if len(forwarded) >= proxies:
            address = _canonical(forwarded[-proxies].strip())
            if address is not None:
                return address
    return _canonical(remote_addr) or remote_addr


def _canonical(address: str) -> str | None:
    """`address` in one spelling, or None when it is not an IP address.

    An IPv6 address counts as its /64, the smallest block a subscriber is given: counted one by one,
    a single client could change address on every request.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return f"{ipaddress.IPv6Address(int(ip) >> 64 << 64)}/64"
    return str(ip)


def throttle_key(*, scope: str, address: str) -> str:
    """The counter's key: the scope and a keyed hash of the address (fixed length, no address stored)."""
    digest = salted_hmac("users.throttling", address, algorithm="sha256").hexdigest()
    return f"{scope}:{digest}"


def throttle_count(*, key: str, window_start: datetime) -> int:
    """Count one request against `key` in the window that starts at `window_start`; return the count.

    One statement, INSERT ... ON CONFLICT DO UPDATE ... RETURNING, so concurrent requests from any
    worker each get a count of their own (a read, then a write, would let several see the same one).
    A row of an earlier window starts again at 1; a window that started later (a server whose clock
    lags) is kept and counted into. Its own transaction, a savepoint when the caller has one, so a
    failure cannot break the caller's transaction.
    """
    alias = router.db_for_write(ThrottleCounter)
    connection = connections[alias]
    quote = connection.ops.quote_name
    table = quote(ThrottleCounter._meta.db_table)
    key_column, start_column, count_column = (
        quote(ThrottleCounter._meta.get_field(name).column) for name in ("key", "window_start", "count")
    )
    kept = f"{table}.{start_column} >= EXCLUDED.{start_column}"
    # Built from the model's own identifiers, quoted; the values travel as parameters.
    sql = (
        f"INSERT INTO {table} ({key_column}, {start_column}, {count_column}) VALUES (%s, %s, 1) "  # noqa: S608
        f"ON CONFLICT ({key_column}) DO UPDATE SET "
        f"{count_column} = CASE WHEN {kept} THEN {table}.{count_column} + 1 ELSE 1 END, "
        f"{start_column} = CASE WHEN {kept} THEN {table}.{start_column} ELSE EXCLUDED.{start_column} END "
        f"RETURNING {count_column}"
    )
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        cursor.execute(sql, [key, connection.ops.adapt_datetimefield_value(window_start)])
        return cursor.fetchone()[0]


def throttle_purge(*, scope: str, before: datetime) -> None:
    """Delete the rows of `scope` whose window started before `before`, windows that are over.

    Run when a client starts a new window, so at most once per client and window; a failure only
    leaves rows behind, which the next purge deletes.
    """
    try:
        with transaction.atomic(using=router.db_for_write(ThrottleCounter)):
            ThrottleCounter.objects.filter(key__startswith=f"{scope}:", window_start__lt=before).delete()
    except DatabaseError:
        logger.warning("login throttle: expired counts could not be deleted", exc_info=True)


class LoginRateThrottle(SimpleRateThrottle):
    """Per client address (see `client_address`), at `LOGIN_THROTTLE_RATE` (DRF's syntax, `10/min`).

    A DRF throttle for the login and register views; `users.views.admin_login` reuses it for the
    admin's login form, in the same bucket. Every request is counted, the refused ones too. When the
    count cannot be written the request is refused with 503, never let through.
    """

    scope = "login"
    cache = None  # counts are ThrottleCounter rows, not cache entries

    def get_rate(self):
        return settings.LOGIN_THROTTLE_RATE

    def get_cache_key(self, request, view):
        return throttle_key(scope=self.scope, address=client_address(request))

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.now = self.timer()
        window_start = int(self.now // self.duration) * self.duration
        self.window_end = window_start + self.duration
        started = datetime.fromtimestamp(window_start, tz=UTC)
        try:
            count = throttle_count(key=self.get_cache_key(request, view), window_start=started)
        except DatabaseError:
            logger.exception("login throttle: the request could not be counted and is refused")
            raise ThrottleUnavailable from None
        if count == 1:
            throttle_purge(scope=self.scope, before=started)
        return count <= self.num_requests

    def wait(self):
        return self.window_end - self.now
