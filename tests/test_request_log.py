"""The request log (`billing.middleware.RequestLogMiddleware`): one record per request, with its
request id, and never a secret; written by `billing.logs.BackgroundStreamHandler`, which never holds
up a request."""

import io
import logging
import logging.config
import os
import sys
import threading
import time

import pytest

from billing.logs import BackgroundStreamHandler
from tests.conftest import PASSWORD


@pytest.mark.django_db
def test_request_log_has_one_record_per_request_and_no_secrets(api, alice, caplog):
    caplog.set_level(logging.INFO, logger="billing.request")

    login = api.post("/api/login/", {"username": "alice", "password": PASSWORD}, format="json")
    token = login.json()["token"]
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    api.get("/api/customers/?search=acme", HTTP_X_REQUEST_ID="req-123")

    records = [r for r in caplog.records if r.name == "billing.request"]
    assert [(r.method, r.path, r.status) for r in records] == [
        ("POST", "/api/login/", 200),
        ("GET", "/api/customers/?search=acme", 200),
    ]
    assert records[1].user_id == alice.pk
    assert records[1].request_id == "req-123"
    assert records[1].duration_ms >= 0
    everything = " ".join(str(vars(r)) for r in caplog.records)
    assert token not in everything
    assert token[:15] not in everything
    assert PASSWORD not in everything


@pytest.mark.django_db
def test_request_id_is_echoed_or_made_up(api):
    assert api.get("/api/health/", HTTP_X_REQUEST_ID="abc-1")["X-Request-ID"] == "abc-1"
    generated = api.get("/api/health/", HTTP_X_REQUEST_ID="bad\x01id")["X-Request-ID"]
    assert len(generated) == 32
    assert generated.isalnum()


def _record(message: str, **extra) -> logging.LogRecord:
    record = logging.LogRecord("billing.request", logging.INFO, __file__, 1, message, ("x",), None)
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize("log_format", ["json", "plain"])
def test_the_log_handler_writes_the_lines_a_stream_handler_writes(settings, log_format):
    """The records go through a queue and a thread, and come out as they would have."""
    formatter = logging.config.dictConfigClass({"version": 1}).configure_formatter(
        settings.LOGGING["formatters"][log_format]
    )
    try:
        raise ValueError("boom")
    except ValueError:
        failed = _record("failed %s", status=500)
        failed.exc_info = sys.exc_info()
    records = [_record("GET %s", request_id="req-1", status=200, duration_ms=1.5), failed]
    expected, written = io.StringIO(), io.StringIO()
    stream_handler = logging.StreamHandler(expected)
    stream_handler.setFormatter(formatter)
    handler = BackgroundStreamHandler(written)
    handler.setFormatter(formatter)

    for record in records:
        handler.handle(record)  # first: the stream handler caches the traceback's text on the record
        stream_handler.handle(record)
    handler._stop()  # as at exit: what is queued is written

    assert written.getvalue() == expected.getvalue()
    assert "Traceback" in written.getvalue()


def test_a_stalled_log_stream_does_not_hold_up_a_request():
    """Writing blocks (a full pipe): requests go on, the records beyond the queue are dropped and
    counted, and the count is written once the stream moves again."""
    released = threading.Event()

    class StalledStream(io.StringIO):
        def write(self, text):
            released.wait(timeout=30)
            return super().write(text)

    stream = StalledStream()
    handler = BackgroundStreamHandler(stream, max_queued=3)
    handler.setFormatter(logging.Formatter("%(message)s"))

    started = time.monotonic()
    for n in range(50):
        handler.handle(_record(f"request {n} %s"))
    assert time.monotonic() - started < 5
    assert handler.dropped > 0

    released.set()
    time.sleep(0.2)
    handler.handle(_record("after %s"))
    handler._stop()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "request 0 x"
    assert lines[-1] == "after x"
    assert lines[-2].endswith("log records dropped: the log stream did not keep up")
    assert int(lines[-2].split()[0]) == 50 - len(lines[:-2])


def test_each_process_writes_its_own_records(tmp_path):
    """A worker forked after the handler was used starts a thread of its own and writes only its
    records (not the parent's, still queued)."""
    path = tmp_path / "log.txt"
    with path.open("w") as stream:
        handler = BackgroundStreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(process)d %(message)s"))
        handler.handle(_record("parent %s"))
        pid = os.fork()
        if pid == 0:  # the child: log, write at exit
            try:
                handler.handle(_record("child %s"))
                handler._stop()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        handler._stop()
    lines = sorted(path.read_text().splitlines(), key=lambda line: "child" in line)
    assert [line.split()[1:] for line in lines] == [["parent", "x"], ["child", "x"]]
    assert lines[0].split()[0] == str(os.getpid()) != lines[1].split()[0]
