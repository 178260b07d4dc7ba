"""Running independent upstream queries at the same time.

Under gunicorn's gevent worker the standard library is patched and threads are
greenlets, so a small pool of them is cheap and its queries wait on their sockets
side by side; elsewhere (tests, other servers) they are ordinary threads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

MAX_PARALLEL = 12  # a 1000-day period is 10 usage windows, plus the subscription


def in_parallel[T](calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run `calls` at once and return their results in order.

    All calls are waited for; if any failed, the exception of the first failed call
    (in the given order) is raised, so the error reported does not depend on timing.
    """
    if len(calls) == 1:
        return [calls[0]()]
    with ThreadPoolExecutor(max_workers=min(len(calls), MAX_PARALLEL), thread_name_prefix="billing") as pool:
        futures = [pool.submit(call) for call in calls]
    return [future.result() for future in futures]
