"""The log's handler: records written to stderr by a thread, so that writing never holds up a request.

Its own module, free of models: LOGGING is configured before the apps are loaded.
"""

import atexit
import contextlib
import copy
import importlib
import logging
import os
import queue
import sys


def _native(module: str, name: str):
    """`module.name` as the standard library has it, also where gevent patched it (a gevent worker):
    the writer must be an OS thread, not a greenlet — a write to a stalled pipe blocks its whole
    thread, which for a greenlet is every request of the worker — and records may come from other
    OS threads (billing.cooperative), which gevent's locks, queues and events do not wake across.
    Only `_thread`'s and `_queue`'s own are safe: `threading`'s classes call the patched functions."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None:
        return monkey.get_original(module, name)
    return getattr(importlib.import_module(module), name)


class BackgroundStreamHandler(logging.Handler):
    """Write log records to a stream (stderr) from a thread of their own, never from the request's.

    A request only puts its record on a queue; a thread formats and writes what is queued every
    `interval` seconds. So a log stream that is slow or stalled (a full pipe, a log collector that
    stopped reading) never holds up a worker: when `max_queued` records wait, more are dropped and
    counted, and the count is written when the stream moves again. The thread drains the queue on a
    timer rather than waking for each record (as `logging.handlers.QueueListener` does): a wake-up per
    request cost more than the write it moved off the request. It starts in each process on its
    first record (a worker forked from a process that logged gets its own) and writes what is
    queued at exit.

    The formatter configured for this handler formats on the thread, so the lines are the same as a
    `StreamHandler`'s with that formatter; the message and a traceback are rendered beforehand, when
    the objects they name are as they were at the time.

    It takes no lock around `emit` (logging's per-handler lock): putting on the queue is safe from
    any thread as it is, and under gevent that lock would be gevent's, which a greenlet waiting on it
    is never woken from by another OS thread's release (a request logging while a PDF renders on
    billing.cooperative's thread would hang). The writer, its queue and its locks are the
    standard library's own, gevent or not (`_native`).
    """

    def __init__(self, stream=None, max_queued: int = 10_000, interval: float = 0.05):
        super().__init__()
        self.target = logging.StreamHandler(stream)
        self.max_queued = max_queued
        self.interval = interval
        self.dropped = 0
        self.target.lock = _native("_thread", "RLock")()  # the writer's, and flush()'s at exit
        self._queue: queue.SimpleQueue | None = None
        self._pid = None
        # Held while the writer runs: released to stop it (`_stopping`), by it when done (`_running`).
        self._stopping = self._running = None
        self._starting = _native("_thread", "allocate_lock")()

    def createLock(self):
        self.lock = None  # see the class's docstring: logging's acquire() and release() do nothing

    def setFormatter(self, fmt):
        self.target.setFormatter(fmt)

    def emit(self, record):
        if self._pid != os.getpid():
            with self._starting:
                if self._pid != os.getpid():
                    self._start()
        if self._queue.qsize() >= self.max_queued:
            self.dropped += 1
            return
        self._queue.put(self._prepare(record))

    def _prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        record = copy.copy(record)
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            formatter = self.target.formatter or logging.Formatter()
            record.exc_text = record.exc_text or formatter.formatException(record.exc_info)
            record.exc_info = None
        return record

    def _start(self) -> None:
        # A new queue and thread: what a fork inherits is the parent's (its records, no thread).
        allocate_lock = _native("_thread", "allocate_lock")
        self._queue = _native("_queue", "SimpleQueue")()
        self._stopping, self._running = allocate_lock(), allocate_lock()
        self._stopping.acquire()
        self._running.acquire()
        self._pid = os.getpid()
        _native("_thread", "start_new_thread")(self._run, (self._stopping, self._running))
        atexit.unregister(self._stop)  # once, however many times it starts
        atexit.register(self._stop)

    def _run(self, stopping, running) -> None:
        try:
            while not stopping.acquire(timeout=self.interval):
                self._drain()
            self._drain()
        finally:
            running.release()

    def _drain(self) -> None:
        while True:
            try:
                record = self._queue.get_nowait()
            except queue.Empty:  # _queue.Empty
                break
            self.target.handle(record)
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            self.target.handle(self._drop_record(dropped))

    def _drop_record(self, dropped: int) -> logging.LogRecord:
        return logging.LogRecord(
            "billing.logs",
            logging.WARNING,
            __file__,
            0,
            "%s log records dropped: the log stream did not keep up",
            (dropped,),
            None,
        )

    def _stop(self) -> None:
        """Write what is queued and stop the thread (at exit; a stalled stream delays exit 5 s at most)."""
        if self._running is None or self._pid != os.getpid():
            return
        self._stopping.release()
        self._running.acquire(timeout=5)
        self._stopping = self._running = self._pid = None  # a record after this starts a new writer
        # The stream may be closed already (logging.shutdown allows it too).
        with contextlib.suppress(OSError, ValueError):
            self.target.flush()

    def flush(self):
        # What is queued is written by the thread; stopping it is the only wait for it (at exit).
        with contextlib.suppress(OSError, ValueError):
            self.target.flush()
