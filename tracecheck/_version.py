"""The version of tracecheck: the one place it is written (pyproject reads it from here).

A module of its own, as httpx's ``__version__.py``, so code that reports the version (the
smoke report, the apiserver client's User-Agent) never imports the package root.
"""

__version__ = "0.1.0"
