#!/usr/bin/env python
"""Slow clients: connections trickling their request must not stall the server.

    .venv/bin/python tests/live/slow_clients.py     # `make slow-clients`; a step of .ci/run

What it does, in order:

1. Through tests/live/server.py (LiveServer): creates the PostgreSQL database if it is missing
   (`billing_slow_clients` by default; it is never dropped) and migrates it.
2. Starts gunicorn as `make serve` does: `gunicorn billing.wsgi:application --bind 127.0.0.1:<port>
   --workers N` in the project root (`--port`, else a free one), so that ./gunicorn.conf.py
   configures it (worker class, slots, deadlines), with DJANGO_DEBUG=0; then waits for /api/health/.
   `--worker-class sync|gthread` (with `--threads`) overrides the file's gevent workers, to check
   another class against the same target (bench/run.py --serving compares their throughput);
   `--worker-class gevent`, or none, is the file as shipped.
3. Opens `--body-clients` connections that POST /api/login/ with `Content-Length: 1000` and send one
   byte of the body a second, and `--head-clients` connections that send a request line and then one
   byte of a header a second.
4. With all of them open, times GET /api/health/ ten times, each on a new connection: every one must
   be a 200 within `--max-latency` seconds (1). It also checks that complete requests still work: a
   login with a wrong password is the API's 400 (its body went through gunicorn's buffering), and a
   body sent slowly but faster than the minimum rate (GUNICORN_BODY_MIN_RATE) is not cut; and that
   the trickling clients hold no database connection (at most workers x request slots are open).
5. Waits for the deadlines of gunicorn.conf.py: every head trickler must be closed by the server
   within `keepalive` seconds (plus slack), every body trickler answered 408 within
   GUNICORN_BODY_TIMEOUT (plus slack).
6. Heavy requests: registers a user of its own and, through the API, makes the largest draft the
   contract accepts (500 lines of 500 characters: a PDF of about 170 pages, seconds of layout),
   asks for its PDF on `--heavy-requests` connections at once (default two a worker), and times
   /api/health/ ten times while they are rendered: each within `--max-latency` again; every answer
   a 200 `application/pdf` or, from a worker with PDF_RENDERS_PER_WORKER renders already, a 503
   `pdf_busy`, and at least two PDFs. A gevent worker serves its requests on one thread, so a
   render that kept that thread would stall the rest (billing.cooperative).
7. Stops gunicorn and exits 1 on any failure (2 if the run overran its time limit).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import runpy
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from server import LiveServer, ServerError, database_sessions, live_env, logger

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/billing_slow_clients"
BOOT_TIMEOUT = 30
TIME_LIMIT = 120  # seconds for the whole run, setup included
SLACK = 4.0  # seconds a deadline may be late (a busy machine, the worker's one-second ticks)
WORKER_CLASSES = ("sync", "gthread", "gevent")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--body-clients", type=int, default=50, help="connections trickling a body (50)")
    parser.add_argument("--head-clients", type=int, default=50, help="connections trickling headers (50)")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="as `make serve`")
    parser.add_argument(
        "--worker-class",
        choices=WORKER_CLASSES,
        default=None,
        help="override gunicorn.conf.py's worker class (default: the file's, gevent)",
    )
    parser.add_argument("--threads", type=int, default=4, help="threads a gthread worker (4)")
    parser.add_argument("--max-latency", type=float, default=1.0, help="seconds /api/health/ may take (1)")
    parser.add_argument(
        "--heavy-requests", type=int, default=None, help="largest-draft PDFs asked at once (two a worker)"
    )
    parser.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--keep-log", action="store_true", help="keep the server log")
    return parser.parse_args(argv)


log = logger("slow-clients")


def server_environment(args: argparse.Namespace) -> dict[str, str]:
    return live_env(
        args.database_url, secret_key="slow-clients-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
    )


def gunicorn_config() -> dict:
    """The values ./gunicorn.conf.py gives gunicorn (with this environment)."""
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def worker_options(args: argparse.Namespace, config: dict) -> tuple[str, list[str], int]:
    """The worker class the server runs, the options that select it (none: the file's own) and
    how many database connections its workers may hold: a slot's each (gevent), a thread's each
    (gthread), one a worker (sync)."""
    worker_class = args.worker_class or config["worker_class"]
    if worker_class == config["worker_class"]:
        options: list[str] = []
    else:
        options = [f"--worker-class={worker_class}"]
    if worker_class == "gthread":
        options.append(f"--threads={args.threads}")
    per_worker = {"gevent": config["REQUEST_SLOTS"], "gthread": args.threads}.get(worker_class, 1)
    return worker_class, options, args.workers * per_worker


# --- the trickling clients --------------------------------------------------------------------------


class Trickler:
    """One connection that sends the start of a request and then one byte a second, forever."""

    def __init__(self, kind: str, port: int):
        self.kind = kind
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setblocking(False)
        self.opened = time.monotonic()
        self.closed_at: float | None = None
        self.answer = b""
        if kind == "body":
            start = (
                b"POST /api/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b'Content-Length: 1000\r\n\r\n{"username": "'
            )
        else:
            start = b"GET /api/health/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
        self.sock.sendall(start)

    def tick(self) -> None:
        try:
            self.sock.send(b"a")
        except OSError:
            self.close()

    def readable(self) -> None:
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.answer += data
        else:
            self.close()

    def close(self) -> None:
        if self.closed_at is None:
            self.closed_at = time.monotonic()
            with contextlib.suppress(OSError):
                self.sock.close()

    @property
    def lifetime(self) -> float | None:
        return None if self.closed_at is None else self.closed_at - self.opened


def trickle(tricklers: list[Trickler], stop: threading.Event) -> None:
    """Until `stop` or every connection is closed: a byte a second on each, and read what comes."""
    selector = selectors.DefaultSelector()
    for trickler in tricklers:
        selector.register(trickler.sock, selectors.EVENT_READ, trickler)
    next_tick = time.monotonic() + 1
    while not stop.is_set() and any(t.closed_at is None for t in tricklers):
        for key, _ in selector.select(timeout=max(0.0, min(0.2, next_tick - time.monotonic()))):
            key.data.readable()
            if key.data.closed_at is not None:
                selector.unregister(key.fileobj)
        if time.monotonic() >= next_tick:
            next_tick += 1
            for trickler in tricklers:
                if trickler.closed_at is None:
                    trickler.tick()
                    if trickler.closed_at is not None:
                        selector.unregister(trickler.sock)
    selector.close()


# --- the probes -------------------------------------------------------------------------------------


def timed_request(
    port: int, method: str, path: str, body: bytes | None = None, timeout: float = 15
) -> tuple[int, float, bytes]:
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, time.monotonic() - started, data
    finally:
        connection.close()


def time_health(
    port: int, max_latency: float, failures: list[str], *, during: str, timeout: float
) -> list[float]:
    """Ten GETs of /api/health/, 0.2 s apart, each on a new connection: their latencies (inf for no
    answer); each that is not a 200 within `max_latency` is a failure, and three end the timing."""
    latencies, failed = [], 0
    for attempt in range(10):
        try:
            status, elapsed, _ = timed_request(port, "GET", "/api/health/", timeout=timeout)
        except (OSError, http.client.HTTPException) as error:
            status, elapsed = f"no answer ({error})", float("inf")
        latencies.append(elapsed)
        if status != 200 or elapsed > max_latency:
            failures.append(f"/api/health/ {during} #{attempt + 1}: {status} after {elapsed:.3f} s")
            failed += 1
            if failed == 3:
                failures.append(f"gave up timing /api/health/ {during} after three failures")
                break
        time.sleep(0.2)
    return latencies


def summary(latencies: list[float]) -> str:
    finite = [latency for latency in latencies if latency != float("inf")] or [float("inf")]
    return f"max {max(latencies):.3f} s, median {statistics.median(finite):.3f} s"


def slow_honest_login(port: int, rate: float) -> tuple[int, float]:
    """A login body of 3 KB sent at twice `rate` bytes a second: slow, but not cut."""
    body = json.dumps({"username": "nobody", "password": "x" * 3000}).encode()
    chunk = max(1, int(rate * 2 / 10))  # ten writes a second
    started = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(
            b"POST /api/login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        for offset in range(0, len(body), chunk):
            sock.sendall(body[offset : offset + chunk])
            time.sleep(0.1)
        answer = b""
        while chunk_read := sock.recv(65536):
            answer += chunk_read
    finally:
        sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, time.monotonic() - started


# --- heavy requests ---------------------------------------------------------------------------------

HEAVY_LINES = 500  # invoices.models.MAX_LINES
HEAVY_DESCRIPTION = 500  # Line.description's max_length


def api_call(port: int, method: str, path: str, payload: dict | None = None, token: str | None = None):
    """(status, decoded JSON body) of one API request."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Token {token}"
        body = json.dumps(payload).encode() if payload is not None else None
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None
    finally:
        connection.close()


def largest_draft(port: int) -> tuple[str, int]:
    """(token, draft id): a new user's organization with the largest draft the contract accepts."""
    username, password = f"heavy-{os.getpid()}-{time.time_ns()}", "a long enough password 1234"
    status, body = api_call(port, "POST", "/api/register/", {"username": username, "password": password})
    if status != 201:
        raise RuntimeError(f"register: {status} {body}")
    status, body = api_call(port, "POST", "/api/login/", {"username": username, "password": password})
    if status != 200:
        raise RuntimeError(f"login: {status} {body}")
    token = body["token"]
    status, customer = api_call(port, "POST", "/api/customers/", {"name": "Heavy Customer"}, token)
    if status != 201:
        raise RuntimeError(f"customer: {status} {customer}")
    words = [
        "consulting",
        "design",
        "audit",
        "review",
        "travel",
        "hosting",
        "licence",
        "support",
        "maintenance",
    ]
    lines = [
        {
            "description": " ".join(words[(n + k) % len(words)] for k in range(60))[:HEAVY_DESCRIPTION],
            "quantity": "12345.678",
            "unit_price": "98765.4321",
            "tax_rate": "20",
        }
        for n in range(HEAVY_LINES)
    ]
    payload = {"customer": customer["id"], "due_date": "2099-12-31", "lines": lines}
    status, invoice = api_call(port, "POST", "/api/invoices/", payload, token)
    if status != 201:
        raise RuntimeError(f"invoice: {status} {str(invoice)[:300]}")
    return token, invoice["id"]


def heavy_pdf(port: int, token: str, invoice_id: int, outcomes: list) -> None:
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=90)
    try:
        connection.request(
            "GET", f"/api/invoices/{invoice_id}/pdf/", headers={"Authorization": f"Token {token}"}
        )
        response = connection.getresponse()
        data = response.read()
        kind = response.getheader("content-type")
        if response.status == 503 and kind == "application/json":
            kind = json.loads(data).get("code")  # pdf_busy: the worker's renders were taken
        outcomes.append((response.status, kind, len(data), time.monotonic() - started))
    except (OSError, http.client.HTTPException) as error:
        outcomes.append((f"no answer ({error})", None, 0, time.monotonic() - started))
    finally:
        connection.close()


def heavy_requests(port: int, count: int, max_latency: float, failures: list[str]) -> None:
    """Phase 6 of the module's docstring."""
    try:
        token, invoice_id = largest_draft(port)
    except (RuntimeError, ValueError, OSError, http.client.HTTPException) as error:  # ValueError: not JSON
        failures.append(f"heavy requests: could not make the largest draft: {error}")
        return
    outcomes: list = []
    renders = [
        threading.Thread(target=heavy_pdf, args=(port, token, invoice_id, outcomes)) for _ in range(count)
    ]
    for render in renders:
        render.start()
    time.sleep(0.5)  # every render has started
    latencies = time_health(port, max_latency, failures, during="during the renders", timeout=30)
    rendering = sum(render.is_alive() for render in renders)
    for render in renders:
        render.join(120)
    log(
        f"{count} PDFs of a {HEAVY_LINES}-line draft at once: /api/health/ meanwhile {summary(latencies)}, "
        f"{rendering} still rendering after it; PDFs "
        + ", ".join(
            f"{o[0]}{' ' + str(o[1]) if o[0] != 200 else ''} {o[2] // 1024} KB in {o[3]:.1f} s"
            for o in sorted(outcomes, key=lambda o: o[3])
        )
    )
    if rendering == 0:
        failures.append("heavy requests: every render was done before /api/health/ was timed (no overlap)")
    # A worker renders or queues PDF_RENDERS_PER_WORKER (2) at once and refuses more with 503
    # pdf_busy; which worker takes which connection is the kernel's choice, so all but two may be.
    pdfs = [o for o in outcomes if o[:2] == (200, "application/pdf")]
    bad = [o for o in outcomes if o not in pdfs and o[:2] != (503, "pdf_busy")]
    if bad or len(outcomes) != count or len(pdfs) < min(2, count):
        failures.append(
            f"heavy requests: {len(outcomes)} of {count} answered, {len(pdfs)} PDFs, others {bad[:2]}"
        )


# --- the run ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = server_environment(args)
    config = gunicorn_config()
    keepalive, body_timeout = config["keepalive"], config["BODY_TIMEOUT"]
    min_rate, slots = config["BODY_MIN_RATE"], config["REQUEST_SLOTS"]
    worker_class, options, max_sessions = worker_options(args, config)
    workdir = Path(tempfile.mkdtemp(prefix="billing-slow-clients-"))
    log_path = workdir / "gunicorn.log"
    server = LiveServer(
        env=env,
        port=args.port,
        workers=args.workers,
        options=options,
        database="ensure",
        log_path=log_path,
        boot_timeout=BOOT_TIMEOUT,
    )
    stop = threading.Event()

    def overrun() -> None:
        log(f"the run overran its time limit of {TIME_LIMIT} s: stopping everything")
        server.close()
        os._exit(2)

    watchdog = threading.Timer(TIME_LIMIT, overrun)
    watchdog.daemon = True
    watchdog.start()
    failures: list[str] = []
    try:
        started = time.monotonic()
        try:
            server.open()
        except ServerError as error:
            log(f"FAIL: {error}")
            if tail := server.log_tail():
                print(tail)
            return 1
        port = server.port
        concurrency = {
            "gevent": f"{slots} request slots a worker",
            "gthread": f"{args.threads} threads a worker",
        }.get(worker_class, "one request a worker")
        log(
            f"gunicorn up after {time.monotonic() - started:.1f} s, {args.workers} {worker_class} workers"
            f"{'' if options else ' (gunicorn.conf.py)'}, {concurrency}; keepalive {keepalive} s, "
            f"body deadline {body_timeout:g} s + 1 s per {min_rate:g} bytes"
        )

        tricklers = [Trickler("body", port) for _ in range(args.body_clients)]
        tricklers += [Trickler("head", port) for _ in range(args.head_clients)]
        storm_started = time.monotonic()
        feeder = threading.Thread(target=trickle, args=(tricklers, stop), daemon=True)
        feeder.start()
        time.sleep(1.5)  # every trickler has sent its first bytes, and one more
        log(f"{args.body_clients} body and {args.head_clients} head tricklers open; timing /api/health/")

        latencies = time_health(port, args.max_latency, failures, during="under the storm", timeout=5)
        log(f"/api/health/ under the storm: {summary(latencies)}")

        login = json.dumps({"username": "nobody", "password": "wrong"}).encode()
        try:
            status, _, data = timed_request(port, "POST", "/api/login/", login, timeout=5)
        except (OSError, http.client.HTTPException) as error:
            status, data = f"no answer ({error})", b""
        if status != 400:
            failures.append(f"a complete login got {status} {data[:200]!r}, not the API's 400")
        sessions = database_sessions(args.database_url)
        if sessions > max_sessions:
            failures.append(f"{sessions} database sessions with the tricklers open (at most {max_sessions})")
        try:
            slow_status, elapsed = slow_honest_login(port, min_rate)
        except OSError as error:
            slow_status, elapsed = f"no answer ({error})", float("inf")
        if slow_status != 400:
            failures.append(f"a login body sent at {2 * min_rate:g} bytes/s got {slow_status}, not 400")
        log(
            f"complete login: {status}; slow honest login: {slow_status} after {elapsed:.1f} s; "
            f"{sessions} database sessions"
        )

        body_deadline = storm_started + body_timeout + SLACK
        while time.monotonic() < body_deadline and any(t.closed_at is None for t in tricklers):
            time.sleep(0.5)
        stop.set()
        feeder.join(5)
        for kind, limit in (("head", keepalive), ("body", body_timeout)):
            group = [t for t in tricklers if t.kind == kind]
            if not group:
                continue
            open_ones = [t for t in group if t.closed_at is None]
            late = [t for t in group if t.lifetime is not None and t.lifetime > limit + SLACK]
            lifetimes = [t.lifetime for t in group if t.lifetime is not None]
            span = f"{min(lifetimes):.1f}-{max(lifetimes):.1f} s" if lifetimes else "none closed"
            log(f"{kind} tricklers cut after {span} (deadline {limit:g} s)")
            if open_ones or late:
                failures.append(
                    f"{len(open_ones)} {kind} trickler(s) still open and {len(late)} cut late "
                    f"(deadline {limit:g} s + {SLACK:g} s)"
                )
            if kind == "body":
                not_408 = [t.answer[:40] for t in group if not t.answer.startswith(b"HTTP/1.1 408 ")]
                if not_408:
                    failures.append(f"{len(not_408)} body trickler(s) got no 408, e.g. {not_408[0]!r}")
        for trickler in tricklers:
            trickler.close()

        heavy_requests(port, args.heavy_requests or 2 * args.workers, args.max_latency, failures)

        server.stop()
        server_log = log_path.read_text(errors="replace")
        if "Traceback" in server_log:
            failures.append(
                f"tracebacks in the server log ({log_path if args.keep_log else 'use --keep-log'})"
            )
        for line in failures:
            print(f"  FAILURE {line}")
        log(f"{'FAIL' if failures else 'OK'} after {time.monotonic() - started:.1f} s")
        return 1 if failures else 0
    finally:
        watchdog.cancel()
        stop.set()
        server.close()
        if not args.keep_log:
            for path in workdir.iterdir():
                path.unlink()
            workdir.rmdir()
        else:
            log(f"server log kept: {log_path}")


if __name__ == "__main__":
    sys.exit(main())
