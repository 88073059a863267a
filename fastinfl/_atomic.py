"""Atomic file writes: the previous file stays intact until the new one is complete on disk.

``atomic_write(path)`` writes to a temporary file in the same directory (so the final
``os.replace`` is a rename within one file system), flushes and fsyncs it, then renames
it over ``path``. On any error, Ctrl-C (KeyboardInterrupt) included, the temporary file
is removed and ``path`` is left as it was; an OSError (disk full, EFBIG under
``ulimit -f``, permissions) becomes :class:`WriteError` naming ``path``.
"""

import contextlib
import os
import tempfile


class WriteError(OSError):
    """Writing a file failed; the message names the file and the previous file (if any) is intact."""


@contextlib.contextmanager
def atomic_write(path, mode="wb", **open_kwargs):
    """Context manager: a file object open on a temporary sibling of ``path``, renamed over it on success."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    except OSError as exc:
        raise _write_error(path, exc, False) from None
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):  # keep the permissions of the file being replaced
            with contextlib.suppress(OSError):
                os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise _write_error(path, exc, os.path.exists(path)) from None
        raise
    _fsync_dir(directory)


def _write_error(path, exc, kept):
    """WriteError "cannot write PATH: REASON" (one line) with the errno of ``exc``."""
    err = WriteError(f"cannot write {path}: {exc.strerror or exc}"
                     + ("; the previous file is unchanged." if kept else "."))
    err.errno = exc.errno
    return err


def _fsync_dir(directory):
    """Make the rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def same_file(a, b):
    """True when paths ``a`` and ``b`` name the same file (``os.path.samefile`` when both exist)."""
    a, b = os.fspath(a), os.fspath(b)
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)
