"""The ``fastinfl`` command line: the seed demo, influence on the user's own files, the benchmarks.

``python -m fastinfl.cli`` and the ``fastinfl`` console script (``fastinfl.cli:main``) both run
:func:`main`. Modules: ``main`` (parser, error handling), ``demo``, ``run``, ``output`` (CSV/JSON
writing), ``plot``, ``progress`` (tqdm bars), ``compile`` (the cold-cache notice).
"""

from .main import main

__all__ = ["main"]
