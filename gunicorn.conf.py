"""gunicorn's configuration: `make serve`, and any `gunicorn` started in the project root, read it.

    gunicorn billing.wsgi:application -w 4          # this file gives the rest; flags override it

A slow client must not hold a worker. A sync worker (or a gthread worker's thread) belongs to one
connection from its first byte to its last, so a few clients trickling a request stalled every
worker. Here (measured in tests/live/slow_clients.py):

- **gevent workers**: a connection costs a greenlet, not a worker; each worker keeps up to
  `worker_connections` connections open while it serves requests.
- **Head deadline**: gunicorn's gevent worker reads a request line and headers under
  `gevent.Timeout(keepalive)`, so the head must arrive within `keepalive` seconds of the connection
  (or of the previous response); otherwise the connection is closed without an answer.
- **Body deadline** (`pre_request`, every worker class): a body with a Content-Length up to
  MAX_REQUEST_BYTES is read in full before Django is called, within GUNICORN_BODY_TIMEOUT seconds
  plus one second for every GUNICORN_BODY_MIN_RATE bytes received (mod_reqtimeout's rule): a client
  sending 500 bytes a second or more is never cut; a trickler gets 408 after about 20 s. Django
  never waits on a socket, so a slow client holds no slot and no database connection. A body that
  is larger, or chunked, is not read: the app answers (413 for a large one) and the connection closes.
- **Request slots**: each worker runs at most GUNICORN_REQUEST_SLOTS requests at once, in arrival
  order; the others wait, already read. Each slot keeps its own Django database connection between
  requests (under gevent, Django's per-thread connections would be per greenlet: one for each
  client connection, never reused, never bounded), so CONN_MAX_AGE keeps its meaning and
  PostgreSQL sees at most workers x slots connections from the web tier.
- **Long CPU work off the loop**: a PDF rendered on a request lays out on an OS thread of the
  worker's own (billing.cooperative), so the worker's other requests go on meanwhile; the log
  handler (billing.logs) is safe from that thread, and writes from one of its own.
- **psycopg2 waits cooperatively** (psycopg2's wait callback for coroutine libraries, as psycogreen
  installs it): a request waiting on PostgreSQL (a row lock, a slow query) yields to the others.

Do not set `preload_app` with gevent: Django must be imported after gevent has patched threading.
"""

import collections
import io
import os
import time

from gunicorn.http.body import Body, LengthReader


def _env_number(name, default, kind=int, minimum=0):
    raw = os.environ.get(name, "")
    try:
        value = kind(raw) if raw.strip() else default
    except ValueError:
        raise SystemExit(f"{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"{name} must be at least {minimum}, not {value}")
    return value


wsgi_app = "billing.wsgi:application"
# One a core, as the Makefile (bench/run.py --serving on 2 cores: 2 gevent workers beat 3).
workers = _env_number("WEB_CONCURRENCY", len(os.sched_getaffinity(0)), minimum=1)
worker_class = "gevent"
worker_connections = 1000  # open connections per worker, slow ones included
keepalive = 5  # idle seconds between two requests, and the deadline for a request's head (gevent)
timeout = 30  # a worker that does not report for this long is killed and replaced
graceful_timeout = 30
max_requests = 10000
max_requests_jitter = 1000

BODY_TIMEOUT = _env_number("GUNICORN_BODY_TIMEOUT", 20.0, float)
BODY_MIN_RATE = _env_number("GUNICORN_BODY_MIN_RATE", 500.0, float, minimum=1)
REQUEST_SLOTS = _env_number("GUNICORN_REQUEST_SLOTS", 4, minimum=1)
MAX_BODY_BYTES = _env_number("MAX_REQUEST_BYTES", 1024 * 1024)  # the app's own limit (settings.py)

_TIMEOUT_BODY = b'{"detail": "The request body did not arrive in time.", "code": "request_timeout"}'
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


def _is_gevent(worker) -> bool:
    return any(cls.__module__ == "gunicorn.workers.ggevent" for cls in type(worker).__mro__)


# --- hooks ------------------------------------------------------------------------------------------


def on_starting(server):
    if server.cfg.preload_app and "ggevent" in server.cfg.worker_class.__module__:
        raise SystemExit(
            "preload_app with gevent workers shares one database connection per worker; unset it"
        )


def post_worker_init(worker):
    if _is_gevent(worker):
        _make_psycopg2_cooperative()
        worker.request_slots = _Slots(REQUEST_SLOTS)


def pre_request(worker, req):
    _read_body(req)
    slots = getattr(worker, "request_slots", None)
    if slots is not None:
        req.billing_slot = slots.acquire()


def post_request(worker, req, environ, resp):
    slot = getattr(req, "billing_slot", None)
    if slot is not None:  # pre_request may have stopped before it took one
        req.billing_slot = None
        worker.request_slots.release(slot)


# --- the body deadline ------------------------------------------------------------------------------


class _DeadlineSocket:
    """What gunicorn's body reader calls `recv` on: each call may wait only until the deadline,
    which moves one second later for every BODY_MIN_RATE bytes received."""

    def __init__(self, sock, clock):
        self.sock, self.clock = sock, clock
        self.deadline = clock() + BODY_TIMEOUT

    def recv(self, size):
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            raise TimeoutError("request body deadline")
        self.sock.settimeout(remaining)
        data = self.sock.recv(size)
        self.deadline += len(data) / BODY_MIN_RATE
        return data


def _read_body(req):
    # gunicorn answers `Expect: 100-continue` once the app is called; the body is read before that,
    # so the interim answer is sent here, and only for a body that will be read.
    expects_continue = any(
        name == "EXPECT" and value.lower() == "100-continue" for name, value in req.headers
    )
    if expects_continue:
        req.headers = [(name, value) for name, value in req.headers if name != "EXPECT"]
    reader = req.body.reader
    if not isinstance(reader, LengthReader):  # chunked: Django reads no body without Content-Length
        req.must_close = True
        return
    if reader.length == 0:
        return
    if reader.length > MAX_BODY_BYTES:  # refused by the app (413) unread; nothing more on this connection
        req.must_close = True
        return
    unreader = req.unreader
    sock = unreader.sock
    previous_timeout = sock.gettimeout()
    unreader.sock = _DeadlineSocket(sock, time.monotonic)
    try:
        if expects_continue:
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        data = req.body.read()
    except TimeoutError:
        try:
            sock.settimeout(1)
            sock.sendall(TIMEOUT_RESPONSE)
        except OSError:
            pass
        raise StopIteration("the request body did not arrive in time") from None
    finally:
        unreader.sock = sock
        sock.settimeout(previous_timeout)
    if len(data) < reader.length:
        raise StopIteration("the client closed the connection in the middle of the body")
    req.body = Body(io.BytesIO(data))


# --- gevent: request slots, cooperative psycopg2 ----------------------------------------------------


class _Slots:
    """At most `size` requests of a worker at once, served in arrival order (a released slot goes
    straight to the longest waiter, so a kept-alive connection cannot take it again first). A slot
    holds Django's database connections between two requests; a request gets them for its run."""

    def __init__(self, size):
        self.free = [{} for _ in range(size)]
        self.waiters = collections.deque()

    def acquire(self):
        if self.free and not self.waiters:
            slot = self.free.pop()
        else:
            from gevent.event import AsyncResult

            waiter = AsyncResult()
            self.waiters.append(waiter)
            try:
                slot = waiter.get()
            except BaseException:  # the greenlet is killed (the worker stops): give the slot on
                if waiter.ready():
                    self._hand_on(waiter.get())
                else:
                    self.waiters.remove(waiter)
                raise
        from django.db import connections

        for alias, wrapper in slot.items():
            connections[alias] = wrapper
        return slot

    def release(self, slot):
        from django.db import connections

        for wrapper in connections.all(initialized_only=True):
            kept = slot.get(wrapper.alias)
            if kept is not wrapper:
                if kept is not None:  # replaced during the request
                    kept.close()
                wrapper.inc_thread_sharing()  # used by the greenlets of this slot, one at a time
                slot[wrapper.alias] = wrapper
            del connections[wrapper.alias]
        self._hand_on(slot)

    def _hand_on(self, slot):
        if self.waiters:
            self.waiters.popleft().set(slot)
        else:
            self.free.append(slot)


def _make_psycopg2_cooperative():
    try:
        from psycopg2 import OperationalError, extensions
    except ImportError:  # SQLite only
        return
    from gevent.socket import wait_read, wait_write

    def wait(connection, timeout=None):
        while True:
            state = connection.poll()
            if state == extensions.POLL_OK:
                return
            if state == extensions.POLL_READ:
                wait_read(connection.fileno(), timeout=timeout)
            elif state == extensions.POLL_WRITE:
                wait_write(connection.fileno(), timeout=timeout)
            else:
                raise OperationalError(f"Bad result from poll: {state!r}")

    extensions.set_wait_callback(wait)
