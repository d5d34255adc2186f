"""``tracecheck.smoke`` and ``tracecheck.watch`` are both a function (the README's library use)
and a subpackage; in every import order, calling the name runs the function."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Each script imports as a user would. The name is either the function itself, or the package,
# which must hand a call on to the function (replaced by a recorder to see the call).
CALLED = "('called', ('settings',), ['clock'])"
ORDERS = {  # script -> what the name turns out to be
    "readme": ("from tracecheck import load_settings, smoke as name", CALLED),
    "package-first": (
        "import tracecheck.smoke.engine\nfrom tracecheck import smoke as name",
        CALLED,
    ),
    "attribute": ("import tracecheck\nname = tracecheck.smoke", "True"),
    "watch": ("from tracecheck import watch as name", CALLED),
    "watch-package-first": (
        "import tracecheck.watch.loop\nfrom tracecheck import watch as name",
        CALLED,
    ),
}


@pytest.mark.parametrize("order", sorted(ORDERS))
def test_the_name_runs_the_function_in_every_import_order(order: str) -> None:
    target = "watch.watcher" if order.startswith("watch") else "smoke.plan"
    function = "watch" if order.startswith("watch") else "smoke"
    script = f"""
{ORDERS[order][0]}
import types
import tracecheck.{target} as m
if isinstance(name, types.ModuleType):
    m.{function} = lambda *a, **k: ("called", a, sorted(k))
    print(name("settings", clock=1))
else:
    print(name is m.{function})
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ORDERS[order][1]


def test_the_subpackages_stay_modules() -> None:
    import tracecheck.smoke.engine
    import tracecheck.watch

    assert tracecheck.smoke.engine.__name__ == "tracecheck.smoke.engine"
    assert callable(tracecheck.smoke) and callable(tracecheck.watch)
    assert tracecheck.watch.watch is tracecheck.watch.watcher.watch
