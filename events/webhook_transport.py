"""The POST of a webhook delivery, guarded against server-side request forgery at connect time:
the endpoint's host is resolved once, every address it resolves to is checked (loopback, private,
link-local, reserved, multicast and unspecified addresses are refused, IPv4 and IPv6, an IPv4 address
carried in an IPv6 one judged as itself) unless WEBHOOKS_ALLOW_PRIVATE_NETWORKS, and the connection
goes to a checked address — with the host's name in the Host header and, over TLS, in SNI and the
certificate check — so no second lookup can answer differently (DNS rebinding). No proxy from the
environment, no redirects followed, one deadline for the whole exchange.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

RESPONSE_EXCERPT = 500  # characters of a refused delivery's response body kept in `last_error`


class DeliveryRefused(Exception):
    """Not sent: the endpoint's host is (or resolves to) an address deliveries may not go to."""


# What a failed exchange raises (no connection, a timeout, a reset, a malformed answer).
EXCHANGE_ERRORS = (OSError, http.client.HTTPException)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_allowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a delivery may connect to `ip`: a globally routable unicast address, judged by the
    IPv4 address it carries when it carries one (mapped, 6to4, NAT64; Teredo never) — not loopback,
    private, shared, link-local, reserved, multicast or unspecified."""
    if ip.version == 6 and ip.teredo is not None:
        return False  # a tunnel to anywhere, the client's address obfuscated in it
    if ip.version == 6 and (embedded := _embedded_ipv4(ip)) is not None:
        return address_allowed(embedded)
    site_local = ip.version == 6 and ip.is_site_local
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or site_local)


def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (an IP literal: itself), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def checked_addresses(host: str, port: int) -> list[str]:
    """The addresses to connect to for `host`, each checked: one lookup, whose answer is what we
    connect to (no second lookup a rebinding DNS could answer differently). A host with any refused
    address is refused as a whole, unless WEBHOOKS_ALLOW_PRIVATE_NETWORKS."""
    try:
        addresses = resolve(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        raise DeliveryRefused(f"The host {host} does not resolve: {exc}") from None
    if not settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS:
        refused = [a for a in addresses if not address_allowed(ipaddress.ip_address(a.partition("%")[0]))]
        if refused or not addresses:
            raise DeliveryRefused(
                f"The host {host} resolves to {', '.join(refused) or 'nothing'}: not a public address "
                "(deliveries to loopback, private or link-local networks need WEBHOOKS_ALLOW_PRIVATE_NETWORKS)."
            )
    return addresses


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """A connection to an address already checked, for `host` (its Host header): http.client
    itself would look the name up again."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        # A socket of the address's family connected to it: nothing here resolves anything.
        ip = ipaddress.ip_address(self.address.partition("%")[0])
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.connect((str(ip), self.port))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    """The same over TLS: the certificate is checked against `host` (SNI too), not the address."""

    default_port = 443
    tls = ssl.create_default_context()

    def connect(self) -> None:
        super().connect()
        self.sock = self.tls.wrap_socket(self.sock, server_hostname=self.host)


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    retry_after: str | None
    excerpt: str


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float) -> Answer:
    """POST `body` to `url` through the SSRF guard, all of it (connecting, sending, the answer's
    headers and first bytes) within `timeout` seconds. Redirects are answers like any other (a 3xx
    is not a success). Raises DeliveryRefused, or OSError / HTTPException for a failed exchange."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host, port = parts.hostname, parts.port or (443 if https else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + timeout
    connection_class = _PinnedHTTPSConnection if https else _PinnedHTTPConnection
    failure: Exception = TimeoutError(f"no answer within {timeout:g} s")
    for address in checked_addresses(host, port):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        connection = connection_class(host, port, address=address, timeout=remaining)
        try:
            connection.connect()
        except OSError as exc:
            connection.close()
            failure = exc
            continue
        return _exchange(connection, target, body, headers, deadline, timeout)
    raise failure


def _exchange(connection, target: str, body: bytes, headers: dict, deadline: float, timeout: float) -> Answer:
    # A socket timeout bounds each read, not the exchange: a receiver trickling a byte at a time
    # would hold the worker for ever. The watchdog shuts the socket at the deadline instead.
    expired = threading.Event()

    def shut() -> None:
        expired.set()
        if connection.sock is not None:
            with contextlib.suppress(OSError):
                connection.sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(max(deadline - time.monotonic(), 0), shut)
    watchdog.daemon = True
    watchdog.start()
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        excerpt = response.read(RESPONSE_EXCERPT * 4) if not 200 <= response.status < 300 else b""
        return Answer(
            status=response.status,
            reason=response.reason,
            retry_after=response.getheader("retry-after"),
            excerpt=excerpt.decode("utf-8", "replace")[:RESPONSE_EXCERPT],
        )
    except (OSError, http.client.HTTPException):
        if expired.is_set():
            raise TimeoutError(f"no answer within {timeout:g} s") from None
        raise
    finally:
        watchdog.cancel()
        connection.close()
