"""Long CPU work on a server whose requests share one thread (gunicorn's gevent workers).

A gevent worker serves all its connections on one thread, switching between them when one waits on
a socket. A request that computes for seconds without waiting (a long invoice's PDF layout) holds
that thread all the while: every other request of the worker, `/api/health/` and gunicorn's own
heartbeat stall behind it. `off_the_loop` runs such work on a native thread of gevent's pool
instead; the calling request waits for it cooperatively, and the worker's other requests go on (the
interpreter lock passes between the two threads every `sys.getswitchinterval()`, 5 ms). Outside gevent
(sync workers, the task worker, tests) the work runs in place.

The work must not use Django's database connections (they belong to the request's own thread) nor
anything else bound to the calling greenlet: hand it plain values.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def cooperative() -> bool:
    """Whether this process runs on gevent's patched threading (a gevent worker)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


class Busy(Exception):
    """Refused by `off_the_loop`: its thread has `limit` calls of the process running or waiting
    already, or the call did not finish within `timeout` (it goes on, and counts, until it does)."""


_pool = None
_pending = 0  # calls handed to the thread and not finished; changed on the event loop's thread only


def _cpu_pool():
    """One native thread, for the process's lifetime. Python runs one thread at a time, so a
    second would finish nothing sooner; it would only be one more thread for the event loop's to
    share the interpreter with (measured: /api/health/ beside four long renders on two workers,
    max 0.44 s with a thread per render)."""
    global _pool
    if _pool is None:
        from gevent.threadpool import ThreadPool

        _pool = ThreadPool(1)
    return _pool


def _finished(_result) -> None:
    global _pending
    _pending -= 1


def room(limit: int) -> bool:
    """Whether `off_the_loop(..., limit=limit)` would take a call now (ask before preparing one)."""
    return not cooperative() or _pending < limit


def off_the_loop(
    function: Callable[..., T], *args, limit: int | None = None, timeout: float | None = None
) -> T:
    """`function(*args)`: under gevent on a native thread (one for the process: such work queues
    for it in order), the caller waiting without holding up the worker's other requests; in place
    otherwise. Its exception is raised here.

    Under gevent a caller also holds one of the worker's request slots while it waits, so the
    calls are bounded: with `limit` of them running or queued already, `Busy` at once (the slots
    left serve everything else); with none finished after `timeout` seconds, `Busy` too."""
    if not cooperative():
        return function(*args)
    global _pending
    if limit is not None and _pending >= limit:
        raise Busy(f"{_pending} calls are running or waiting already")
    import gevent

    _pending += 1
    # The exception comes back as a value: raised in the pool, gevent would also print it to stderr.
    result = _cpu_pool().spawn(_outcome, function, args)
    result.rawlink(_finished)
    try:
        ok, value = result.get(timeout=timeout)
    except gevent.Timeout:
        raise Busy(f"not finished after {timeout:g} s") from None
    if not ok:
        raise value
    return value


def _outcome(function: Callable, args: tuple) -> tuple[bool, object]:
    try:
        return True, function(*args)
    except BaseException as exc:
        return False, exc
