"""A real webhook receiver for the tests: an HTTP server on 127.0.0.1 in a thread, recording every
request it gets (headers and body) and answering each with the next scripted reply (a status, a
delay, headers); 200 once the script runs out. Deliveries are checked with the `standardwebhooks`
library — a verifier nobody here wrote.

`run_webhook_jobs()` does what the worker would with the webhook jobs queued so far, in order,
including the retries they queue, in this process (the receiver runs in its own thread).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django_tasks_db.models import DBTaskResult
from standardwebhooks import Webhook

TASK_PATH = "events.tasks.send_webhooks"


@dataclass
class Reply:
    status: int = 200
    delay: float = 0.0  # seconds before answering (longer than the timeout: a timeout)
    trickle: float = 0.0  # seconds between the bytes of the status line (each wait shorter than the timeout)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def verify(self, secret: str):
        """The event, if `secret` signed this request (standardwebhooks raises otherwise)."""
        return Webhook(secret).verify(self.body, self.headers)

    def verifies(self, secret: str) -> bool:
        try:
            self.verify(secret)
        except Exception:
            return False
        return True


class Receiver:
    def __init__(self):
        self.script: list[Reply] = []
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(
                        Received(
                            self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time()
                        )
                    )
                    reply = receiver.script.pop(0) if receiver.script else Reply()
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    if reply.trickle:
                        for byte in f"HTTP/1.1 {reply.status} OK\r\n".encode():
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(reply.trickle)
                        self.wfile.write(b"content-length: 0\r\n\r\n")
                        return
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    self.close_connection = True  # the sender gave up (a timeout): nothing to answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def reply(self, *replies: Reply) -> None:
        with self._lock:
            self.script.extend(replies)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def webhook_jobs() -> list[list[int]]:
    """The delivery ids of each webhook job waiting, in the order queued."""
    rows = DBTaskResult.objects.filter(task_path=TASK_PATH, status="READY").order_by("enqueued_at")
    return [row.args_kwargs["args"][0] for row in rows]


def run_webhook_jobs_once() -> int:
    """Run the webhook jobs queued now (not those they queue); returns how many."""
    rows = list(DBTaskResult.objects.filter(task_path=TASK_PATH, status="READY").order_by("enqueued_at"))
    for row in rows:
        row.task.call(*row.args_kwargs["args"])
        row.delete()
    return len(rows)


def run_webhook_jobs(rounds: int = 20) -> int:
    """Run the webhook jobs queued, and those they queue (retries), until none is left; returns how
    many ran. A job is run whatever its `run_after` (the delivery's own `next_attempt_at` decides,
    as it does for the worker)."""
    ran = 0
    for _ in range(rounds):
        ran_now = run_webhook_jobs_once()
        if not ran_now:
            return ran
        ran += ran_now
    raise AssertionError(f"webhook jobs still queued after {rounds} rounds")
