"""A package that can be called like its main function: ``tracecheck.smoke(settings)`` and
``tracecheck.watch(settings)`` while ``tracecheck.smoke.engine`` stays a module.

``from tracecheck import smoke`` cannot reliably name a function when a subpackage has the same
name: importing any ``tracecheck.smoke.*`` module binds the *package* to ``tracecheck.smoke``,
so the name a user gets depends on what was imported before. Making the package callable makes
every import order right. The function itself is imported on the first call only.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


def make_callable(package: str, module: str, function: str) -> None:
    """Calling the module object ``package`` calls ``module.function`` with the same
    arguments."""

    class CallablePackage(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return getattr(importlib.import_module(module), function)(*args, **kwargs)

    CallablePackage.__call__.__doc__ = f"Same as :func:`{module}.{function}`."
    sys.modules[package].__class__ = CallablePackage
