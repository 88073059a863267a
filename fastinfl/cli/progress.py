"""Progress bars on stderr: tqdm's (``tqdm.auto``: a widget in notebooks, text on a terminal).

A bar is drawn only when stderr is a terminal (or a notebook), once its step has run for
``delay`` seconds; ``--quiet`` or the environment variable ``TQDM_DISABLE=1`` turns all of them
off. Long steps are single kernel calls that release the GIL, so a monitor thread calls
``refresh()`` every ``interval`` seconds to keep the elapsed time moving between updates.
"""

import contextlib
import os
import sys
import threading
import time

from tqdm.auto import tqdm

# Bars with a total show count, percentage and time left; a single call (a fit) only its time.
_FORMAT_TOTAL = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]"
_FORMAT_OPEN = "{desc}: {elapsed}"


def _disabled_by_env():
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


@contextlib.contextmanager
def progress(desc, total=None, enabled=True, file=None, delay=1.0, interval=0.2):
    """A tqdm bar for one step, as a context manager yielding the bar (``bar.update(n)``).

    ``enabled=False`` (``--quiet``) or ``TQDM_DISABLE`` set: no output at all. Otherwise tqdm
    decides (``disable=None``): drawn only on a terminal or in a notebook.
    """
    file = sys.stderr if file is None else file
    disable = True if (not enabled or _disabled_by_env()) else None
    bar = tqdm(total=total, desc=desc, file=file, disable=disable, delay=delay, leave=True,
               dynamic_ncols=True, bar_format=_FORMAT_TOTAL if total else _FORMAT_OPEN)
    stop = threading.Event()
    monitor = None
    if not bar.disable:
        def refresh():
            start = time.time()
            while not stop.wait(interval):
                if time.time() - start >= delay:
                    bar.refresh()

        monitor = threading.Thread(target=refresh, name="fastinfl-progress", daemon=True)
        monitor.start()
    try:
        yield bar
    finally:
        stop.set()
        if monitor is not None:
            monitor.join()
        bar.close()


def chunks(total, steps=50, minimum=1):
    """(lo, hi) ranges splitting ``total`` items into about ``steps`` chunks of at least ``minimum``: a
    bar updated once per chunk moves in about ``steps`` steps whatever ``total`` and the cost per item
    (a chunk size fixed in rows would be one chunk, 0 % then 100 %, for a few hundred slow rows)."""
    step = max(minimum, -(-total // steps))
    return [(lo, min(total, lo + step)) for lo in range(0, total, step)]
