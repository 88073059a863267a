"""How every kernel call is made: threads, locking, BLAS and Ctrl-C, in one place for every operation.

Concurrent callers. Any operation may be called from many Python threads at
once. A kernel that runs as one serial chunk (a small call) needs nothing: it
runs on the calling thread without the GIL. A kernel that runs row chunks in
parallel launches Numba's thread pool:

- on a layer that is not thread-safe (``workqueue``: concurrent launches abort
  the process) and until the layer is known (the first launch), parallel
  launches are serialised by one process-wide lock; each then has the whole
  thread budget;
- on ``omp`` and ``tbb`` launches run concurrently and share the thread budget
  (:func:`set_num_threads`, ``FASTINFL_NUM_THREADS``, default all of Numba's
  threads): a call takes ``max(1, budget // calls in flight)`` threads, so T
  callers never start T teams of all threads each (with ``omp`` every calling
  thread owns a team, and T x budget spinning threads collapse throughput).

BLAS. Parallel kernels call BLAS from each Numba thread; letting OpenBLAS spawn
its own threads on top over-subscribes the cores, so BLAS is held to one thread
while any parallel kernel runs (process-wide and counted: the first caller sets
the limit and the last one restores the previous value). The libraries are
found once (threadpoolctl's scan costs milliseconds); setting the limit then
costs microseconds. A kernel that runs as one serial chunk leaves BLAS alone.

Beside NumPy. After a threaded BLAS call OpenBLAS's worker threads spin for
about 0.1 s (2^28 cycles) before they sleep, and a parallel kernel started in
that window shares the cores with them (1.8x slower on 2 cores, issue 26). A
thread count does not stop them; OpenBLAS's ``blas_thread_shutdown_`` does, and
the library's next threaded call starts them again (so does setting a thread
count: a stop-and-restore around every kernel halved a loop of HVPs on the
loaded machine). So the first parallel kernel in flight stops the threads of
NumPy's OpenBLAS (64-bit integers: no kernel calls it; SciPy's, which the
kernels call, is held to one thread as before), only when the calling thread is
the process's only Python thread besides fastinfl's own kernel workers (another
might be inside a BLAS call), and leaves its thread count alone; when they are
stopped already the call returns at once (``FASTINFL_QUIESCE_BLAS=0``: never).
Numba's OpenMP threads spin after a kernel in the same way (3 ms by
default, slowing NumPy and a second process): unless the user set
``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``, importing this module sets
``OMP_WAIT_POLICY=PASSIVE`` before Numba starts OpenMP (bench/RESULTS.md,
"Beside NumPy and a second process").

Ctrl-C. Numba code cannot see signals, so long kernels poll a ``stop`` flag (a
(1,) uint8 array) and return early once it is set. :func:`run` starts such a
call in a worker thread while the calling thread waits; on KeyboardInterrupt it
sets the flag, joins the worker and re-raises, so no thread keeps running and
the process stays usable. Small calls (below ``INTERRUPT_MIN_WORK`` element
visits) run directly: a thread start would cost more than the call.
"""

import ctypes
import os
import sys
import threading
from contextlib import contextmanager, nullcontext

import numba
import numpy as np

from .._config import NUM_THREADS
from ..kernels import _cache as kernel_cache  # the kernels' disk cache, for the command line (cli/compile.py)
from ..kernels._cache import set_compile_notice  # noqa: F401  (fastinfl.set_compile_notice)

# Element visits (rows x columns x vectors) from which a call runs in an interruptible worker.
INTERRUPT_MIN_WORK = 1 << 22
# Numba threading layers that abort on concurrent parallel launches.
UNSAFE_LAYERS = frozenset({"workqueue"})
# Stop NumPy's OpenBLAS's spinning threads before a parallel kernel when no other thread can be calling
# BLAS, for a library of at most QUIESCE_BLAS_MAX_THREADS threads: its next threaded call restarts them,
# tens of microseconds a thread.
QUIESCE_BLAS = os.environ.get("FASTINFL_QUIESCE_BLAS", "1") != "0"
QUIESCE_BLAS_MAX_THREADS = 8

_lock = threading.Lock()  # guards the counters below
_launch_lock = threading.Lock()  # serialises parallel launches on a layer that is not thread-safe
_active = 0  # parallel kernel calls in flight, over all Python threads
_blas = None  # (get, set, shutdown or None) functions of the BLAS libraries, found once
_workers = 0  # fastinfl-kernel threads started (they never exit)
_blas_saved = None  # their thread counts before the limit
_layer = None  # the threading layer, once Numba has chosen it
_budget = None  # threads for parallel kernels (set_num_threads); None until first asked


# ------------------------------------------------------------------ thread budget
def get_num_threads():
    """Threads that fastinfl's parallel kernels use in all (shared by concurrent calls)."""
    global _budget
    if _budget is None:
        _budget = _check_threads(NUM_THREADS, "FASTINFL_NUM_THREADS") if NUM_THREADS else \
            numba.config.NUMBA_NUM_THREADS
    return _budget


def set_num_threads(n):
    """Set the thread budget of fastinfl's parallel kernels (process-wide; all Python threads share it).

    Parameters
    ----------
    n : int, 1 <= n <= numba.config.NUMBA_NUM_THREADS
        One call in flight uses n threads; c concurrent calls use max(1, n // c)
        each. ``FASTINFL_NUM_THREADS`` sets the initial value.

    Raises
    ------
    ValueError
        When n is not an integer in that range.
    """
    global _budget
    _budget = _check_threads(n, "n")


def _check_threads(n, name):
    top = numba.config.NUMBA_NUM_THREADS
    try:
        ok = int(n) == float(n) and 1 <= int(n) <= top
    except (TypeError, ValueError):
        ok = False
    if not ok or isinstance(n, bool):
        raise ValueError(f"{name} must be an integer between 1 and NUMBA_NUM_THREADS={top}; got {n!r}.")
    return int(n)


# ------------------------------------------------------------------ threading layers
def _preload_tbb():
    """Make Numba's ``tbb`` layer loadable when the ``tbb`` wheel put libtbb in ``sys.prefix/lib``.

    pip installs libtbb.so.12 into the environment's lib/, which the dynamic loader
    does not search; loading it by path first lets Numba's tbbpool find it.
    """
    if not sys.platform.startswith("linux"):
        return
    path = os.path.join(sys.prefix, "lib", "libtbb.so.12")
    if os.path.exists(path):
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            pass


def available_layers():
    """The Numba threading layers that can be loaded here (of "tbb", "omp", "workqueue")."""
    import importlib

    _preload_tbb()
    found = []
    for name, module in (("tbb", "tbbpool"), ("omp", "omppool"), ("workqueue", "workqueue")):
        try:
            importlib.import_module(f"numba.np.ufunc.{module}")
            found.append(name)
        except ImportError:
            pass
    return found


def threading_layer():
    """Numba's threading layer once a parallel kernel has run, else None."""
    global _layer
    if _layer is None:
        try:
            _layer = numba.threading_layer()
        except ValueError:  # no parallel launch yet
            return None
    return _layer


def _launch_is_safe():
    layer = threading_layer()
    if layer is None:  # first launch: Numba picks the layer now
        return False
    return layer not in UNSAFE_LAYERS


def _quiet_openmp():
    """OMP_WAIT_POLICY=PASSIVE unless the user chose a wait policy (before Numba loads OpenMP)."""
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


_quiet_openmp()

# Numba loads its threading layer on the first parallel kernel, which may be one that this module
# does not launch (a serial-sized call of a parallel driver). When the user asked for tbb (explicitly
# or as "threadsafe"), make the pip wheel's libtbb loadable before that.
if str(numba.config.THREADING_LAYER).lower() in ("tbb", "threadsafe"):
    _preload_tbb()


# ------------------------------------------------------------------ BLAS
def _find_blas():
    """(get, set, shutdown) functions of every BLAS library loaded (found once by threadpoolctl).

    With pip wheels these are two OpenBLAS builds with a thread pool each: NumPy's
    (libscipy_openblas64_) and SciPy's (libscipy_openblas, which Numba's BLAS calls
    use); tests/test_concurrency.py checks both. A BLAS loaded after this first scan
    is not limited. For OpenBLAS the library's own C functions are called through
    ctypes (under a microsecond); threadpoolctl's wrappers cost several microseconds per call.
    ``shutdown``: OpenBLAS's ``blas_thread_shutdown_`` for a pthreads OpenBLAS with 64-bit integers
    (NumPy's), which no kernel calls (SciPy's cython_blas, Numba's BLAS, has 32-bit ones); else None.
    """
    import scipy.linalg.cython_blas  # noqa: F401  (load the BLAS Numba calls)
    from threadpoolctl import ThreadpoolController

    found = []
    for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
        fast, shutdown = None, None
        if lib.internal_api == "openblas":
            try:
                fast = (lib._get_symbol("openblas_get_num_threads"), lib._get_symbol("openblas_set_num_threads"))
            except Exception:  # another threadpoolctl version: its public methods below
                fast = None
            if lib.threading_layer == "pthreads" and "64" in str(getattr(lib, "_symbol_suffix", "")):
                shutdown = getattr(getattr(lib, "dynlib", None), "blas_thread_shutdown_", None)
        found.append((*(fast if fast and all(fast) else (lib.get_num_threads, lib.set_num_threads)), shutdown))
    return found


def _only_thread():
    """No Python thread but the caller and fastinfl's kernel workers is alive (none can be in BLAS)."""
    return threading.active_count() <= 1 + _workers


def _blas_limit(kernel=False):
    """Hold every BLAS library to one thread (called on the first call in flight). For a parallel
    kernel (``kernel``) in a single-threaded program, a library no kernel calls (NumPy's) is left at
    its count and its threads are stopped instead: setting a count would start them again."""
    global _blas, _blas_saved
    if _blas is None:
        _blas = _find_blas()
    quiesce = kernel and QUIESCE_BLAS and _only_thread()
    _blas_saved = []
    for get, set_threads, shutdown in _blas:
        n = get()
        if quiesce and shutdown is not None and n <= QUIESCE_BLAS_MAX_THREADS:
            shutdown()  # returns at once when they are stopped already
            n = 1  # nothing to restore
        elif n != 1:
            set_threads(1)
        _blas_saved.append(n)


def _blas_restore():
    for (_, set_threads, _), n in zip(_blas, _blas_saved):
        if n != 1:
            set_threads(n)


@contextmanager
def single_threaded_blas():
    """BLAS held to one thread inside the block (process-wide, counted with the parallel kernel calls)."""
    global _active
    with _lock:
        _active += 1
        if _active == 1:
            _blas_limit()
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0:
                _blas_restore()


@contextmanager
def _parallel_call():
    """Enter a parallel kernel call: the launch lock if needed, BLAS limit; yields the thread count."""
    global _active
    serial_launch = not _launch_is_safe()
    if serial_launch:
        _launch_lock.acquire()
    try:
        with _lock:
            _active += 1
            if _active == 1:
                _blas_limit(kernel=True)
            budget = get_num_threads()
            threads = budget if serial_launch else max(1, budget // _active)
        try:
            yield threads
        finally:
            with _lock:
                _active -= 1
                if _active == 0:
                    _blas_restore()
    finally:
        if serial_launch:
            _launch_lock.release()


def _set_threads(n):
    """Numba's thread count for the calling thread (thread-local in Numba; set only when it changes)."""
    if numba.get_num_threads() != n:
        numba.set_num_threads(n)


def blas_threads(flops):
    """Context for a BLAS or LAPACK call of ``flops``: one BLAS thread below BLAS_THREADS_MIN_FLOPS.

    Small calls gain nothing from a second thread, and on a loaded machine they
    wait for it.
    """
    from .._config import BLAS_THREADS_MIN_FLOPS

    return single_threaded_blas() if flops < BLAS_THREADS_MIN_FLOPS else nullcontext()


# ------------------------------------------------------------------ the one entry point
def run(kernel, *args, work, parallel):
    """Return ``kernel(*args, stop)`` under the thread, lock and BLAS policy, interruptible by Ctrl-C.

    ``kernel`` takes a trailing ``stop`` (1,) uint8 array and returns early once
    ``stop[0]`` is set. ``work`` estimates its element visits (decides whether
    a worker thread is worth starting); ``parallel`` says whether it may run
    several row chunks in parallel (then the launch follows the layer's
    locking, the thread budget and the BLAS limit).
    """
    stop = np.zeros(1, np.uint8)
    if not parallel:
        if work < INTERRUPT_MIN_WORK:
            return kernel(*args, stop)
        return _interruptible(kernel, args, stop, None)
    with _parallel_call() as threads:
        if work < INTERRUPT_MIN_WORK:
            _set_threads(threads)
            return kernel(*args, stop)
        return _interruptible(kernel, args, stop, threads)


def call_interruptible(kernel, *args):
    """``kernel(*args, stop)`` in a worker thread that Ctrl-C stops (no thread or BLAS policy: a reused
    worker keeps the Numba thread count of its last job; for serial kernels)."""
    return _interruptible(kernel, args, np.zeros(1, np.uint8), None)


class _Worker:
    """A long-lived kernel thread. Reused, so that its Numba thread pool (with ``omp``, a team per
    calling thread) is created once, not on every call (a fresh thread per call costs about a millisecond)."""

    def __init__(self):
        global _workers
        self.job = None
        self.ready = threading.Event()
        with _idle_lock:
            _workers += 1
        threading.Thread(target=self._loop, name="fastinfl-kernel", daemon=True).start()

    def _loop(self):
        while True:
            self.ready.wait()
            self.ready.clear()
            job, self.job = self.job, None
            job()


_idle = []  # idle workers, reused last-in first-out
_idle_lock = threading.Lock()


def _reset_after_fork():
    global _idle_lock, _workers
    _idle.clear()  # their threads do not exist in a forked child
    _workers = 0
    _idle_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _interruptible(kernel, args, stop, threads):
    outcome = []
    done = threading.Event()

    def work():
        try:
            if threads is not None:
                _set_threads(threads)
            outcome.append((True, kernel(*args, stop)))
        except BaseException as exc:  # handed to the calling thread
            outcome.append((False, exc))
        finally:
            done.set()

    with _idle_lock:
        worker = _idle.pop() if _idle else None
    if worker is None:
        worker = _Worker()
    worker.job = work
    worker.ready.set()
    # Completion is signalled by an Event, not Thread.join: a join interrupted by Ctrl-C can mark
    # the thread finished while it still runs (CPython 3.11's _wait_for_tstate_lock).
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
    finally:
        if done.is_set():  # the worker is back at its wait: reusable
            with _idle_lock:
                _idle.append(worker)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
