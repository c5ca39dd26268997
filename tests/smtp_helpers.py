"""A real SMTP server for the tests: aiosmtpd on 127.0.0.1, collecting what it receives.

`SmtpServer` listens on a free port of 127.0.0.1 (in a thread of the test process, so a worker in
another process reaches it too); `stop()` takes it down (a client then gets "connection refused"),
`start()` brings it back on the same port. Each message received is parsed with the standard
library's `email` package (`email.policy.default`: an `EmailMessage`, so `get_body`,
`iter_attachments`, `get_content` work). `block_next_data()` makes the server hold the next message
after its data has arrived, before answering, until `release()`: a client is then mid-send for as
long as a test needs (the message counts as received: the server has it, whether or not the client
lives to hear the answer).

The `smtp_server` fixture starts one and points Django's SMTP backend at it (pytest-django forces the
locmem backend otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import socket
import threading
import time
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller

HOST = "127.0.0.1"


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class _Handler:
    def __init__(self, server: SmtpServer):
        self.server = server

    async def handle_DATA(self, smtp, session, envelope):
        server = self.server
        message = email.message_from_bytes(
            envelope.original_content or envelope.content, policy=email.policy.default
        )
        with server.lock:
            server.messages.append(message)
            server.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            blocking = server._block_next
            server._block_next = False
        if blocking:
            server.data_arrived.set()
            # Hold the answer (without blocking the server's loop) until the test releases it.
            deadline = time.monotonic() + 120
            while not server._released.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self, port: int | None = None):
        self.host = HOST
        self.port = port or free_port()
        self.lock = threading.Lock()
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.data_arrived = threading.Event()
        self._released = threading.Event()
        self._block_next = False
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        """As EMAIL_URL writes it."""
        return f"smtp://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> SmtpServer:
        """Listen (again) on this server's port. A stopped aiosmtpd controller has closed its loop, so
        each start is a new controller on the same port."""
        assert self._controller is None, "already running"
        controller = Controller(_Handler(self), hostname=self.host, port=self.port, ready_timeout=10)
        for attempt in range(50):  # the port of a just-stopped server may take a moment to be free
            try:
                controller.start()
                break
            except OSError:
                if attempt == 49:
                    raise
                time.sleep(0.1)
                controller = Controller(_Handler(self), hostname=self.host, port=self.port, ready_timeout=10)
        self._controller = controller
        return self

    def stop(self) -> None:
        """Stop listening: a client connecting now is refused."""
        if self._controller is not None:
            self._release_held()
            self._controller.stop()
            self._controller = None

    def block_next_data(self) -> None:
        """Hold the next message's answer until `release()` (`data_arrived` is set when it is held)."""
        with self.lock:
            self._block_next = True
        self.data_arrived.clear()
        self._released.clear()

    def release(self) -> None:
        self._release_held()

    def _release_held(self) -> None:
        with self.lock:
            self._block_next = False
        self._released.set()

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()
            self.envelopes.clear()

    def wait_for(self, count: int, timeout: float = 30) -> list[EmailMessage]:
        """Wait until `count` messages (at least) have arrived; return them all."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"{count} message(s) expected within {timeout}s, {len(self.messages)} arrived")

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def point_django_at(settings, server: SmtpServer) -> None:
    """Django's SMTP backend, to `server`, in plain text (the pytest-django `settings` fixture)."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = server.host
    settings.EMAIL_PORT = server.port
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 10
    assert settings.EMAIL_CONFIGURED, "EMAIL_URL is set in pyproject's pytest_env"


@pytest.fixture
def smtp_server(settings):
    """A running SmtpServer that Django's email goes to."""
    server = SmtpServer().start()
    point_django_at(settings, server)
    try:
        yield server
    finally:
        server.stop()


# --- reading a received message -------------------------------------------------------------------


def text_part(message: EmailMessage) -> str:
    """The text/plain body, its lines ended with "\\n" (SMTP carries them as CRLF)."""
    return message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")


def html_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None, "no text/html alternative"
    return part.get_content()


def attachments(message: EmailMessage) -> list[tuple[str, str, bytes]]:
    """(file name, content type, bytes) of each attachment."""
    return [
        (part.get_filename(), part.get_content_type(), part.get_content())
        for part in message.iter_attachments()
    ]
