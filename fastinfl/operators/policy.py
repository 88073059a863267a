"""How every kernel call is made: BLAS thread policy and Ctrl-C, in one place for every operation.

Numba code cannot see signals, so long kernels poll a ``stop`` flag (a (1,)
uint8 array) and return early once it is set. :func:`run` starts such a call in
a worker thread while the calling thread waits; on KeyboardInterrupt it sets the
flag, joins the worker and re-raises, so no thread keeps running and the
process stays usable. Small calls (below ``INTERRUPT_MIN_WORK`` element visits)
run directly: a thread start would cost more than the call, and they end
before a Ctrl-C could matter.

Kernels that are parallel over row chunks call BLAS from each Numba thread;
letting OpenBLAS spawn its own threads on top over-subscribes the cores, so
BLAS is held to one thread while such a kernel runs (the limit is process-wide:
the first caller sets it and the last one restores it). A kernel that runs as
one serial chunk keeps BLAS's threads.
"""

import threading
from contextlib import contextmanager, nullcontext

import numpy as np

# Element visits (rows x columns x vectors) from which a call runs in an interruptible worker.
INTERRUPT_MIN_WORK = 1 << 22

_lock = threading.Lock()
_users = 0  # calls inside single_threaded_blas(), over all Python threads
_limiter = None
_controller = None  # threadpoolctl's view of the BLAS libraries, built once (0.4 ms; a limit then 10 us)


@contextmanager
def single_threaded_blas():
    """Limit BLAS to one thread while a ``prange`` kernel calls it per thread (process-wide, counted)."""
    global _users, _limiter, _controller
    with _lock:
        if _users == 0:
            if _controller is None:
                import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS Numba calls)
                from threadpoolctl import ThreadpoolController

                _controller = ThreadpoolController()
            _limiter = _controller.limit(limits=1, user_api="blas")
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                _limiter.restore_original_limits()
                _limiter = None


def blas_threads(flops):
    """Context for a BLAS or LAPACK call of ``flops``: one BLAS thread below BLAS_THREADS_MIN_FLOPS.

    Small calls gain nothing from a second thread, and on a loaded machine they
    wait for it (a 51 x 100 Cholesky solve: 0.08 ms on one thread, 40-70 ms on two).
    """
    from .._config import BLAS_THREADS_MIN_FLOPS

    return single_threaded_blas() if flops < BLAS_THREADS_MIN_FLOPS else nullcontext()


def run(kernel, *args, work, parallel):
    """Return ``kernel(*args, stop)`` under the BLAS policy, interruptible by Ctrl-C.

    ``kernel`` takes a trailing ``stop`` (1,) uint8 array and returns early once
    ``stop[0]`` is set. ``work`` estimates its element visits (decides whether
    a worker thread is worth starting); ``parallel`` says whether it will run
    several row chunks in parallel (then BLAS is held to one thread).
    """
    stop = np.zeros(1, np.uint8)
    with single_threaded_blas() if parallel else nullcontext():
        if work < INTERRUPT_MIN_WORK:
            return kernel(*args, stop)
        return _interruptible(kernel, args, stop)


def call_interruptible(kernel, *args):
    """``kernel(*args, stop)`` in a worker thread that Ctrl-C stops (no BLAS policy)."""
    return _interruptible(kernel, args, np.zeros(1, np.uint8))


def _interruptible(kernel, args, stop):
    outcome = []
    done = threading.Event()

    def work():
        try:
            outcome.append((True, kernel(*args, stop)))
        except BaseException as exc:  # handed to the calling thread
            outcome.append((False, exc))
        finally:
            done.set()

    # Completion is signalled by an Event, not Thread.join: a join interrupted by Ctrl-C can mark
    # the thread finished while it still runs (CPython 3.11's _wait_for_tstate_lock).
    threading.Thread(target=work, name="fastinfl-kernel", daemon=True).start()
    try:
        while not done.wait(0.05):
            pass
    except KeyboardInterrupt:
        stop[0] = 1
        while True:
            try:
                done.wait()
                break
            except KeyboardInterrupt:  # a second Ctrl-C: still wait for the kernel to return
                continue
        raise
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
