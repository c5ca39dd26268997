"""The client side of the chaos run (tests/live/chaos.py): one process per client.

Each client loops until the deadline: create an invoice with 1-5 lines (Idempotency-Key), send it,
pay it in 1-3 partial payments (each with its own Idempotency-Key). A request whose outcome is
unknown (connection error, timeout, 5xx, 409 `request_in_progress` or `conflict`) is retried as the
*same* request with the *same* key, with bounded backoff. Now and then a client replays a key on
purpose: after the answer (expects the stored answer again, `Idempotent-Replayed: true`), from two
threads at once (both must end with the same object), or with another body (expects 422).

Every answer that matters goes to the client's journal (JSON lines, flushed at once) which the
parent reads after the run: what was attempted (the key, so a row in the database can be traced to
its request), what was acknowledged (2xx) and every answer the contract does not allow. The
idempotency key also travels in the invoice's `notes` and the payment's `reference`, so a request
applied twice shows up in the database as two rows with one key.

A client acts for one organization with the credential it is given, a member's token or the
organization's API key (both are sent as `Authorization: Token <key>`).

Only the standard library and `requests`: no Django in the clients.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import random
import threading
import time
import uuid
from decimal import ROUND_HALF_UP, Decimal

import requests

COUNTERS = (
    "requests",  # HTTP requests sent, retries included
    "acknowledged",  # 2xx answers
    "retries",  # requests sent again after an unknown outcome
    "replays",  # answers with Idempotent-Replayed: true
    "deliberate_replays",  # keys replayed on purpose
    "lost",  # logical requests given up with their outcome unknown
    "unexpected",  # answers the contract does not allow
    "server_errors",  # 5xx answers
    "connection_errors",  # no answer: refused, reset, timed out
    "in_progress",  # 409 request_in_progress: the first request with the key still runs
    "conflicts",  # 409 conflict: a database constraint refused a concurrent write; retried
    "recovered_by_key",  # a retry answered with the stored answer: the lost one had been applied
    "sends_found_done",  # a retried send found the invoice already sent
)
CENT = Decimal("0.01")
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 10.0
MAX_ATTEMPTS = 40
REQUEST_BUDGET = 30.0  # seconds a logical request may take, retries included
METHODS = ("bank_transfer", "card", "cash", "check", "other")


def quantize(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def random_lines(rng: random.Random) -> tuple[list[dict], Decimal]:
    """1-5 lines and the total the API must compute for them (the contract's rounding)."""
    lines, total = [], Decimal(0)
    for i in range(rng.randint(1, 5)):
        quantity = Decimal(rng.randint(1, 20_000)) / 1000
        unit_price = Decimal(rng.randint(1, 100_000)) / 100
        tax_rate = Decimal(rng.choice((0, 0, 500, 750, 1900, 2000, 2150))) / 100
        amount = quantize(quantity * unit_price)
        total += amount + quantize(amount * tax_rate / 100)
        lines.append(
            {
                "description": f"item {i + 1}",
                "quantity": f"{quantity:.3f}",
                "unit_price": f"{unit_price:.2f}",
                "tax_rate": f"{tax_rate:.2f}",
            }
        )
    return lines, total


def split_amount(rng: random.Random, total: Decimal) -> list[Decimal]:
    """1-3 positive parts (in cents) that add up to `total` exactly."""
    cents = int(total / CENT)
    parts = min(rng.randint(1, 3), cents)
    cuts = sorted(rng.sample(range(1, cents), parts - 1)) if parts > 1 else []
    bounds = [0, *cuts, cents]
    return [Decimal(bounds[i + 1] - bounds[i]) * CENT for i in range(parts)]


class Client:
    def __init__(
        self, *, index, base_url, token, customers, journal_path, counters, seed, deadline, hard_stop
    ):
        self.index = index
        self.base_url = base_url
        self.token = token
        self.customers = customers
        self.counters = counters
        self.rng = random.Random(seed)
        self.deadline = deadline
        self.hard_stop = hard_stop
        self.session = self._session()
        self.journal = open(journal_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in run())
        self.lock = threading.Lock()
        self.sequence = 0

    # --- plumbing --------------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {self.token}"
        return session

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counters[COUNTERS.index(name)] += n

    def record(self, kind: str, **fields) -> None:
        with self.lock:
            self.journal.write(json.dumps({"t": kind, "client": self.index, **fields}) + "\n")
            self.journal.flush()

    def unexpected(self, what: str, response: requests.Response | None = None, **fields) -> None:
        self.count("unexpected")
        if response is not None:
            fields.update(status=response.status_code, body=response.text[:500])
        self.record("unexpected", what=what, **fields)

    def new_key(self, kind: str) -> str:
        self.sequence += 1
        return f"chaos-{kind}-{self.index}-{self.sequence}-{uuid.uuid4().hex[:10]}"

    def call(
        self, method, path, *, body=None, key=None, session=None
    ) -> tuple[requests.Response | None, int]:
        """One logical request, retried as the same request (same key, same body) until it has an
        answer that is not "try again". Returns (response or None when given up, attempts)."""
        session = session or self.session
        headers = {"Idempotency-Key": key} if key else {}
        give_up = min(time.monotonic() + REQUEST_BUDGET, self.hard_stop)
        delay, unanswered = 0.05, False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            self.count("requests")
            if attempt > 1:
                self.count("retries")
            try:
                response = session.request(
                    method,
                    self.base_url + path,
                    json=body,
                    headers=headers,
                    timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                )
            except requests.RequestException:
                self.count("connection_errors")  # applied or not: the same request, the same key again
                unanswered = True
            else:
                code = _code(response) if response.status_code == 409 else None
                if response.status_code >= 500:
                    self.count("server_errors")
                    self.record(
                        "server_error",
                        method=method,
                        path=path,
                        status=response.status_code,
                        body=response.text[:500],
                    )
                elif code == "request_in_progress":
                    self.count("in_progress")
                elif code == "conflict":
                    self.count("conflicts")
                    self.record("conflict", method=method, path=path, key=key, body=response.text[:500])
                else:
                    if response.ok:
                        self.count("acknowledged")
                    if response.headers.get("Idempotent-Replayed") == "true":
                        self.count("replays")
                        if unanswered:
                            self.count("recovered_by_key")
                    return response, attempt
            if time.monotonic() + delay > give_up:
                break
            time.sleep(delay * (0.5 + self.rng.random()))
            delay = min(delay * 2, 1.0)
        self.count("lost")
        self.record("lost", method=method, path=path, key=key)
        return None, MAX_ATTEMPTS

    # --- the flow --------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while time.monotonic() < self.deadline:
                self.invoice_flow()
        finally:
            self.journal.close()

    def invoice_flow(self) -> None:
        lines, total = random_lines(self.rng)
        key = self.new_key("inv")
        body = {
            "customer": self.rng.choice(self.customers),
            "currency": "USD",
            "due_date": (datetime.date.today() + datetime.timedelta(days=30)).isoformat(),
            "notes": key,
            "lines": lines,
        }
        self.record("invoice_attempt", key=key, lines=len(lines), total=str(total))
        invoice = self.create("/api/invoices/", body, key, kind="invoice")
        if invoice is None:
            return
        if (
            invoice["total"] != str(total)
            or len(invoice["lines"]) != len(lines)
            or invoice["status"] != "draft"
        ):
            self.unexpected("invoice created with other figures", key=key, total=str(total), got=invoice)
            return
        if not self.send(invoice["id"]):
            return
        for number, amount in enumerate(split_amount(self.rng, total), start=1):
            key = self.new_key("pay")
            body = {
                "invoice": invoice["id"],
                "amount": str(amount),
                "method": self.rng.choice(METHODS),
                "reference": key,
            }
            self.record("payment_attempt", key=key, invoice=invoice["id"], amount=str(amount))
            payment = self.create("/api/payments/", body, key, kind="payment")
            if payment is None:
                return  # outcome unknown: the rest of this invoice's payments would not add up
            if payment["invoice"] != invoice["id"] or payment["amount"] != str(amount):
                self.unexpected("payment recorded with other figures", key=key, sent=body, got=payment)
                return
            total -= amount
            if payment["invoice_balance_due"] != str(total):
                self.unexpected("balance due after payment", key=key, expected=str(total), got=payment)
            settled = "paid" if total == 0 else "sent"
            if payment["invoice_status"] != settled:
                self.unexpected("invoice status after payment", key=key, expected=settled, got=payment)
            if number == 1 and self.rng.random() < 0.1:
                self.reuse_key_with_other_body("/api/payments/", body, key)

    def create(self, path: str, body: dict, key: str, *, kind: str) -> dict | None:
        """POST with an Idempotency-Key; sometimes the same key twice at once. Returns the 201 body."""
        racing = self.rng.random() < 0.1
        if racing:
            self.count("deliberate_replays")
            response = self.race(path, body, key)
        else:
            response, _ = self.call("POST", path, body=body, key=key)
        if response is None:
            return None
        if response.status_code != 201:
            self.unexpected(f"create {kind}", response, key=key)
            return None
        data = response.json()
        self.acknowledge(kind, key, data, response)
        if not racing and self.rng.random() < 0.15:
            self.count("deliberate_replays")
            again, _ = self.call("POST", path, body=body, key=key)
            if again is None:
                return data
            if again.status_code != 201 or again.headers.get("Idempotent-Replayed") != "true":
                self.unexpected(f"replay of {kind}", again, key=key)
            elif again.json() != data:
                self.unexpected(f"replay of {kind} answered another body", again, key=key, first=data)
            else:
                self.acknowledge(kind, key, again.json(), again)
        return data

    def race(self, path: str, body: dict, key: str) -> requests.Response | None:
        """The same request with the same key from two threads at once: both must end with one object."""
        results: list = [None, None]
        barrier = threading.Barrier(2, timeout=5)

        def go(slot: int, session: requests.Session) -> None:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()
            results[slot] = self.call("POST", path, body=body, key=key, session=session)

        other = self._session()
        thread = threading.Thread(target=go, args=(1, other), daemon=True)
        thread.start()
        go(0, self.session)
        thread.join(REQUEST_BUDGET + 5)
        other.close()
        first, second = results[0][0], (results[1] or (None, 0))[0]
        if first is not None and second is not None:
            if first.status_code == second.status_code == 201:
                if first.json()["id"] != second.json()["id"]:
                    self.unexpected(
                        "one key raced twice made two objects", key=key, a=first.text, b=second.text
                    )
                # create() acknowledges the first answer; the second is an acknowledgement too.
                self.acknowledge("invoice" if "lines" in body else "payment", key, second.json(), second)
            elif second.status_code != 201:
                self.unexpected("raced duplicate", second, key=key)
        return first if first is not None else second

    def acknowledge(self, kind: str, key: str, data: dict, response: requests.Response) -> None:
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        if kind == "invoice":
            self.record(
                "invoice_ack",
                key=key,
                id=data["id"],
                lines=len(data["lines"]),
                total=data["total"],
                replayed=replayed,
            )
        else:
            self.record(
                "payment_ack",
                key=key,
                id=data["id"],
                invoice=data["invoice"],
                amount=data["amount"],
                replayed=replayed,
            )

    def reuse_key_with_other_body(self, path: str, body: dict, key: str) -> None:
        """The same key with another body must be refused (422) and change nothing."""
        self.count("deliberate_replays")
        other = {**body, "amount": str(Decimal(body["amount"]) + CENT)}
        response, _ = self.call("POST", path, body=other, key=key)
        if response is not None and response.status_code != 422:
            self.unexpected("key reused with another body", response, key=key)

    def send(self, invoice_id: int) -> bool:
        """POST send (no idempotency key). A retry after a lost answer may find it already sent (409
        invalid_transition): that counts as done once a GET shows the invoice issued."""
        response, attempts = self.call("POST", f"/api/invoices/{invoice_id}/send/")
        if response is None:
            return False
        if response.status_code == 200 and response.json()["status"] == "sent":
            self.record("send_ack", invoice=invoice_id, number=response.json()["number"])
            return True
        if response.status_code == 409 and _code(response) == "invalid_transition" and attempts > 1:
            check, _ = self.call("GET", f"/api/invoices/{invoice_id}/")
            if check is not None and check.status_code == 200 and check.json()["status"] == "sent":
                self.count("sends_found_done")
                self.record("send_ack", invoice=invoice_id, number=check.json()["number"], confirmed=True)
                return True
            self.unexpected("send refused and the invoice is not sent", check, invoice=invoice_id)
            return False
        self.unexpected("send", response, invoice=invoice_id, attempts=attempts)
        return False


def _code(response: requests.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


def client_main(
    index: int,
    base_url: str,
    token: str,
    customers: list[int],
    journal_path: str,
    counters,
    seed: int,
    deadline: float,
    hard_stop: float,
) -> None:
    """Entry point of a client process. `deadline` and `hard_stop` are time.monotonic() values
    (CLOCK_MONOTONIC is one clock for every process of the machine)."""
    Client(
        index=index,
        base_url=base_url,
        token=token,
        customers=customers,
        journal_path=journal_path,
        counters=counters,
        seed=seed,
        deadline=deadline,
        hard_stop=hard_stop,
    ).run()
