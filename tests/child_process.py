"""Helpers for tests that start child processes and signal them."""

import signal


def default_sigint():
    """``preexec_fn``: the child starts with SIGINT's default disposition, so Python installs its Ctrl-C
    handler there even when the tests run with SIGINT ignored (a background job of a non-interactive shell,
    as CI runners start them: an ignored SIGINT is inherited across exec, and Python then keeps ignoring it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
