"""The log's handler: records written to stderr by a thread, so that writing never holds up a request.

Its own module, free of models: LOGGING is configured before the apps are loaded.
"""

import atexit
import contextlib
import copy
import logging
import os
import queue
import threading


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
    """

    def __init__(self, stream=None, max_queued: int = 10_000, interval: float = 0.05):
        super().__init__()
        self.target = logging.StreamHandler(stream)
        self.max_queued = max_queued
        self.interval = interval
        self.dropped = 0
        self._queue: queue.SimpleQueue | None = None
        self._pid = None
        self._stopping = threading.Event()
        self._thread = None
        self._starting = threading.Lock()

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
        self._queue = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()
        atexit.unregister(self._stop)  # once, however many times it starts
        atexit.register(self._stop)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            self._drain()
        self._drain()

    def _drain(self) -> None:
        while True:
            try:
                record = self._queue.get_nowait()
            except queue.Empty:
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
        if self._thread is None or self._pid != os.getpid():
            return
        self._stopping.set()
        self._thread.join(timeout=5)
        self._thread, self._pid = None, None  # a record after this starts a new thread
        # The stream may be closed already (logging.shutdown allows it too).
        with contextlib.suppress(OSError, ValueError):
            self.target.flush()

    def flush(self):
        # What is queued is written by the thread; stopping it is the only wait for it (at exit).
        with contextlib.suppress(OSError, ValueError):
            self.target.flush()
