"""Peak memory of one call: allocations traced by tracemalloc, and the rise of the process's resident set.

tracemalloc sees NumPy's array buffers and Numba's NRT allocations (np.empty
inside a kernel, in any thread), so its peak is the call's extra heap memory,
exactly. The resident-set rise is VmHWM after the call (the high-water mark,
reset just before it through /proc/self/clear_refs) minus VmRSS before it, on
Linux only: a lower bound, since memory the allocator kept from earlier calls
is reused without raising it.
"""

import gc
import tracemalloc


def _status_bytes(key):
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM, RssAnon, RssFile, ...) in bytes; None elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_high_water_mark():
    """Reset VmHWM to the current VmRSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_memory(fn):
    """Run ``fn()`` twice: (its result, peak bytes traced by tracemalloc, peak resident-set rise or None).

    The first run measures the resident set (no tracing overhead); the second
    traces allocations. Both are measured after a garbage collection, with what
    ``fn`` returns counted (it is alive at the end of the call).
    """
    gc.collect()
    rss0 = _status_bytes("VmRSS")
    reset = rss0 is not None and _reset_high_water_mark()
    result = fn()
    hwm = _status_bytes("VmHWM") if reset else None
    rss_rise = None if hwm is None else max(0, hwm - rss0)
    del result
    gc.collect()
    tracemalloc.start()
    try:
        result = fn()
        traced = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, traced, rss_rise
