"""Ctrl-C for long kernels: Numba code cannot see signals, so it polls a flag instead."""

import threading

import numpy as np


def call_interruptible(kernel, *args):
    """Return ``kernel(*args, stop)`` run so that Ctrl-C stops it within one row block or CG iteration.

    ``kernel`` is a ``nogil`` kernel that returns early once ``stop[0]`` (a (1,)
    uint8 array) is set. It runs in a worker thread while the calling thread
    waits; on KeyboardInterrupt the flag is set, the worker is joined and the
    interrupt re-raised, so no thread keeps running and the process stays usable.
    """
    stop = np.zeros(1, np.uint8)
    outcome = []

    def work():
        try:
            outcome.append((True, kernel(*args, stop)))
        except BaseException as exc:  # handed to the calling thread
            outcome.append((False, exc))

    worker = threading.Thread(target=work, name="fastinfl-kernel", daemon=True)
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.05)
    except KeyboardInterrupt:
        stop[0] = 1
        worker.join()
        raise
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
