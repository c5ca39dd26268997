"""CPU work and logging on a gevent worker (billing.cooperative, billing.logs): a long computation
runs off the event loop, and records logged from that other OS thread neither hang a greenlet nor
wait on the log stream. Under gevent the checks run in a subprocess that patches the standard
library first, as gunicorn's gevent worker does; outside it the work runs in place."""

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from billing.cooperative import cooperative, off_the_loop

ROOT = Path(__file__).resolve().parents[1]


def run_under_gevent(body: str) -> subprocess.CompletedProcess:
    script = "from gevent import monkey\nmonkey.patch_all()\n" + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_outside_gevent_the_work_runs_in_place():
    assert not cooperative()
    assert off_the_loop(lambda a, b: (a + b, threading.get_ident()), 2, 3) == (5, threading.get_ident())


def test_under_gevent_the_loop_goes_on_while_the_work_computes():
    result = run_under_gevent(
        """
        import threading, time
        import gevent
        from billing.cooperative import cooperative, off_the_loop

        def compute(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                sum(range(1000))
            return threading.get_ident()

        ticks = []
        def ticker():
            for _ in range(1000):
                ticks.append(time.monotonic())
                gevent.sleep(0.01)

        assert cooperative()
        loop = gevent.spawn(ticker)
        gevent.sleep(0.05)
        started = time.monotonic()
        worker = off_the_loop(compute, 1.0)
        during = [t for t in ticks if started <= t <= started + 1.0]
        gaps = [b - a for a, b in zip(during, during[1:])]
        loop.kill()
        try:
            off_the_loop(int, "not a number")
        except ValueError as exc:
            raised = str(exc)
        print(worker != threading.get_ident(), len(during), round(max(gaps), 3), raised, sep="|")
        """
    )
    assert result.returncode == 0, result.stderr
    other_thread, ticks, worst_gap, raised = result.stdout.strip().split("|")
    assert other_thread == "True"
    # The ticker ticked every 10 ms or so through the second of computing: never held for long.
    # (Held by the work, it would tick once or not at all; the margins are for a loaded machine.)
    assert int(ticks) >= 15, result.stdout
    assert float(worst_gap) < 0.5, result.stdout
    assert "invalid literal" in raised
    # Raised where it was called, and not also printed by gevent's pool.
    assert "Traceback" not in result.stderr, result.stderr


def test_under_gevent_records_from_another_thread_and_a_stalled_stream_hold_up_nothing():
    result = run_under_gevent(
        """
        import logging, os, threading, time
        import gevent
        from billing.cooperative import off_the_loop
        from billing.logs import BackgroundStreamHandler

        read_end, write_end = os.pipe()
        stream = os.fdopen(write_end, "w", buffering=1)
        handler = BackgroundStreamHandler(stream, max_queued=100_000, interval=0.01)
        log = logging.getLogger("cooperative-test")
        log.addHandler(handler)
        log.propagate = False
        log.setLevel(logging.INFO)

        def from_the_thread(n):
            for i in range(n):
                log.warning("thread %s %s", i, "x" * 200)
            return n

        def from_greenlets(n):
            for i in range(n):
                log.warning("loop %s %s", i, "x" * 200)
                if i % 50 == 0:
                    gevent.sleep(0)

        # Nobody reads the pipe: after 64 KB its writer blocks, for good. The loop must not notice.
        loggers = [gevent.spawn(from_greenlets, 5000) for _ in range(4)]
        written_by_thread = off_the_loop(from_the_thread, 5000)
        gevent.joinall(loggers, timeout=30, raise_error=True)
        ticks = 0
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            gevent.sleep(0.01)
            ticks += 1
        print(written_by_thread, all(g.successful() for g in loggers), ticks, sep="|")
        os._exit(0)  # the writer is blocked on the pipe for good
        """
    )
    assert result.returncode == 0, result.stderr
    written, joined, ticks = result.stdout.strip().split("|")
    assert written == "5000"
    assert joined == "True"  # no greenlet hung on a lock the other thread released
    # The stalled stream held up no greenlet: its writer is an OS thread of its own (a greenlet
    # writing to the full pipe would have blocked the loop, and this process, for good).
    assert int(ticks) >= 20, result.stdout


def test_under_gevent_the_calls_are_bounded_and_timed():
    result = run_under_gevent(
        """
        import time
        import gevent
        from billing import cooperative
        from billing.cooperative import Busy, off_the_loop

        def compute(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                sum(range(1000))
            return seconds

        def call(seconds, **kw):
            try:
                return off_the_loop(compute, seconds, **kw)
            except Busy as exc:
                return f"busy: {exc}"

        # Three at once with room for two: the third is refused at once, the two run in turn.
        calls = [gevent.spawn(call, 0.3, limit=2) for _ in range(3)]
        gevent.joinall(calls)
        print([c.value for c in calls])
        print(cooperative._pending)  # all finished: room again
        print(call(0.05, limit=2))
        # A call that overruns its timeout is refused, and counts until its work is done.
        print(call(0.6, limit=2, timeout=0.1))
        print(cooperative._pending)
        gevent.sleep(0.8)
        print(cooperative._pending)
        """
    )
    assert result.returncode == 0, result.stderr
    bounded, after, again, overran, during, later = result.stdout.strip().splitlines()
    assert bounded == "[0.3, 0.3, 'busy: 2 calls are running or waiting already']"
    assert (after, again) == ("0", "0.05")
    assert overran == "busy: not finished after 0.1 s"
    assert (during, later) == ("1", "0")


def test_under_gevent_a_pdf_renders_on_the_thread():
    """WeasyPrint itself through off_the_loop, three at once, the loop ticking meanwhile."""
    result = run_under_gevent(
        """
        import os, time
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing.settings")
        os.environ.setdefault("DJANGO_SECRET_KEY", "cooperative-test-secret-key-0123456789abcdef")
        import django
        django.setup()
        import gevent
        from delivery import documents
        from billing.cooperative import off_the_loop

        html = "<h1>Invoice</h1>" + "<p>line</p>" * 400
        ticks = []
        def ticker():
            while True:
                ticks.append(1)
                gevent.sleep(0.01)
        loop = gevent.spawn(ticker)
        renders = [
            gevent.spawn(off_the_loop, documents._write_pdf, html, documents.url_fetcher()) for _ in range(3)
        ]
        gevent.joinall(renders, raise_error=True)
        loop.kill()
        print(all(r.value.startswith(b"%PDF-") for r in renders), len(ticks) > 3)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]
