"""Chaos: real `manage.py run_worker` processes SIGKILLed while they deliver webhooks (issue 16).

About 200 events are recorded through the API (customers made and changed, invoices made, changed,
deleted, sent and paid) in an organization with one endpoint subscribed to everything, at a real
receiver on 127.0.0.1 (tests/webhook_helpers.py) that answers slowly (50-100 ms) and now and then
with a 500. Two workers deliver them; every 0.5-1 s one of them, picked at random, is SIGKILLed and
a new one started, for CHAOS_SECONDS; then the last two are killed too and one worker, its
scheduler sweeping every second, drains what they left: deliveries whose lease expired (back in
2 s) and deliveries whose job died with its worker before claiming them (back only once 60 s past
due, webhooks_sweep's grace: when that happens, the run takes about a minute longer).

What it proves, on PostgreSQL and SQLite alike (transactional test, the workers see what the test
committed): every event's delivery ends `delivered` (none `failed`, none lost); the receiver got
every event — each request verified with the `standardwebhooks` library, its body the event as the
API shows it — and nothing else (the set of `webhook-id`s received is the set of event ids), a
duplicate carrying its event's `webhook-id` and the same body; the API answered no 5xx meanwhile.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from events.models import Event, WebhookDelivery
from events.serializers import event_json
from tests.conftest import client_for
from tests.invoice_helpers import INVOICES, invoice_payload, invoice_url
from tests.test_delivery_worker import wait_until, worker_database_url
from tests.webhook_helpers import Receiver, Reply, webhook_jobs

BASE_DIR = Path(django_settings.BASE_DIR)
CHAOS_SECONDS = 12  # workers killed and replaced this long
KILL_EVERY = (0.5, 1.0)  # seconds between two kills
KILL_AIM = 0.3  # seconds a kill may wait for a delivery in flight
RECEIVER_DELAY = (0.05, 0.10)  # seconds the receiver takes to answer
RECEIVER_500 = 0.05  # the share of requests answered 500 (retried: the schedule is compressed)
# A delivery lost with its job (its worker died before claiming it) is put back only once it is
# 60 s past due (webhooks_sweep's grace, whatever DELIVERY_TICK_SECONDS): the drain allows for it.
DRAIN_TIMEOUT = 150

WORKER_ENV = {
    "WEBHOOKS_ALLOW_PRIVATE_NETWORKS": "1",  # the receiver is on 127.0.0.1
    "WEBHOOK_RETRY_SCHEDULE": "0,0,0,0,0",  # six tries, each at once
    "WEBHOOK_LEASE_SECONDS": "2",  # a dead worker's delivery is another's after 2 s
    "WEBHOOK_TIMEOUT_SECONDS": "1",  # shorter than the lease, as in production (15 s < 60 s)
    "DELIVERY_LEASE_SECONDS": "2",  # the PDFs of the sends, killed mid-render too
    "DELIVERY_TICK_SECONDS": "1",  # the scheduler sweeps every second
}


class Worker:
    """`manage.py run_worker` in a process of its own, its output in a file."""

    def __init__(self, log: Path):
        self.log = log
        self.spawned_at = time.time()
        self.output = log.open("wb")
        self.process = subprocess.Popen(
            # --skip-checks: a replacement starts sooner (the system checks are no part of delivery).
            [
                sys.executable,
                "manage.py",
                "run_worker",
                "--interval",
                "0.05",
                "--no-startup-delay",
                "--skip-checks",
            ],
            cwd=BASE_DIR,
            env={
                **os.environ,
                "DATABASE_URL": worker_database_url(),
                "PYTHONUNBUFFERED": "1",
                **WORKER_ENV,
            },
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def started(self) -> bool:
        return "Starting worker" in self.text()

    def startup(self) -> float | None:
        """Seconds from its spawn to its "Starting worker" line (None: killed before)."""
        for line in self.text().splitlines():
            if "Starting worker" in line:
                stamp = json.loads(line)["time"]
                return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() - self.spawned_at
        return None

    def requeued(self) -> int:
        """Deliveries (and outbox rows) its scheduler queued again."""
        return sum(int(n) for n in re.findall(r"scheduler: (\d+) outbox row", self.text()))

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        assert self.process.wait(10) == -signal.SIGKILL, self.text()

    def close(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(10)
        self.output.close()


class Chaos(threading.Thread):
    """Keeps two workers running, SIGKILLing one of the started ones at random every KILL_EVERY and
    starting another in its place, until stopped. Each kill waits (up to KILL_AIM seconds) for a
    request in the receiver's hands, so that it lands mid-delivery more often than not. It touches no
    database (the test's connection is the main thread's)."""

    def __init__(self, tmp_path: Path, rng: random.Random, receiver: Receiver):
        super().__init__(name="chaos", daemon=True)
        self.tmp_path, self.rng, self.receiver = tmp_path, rng, receiver
        self.workers: list[Worker] = []
        self.live: list[Worker] = []
        self.kills = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None
        for _ in range(2):
            self.spawn()

    def spawn(self) -> Worker:
        worker = Worker(self.tmp_path / f"worker-{len(self.workers)}.log")
        self.workers.append(worker)
        self.live.append(worker)
        return worker

    def kill(self, worker: Worker) -> None:
        worker.kill()
        self.live.remove(worker)
        self.kills += 1

    def run(self) -> None:
        try:
            while not self.stop.wait(self.rng.uniform(*KILL_EVERY)):
                for worker in self.live:
                    assert worker.alive(), f"a worker died by itself:\n{worker.text()}"
                started = [w for w in self.live if w.started()]
                if started:  # a kill during Django's start proves nothing: wait for a running one
                    self.aim()
                    self.kill(self.rng.choice(started))
                    self.spawn()
        except BaseException as exc:
            self.error = exc

    def aim(self) -> None:
        """Wait until a request arrived at the receiver in the last 30 ms (it is answered after 50 ms
        or more: its sender is waiting), or KILL_AIM seconds."""
        deadline = time.monotonic() + KILL_AIM
        while time.monotonic() < deadline and not self.stop.is_set():
            requests = self.receiver.requests
            if requests and time.time() - requests[-1].at < 0.03:
                return
            time.sleep(0.005)

    def finish(self) -> None:
        """Stop, and SIGKILL the workers left (whatever they were doing)."""
        self.stop.set()
        self.join(30)
        for worker in list(self.live):
            self.kill(worker)
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.stop.set()
        for worker in self.workers:
            worker.close()


class Api:
    """A member's client that keeps every status the API answered (a 500 is answered, not raised)."""

    def __init__(self, user):
        self.client = client_for(user)
        self.client.raise_request_exception = False
        self.statuses: list[tuple[str, str, int]] = []

    def call(self, method: str, url: str, body: dict | None = None, expect: int = 200) -> dict | None:
        response = getattr(self.client, method)(url, body, format="json")
        self.statuses.append((method.upper(), url, response.status_code))
        assert response.status_code == expect, (method, url, response.status_code, response.content[:2000])
        return response.json() if response.content else None


def record_events(api: Api, rng: random.Random) -> None:
    """205 events through the API: 40 customers made (40), 30 of them changed (30), 70 invoices made
    (70), 35 of them changed (35), 5 deleted (5), 10 sent (10; each a PDF for the workers to render
    too), 5 of those paid (the payment, the invoice changed and paid: 15)."""
    customers = [
        api.call("post", "/api/customers/", {"name": f"Customer {n}", "email": f"c{n}@acme.test"}, 201)["id"]
        for n in range(40)
    ]
    for n, customer_id in enumerate(customers[:30]):
        api.call("patch", f"/api/customers/{customer_id}/", {"name": f"Customer {n} Ltd"})
    invoices = [
        api.call("post", INVOICES, invoice_payload(rng.choice(customers)), 201)["id"] for _ in range(70)
    ]
    for invoice_id in invoices[:35]:
        api.call("patch", invoice_url(invoice_id), {"notes": f"Changed {invoice_id}"})
    for invoice_id in invoices[65:]:
        api.call("delete", invoice_url(invoice_id), expect=204)
    sent = [api.call("post", invoice_url(i, "send"), {"email": False}) for i in invoices[:10]]
    for invoice in sent[:5]:
        payment = {"invoice": invoice["id"], "amount": invoice["balance_due"], "method": "cash"}
        api.call("post", "/api/payments/", payment, expect=201)


def leftovers() -> dict[str, int]:
    """What the workers killed last left: deliveries in a dead worker's hands (`sending`, a lease to
    expire), waiting with a job queued, and waiting with their job lost (it died with its worker,
    RUNNING for ever: only the sweeper's grace brings them back)."""
    queued = {pk for ids in webhook_jobs() for pk in ids}
    left = {"sending": 0, "pending, queued": 0, "pending, job lost": 0}
    for pk, status in WebhookDelivery.objects.exclude(status="delivered").values_list("pk", "status"):
        if status == "pending":
            left["pending, queued" if pk in queued else "pending, job lost"] += 1
        else:
            left[status] = left.get(status, 0) + 1
    return left


def wait_drained(drain: Worker, left: dict[str, int]) -> None:
    """Until every delivery is delivered (at once an error if one failed, or after DRAIN_TIMEOUT)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        now = Counter(WebhookDelivery.objects.values_list("status", flat=True))
        if set(now) == {"delivered"}:
            return
        failed = list(
            WebhookDelivery.objects.filter(status="failed").values_list("pk", "attempts", "last_error")
        )
        assert not failed, f"deliveries failed: {failed}"
        assert drain.alive(), drain.text()
        assert time.monotonic() < deadline, (
            f"not all delivered after {DRAIN_TIMEOUT} s: {now} (after the kills: {left})\n{drain.text()[-5000:]}"
        )
        time.sleep(0.1)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_workers_sigkilled_mid_delivery_every_event_is_delivered_at_least_once_under_its_own_id(
    settings, tmp_path, alice
):
    settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS = True
    # Seeded: the receiver's script, the invoices' customers, the kills' timing and victims (when
    # the kills land, and what the workers are doing then, is the machine's).
    script_rng, data_rng, chaos_rng = (random.Random(f"16-{n}") for n in range(3))
    api = Api(alice)
    started = time.monotonic()
    with Receiver() as receiver:
        script = [
            Reply(
                status=500 if script_rng.random() < RECEIVER_500 else 200,
                delay=script_rng.uniform(*RECEIVER_DELAY),
            )
            for _ in range(5000)
        ]
        receiver.reply(*script)  # the n-th request gets script[n] (then 200 at once)
        endpoint = api.call("post", "/api/webhook-endpoints/", {"url": receiver.url, "events": ["*"]}, 201)
        secret = endpoint["secret"]

        chaos = Chaos(tmp_path, chaos_rng, receiver)
        drain: Worker | None = None
        try:
            wait_until(lambda: all(w.started() for w in chaos.live), 60, "two workers started")
            chaos.start()
            chaos_started = time.monotonic()
            record_events(api, data_rng)
            recorded = time.monotonic()
            time.sleep(max(0.0, CHAOS_SECONDS - (recorded - chaos_started)))
            chaos.finish()
            chaos_ended = time.monotonic()
            left = leftovers()

            drain = Worker(tmp_path / "drain.log")
            wait_drained(drain, left)
            drained = time.monotonic()
            time.sleep(0.5)  # room for a stray copy, if one were still coming
            drain.process.send_signal(signal.SIGTERM)
            assert drain.process.wait(15) == 0, drain.text()
        finally:
            chaos.close()
            if drain is not None:
                drain.close()
        requests = list(receiver.requests)

    events = {event.id: event for event in Event.objects.all()}
    deliveries = list(WebhookDelivery.objects.all())
    is_whole = [len(r.body) == int(r.headers["content-length"]) for r in requests]
    whole = [r for r, w in zip(requests, is_whole, strict=True) if w]
    received = Counter(r.headers["webhook-id"] for r in whole)
    answers = [script[n].status if n < len(script) else 200 for n in range(len(requests))]
    copies_2xx = Counter(
        r.headers["webhook-id"] for r, a, w in zip(requests, answers, is_whole, strict=True) if w and a == 200
    )
    duplicates = {webhook_id: count for webhook_id, count in copies_2xx.items() if count > 1}
    attempts = sum(d.attempts for d in deliveries)
    startups = [t for t in (w.startup() for w in chaos.workers) if t is not None]
    print(  # shown with -s (or -rP)
        f"\nwebhooks chaos ({connection.vendor}): {len(events)} events; {chaos.kills} workers SIGKILLed "
        f"in {chaos_ended - chaos_started:.1f} s ({len(chaos.workers)} started, {len(startups)} got to "
        f"work, after {min(startups):.1f}-{max(startups):.1f} s), the events recorded in the first "
        f"{recorded - chaos_started:.1f} s; {len(requests)} requests "
        f"({len(requests) - len(whole)} cut off by a kill, {answers.count(500)} answered 500); "
        f"{len(duplicates)} events answered 2xx more than once ({sum(duplicates.values()) - len(duplicates)} "
        f"extra copies); {attempts} attempts ({attempts - len(whole)} claimed with no whole request "
        f"sent); left by the last kills: {left}; queued again by the sweepers: "
        f"{sum(w.requeued() for w in [*chaos.workers, drain])}; drained {drained - chaos_ended:.1f} s "
        f"after the last kills; {time.monotonic() - started:.1f} s in all"
    )

    # The API never failed meanwhile.
    assert [s for s in api.statuses if s[2] >= 500] == []

    assert len(events) == 205, Counter(e.type for e in events.values())
    assert len(deliveries) == len(events)  # one endpoint: one delivery an event
    assert {d.event_id for d in deliveries} == set(events)
    assert {(d.status, d.last_error, d.lease_expires_at) for d in deliveries} == {("delivered", "", None)}
    assert {d.endpoint_id for d in deliveries} == {endpoint["id"]}

    # Every request the receiver got whole verifies with standardwebhooks; its body is the event as
    # the API shows it, under the event's own webhook-id. (A request cut off by its sender's death
    # is no delivery: the receiver would refuse it, as standardwebhooks does.)
    bodies: dict[str, set[bytes]] = defaultdict(set)
    answered_200: set[str] = set()
    for n, request in enumerate(requests):
        if not is_whole[n]:
            continue
        payload = request.verify(secret)  # raises unless signed with the secret, and recent
        webhook_id = request.headers["webhook-id"]
        assert payload["id"] == webhook_id, (payload["id"], webhook_id)
        assert webhook_id in events, webhook_id
        assert payload == json.loads(json.dumps(event_json(events[webhook_id]))), webhook_id
        bodies[webhook_id].add(request.body)
        if answers[n] == 200:
            answered_200.add(webhook_id)
    assert set(received) == set(events)  # every event, and nothing else
    assert answered_200 == set(events)  # each one answered 2xx at least once
    # A duplicate is the same delivery again: same webhook-id, same body.
    assert {webhook_id for webhook_id, seen in bodies.items() if len(seen) > 1} == set()

    # The chaos did happen: workers were killed, some with a delivery in hand.
    assert chaos.kills >= 5, chaos.kills
    assert attempts > len(whole) or duplicates or left["sending"], "no kill landed mid-delivery"
