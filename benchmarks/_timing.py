"""Timers wrapped around a library's functions, for the benchmarks' breakdowns."""

import threading
import time


def timed(owner, name, record):
    """Replace ``owner.name`` by a wrapper that times each call; return the original.

    After each call (also one that raises), ``record(args, kwargs, thread,
    start, end)`` gets its arguments, the name of the thread that ran it and
    its ``time.perf_counter`` start and end. Put the original back with
    ``setattr(owner, name, original)`` when done.
    """
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            end = time.perf_counter()
            record(args, kwargs, threading.current_thread().name, start, end)

    setattr(owner, name, wrapper)
    return inner
