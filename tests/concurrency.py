"""Run a function from many real threads at once, each with its own database connection."""

import threading
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections, connections


def run_concurrently(fn: Callable[[int], Any], count: int, timeout: float = 60) -> list[Any]:
    """Call fn(0..count-1) from `count` threads released together; return results or exceptions."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout)
            results[i] = fn(i)
        except BaseException as exc:
            results[i] = exc
        finally:
            close_old_connections()
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
    return results
