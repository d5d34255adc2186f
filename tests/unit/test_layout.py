"""The package's shape, checked: imports run one way (floor by floor), no import cycle anywhere,
nothing imports the package root, long modules say why they are long.

The import graph is read from the source (every ``import``, at module level, inside functions
and under ``TYPE_CHECKING``: a lazy import is still a dependency), so these tests need no
import side effects. ``python tests/unit/test_layout.py`` prints the floors and the graph.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "tracecheck"

#: Floors from bottom to top: a module may import modules of its own floor or lower only.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("tracecheck._version", "tracecheck._callable", "tracecheck.errors", "tracecheck.ids"),
    ("tracecheck.polling", "tracecheck.config"),
    ("tracecheck.backends",),
    ("tracecheck.results", "tracecheck.output", "tracecheck.spanmetrics"),
    ("tracecheck.query", "tracecheck.stack", "tracecheck.load"),
    ("tracecheck.latency", "tracecheck.diagnose"),
    ("tracecheck.smoke",),
    ("tracecheck.watch",),
    ("tracecheck.cli", "tracecheck.__main__"),
)
#: Modules longer than this must say in their docstring why they are one module.
LONG = 600


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, name: str) -> Iterator[tuple[str, int]]:
    """(imported tracecheck module, line) for every import in ``path``."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tracecheck"):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                parts = name.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            if not base.startswith("tracecheck"):
                continue
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno  # resolved against the known modules


def graph() -> dict[str, set[str]]:
    known = modules()
    out: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for target, _ in imports(path, name):
            # "from tracecheck.backends import prometheus" names a module; "from
            # tracecheck.config import Settings" names a member of one.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out[name].add(target)
    return out


def floor_of(name: str) -> int:
    for i, floor in enumerate(FLOORS):
        if any(name == m or name.startswith(m + ".") for m in floor):
            return i
    raise AssertionError(f"{name} is on no floor: add it to FLOORS")


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in g:
        if v not in index:
            visit(v)
    return found


def test_there_is_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_imports_run_down_the_floors() -> None:
    wrong = [
        f"{src} (floor {floor_of(src)}) imports {dst} (floor {floor_of(dst)})"
        for src, targets in graph().items()
        if src != "tracecheck"
        for dst in targets
        if floor_of(dst) > floor_of(src)
    ]
    assert wrong == []


def test_nothing_imports_the_package_root() -> None:
    known = modules()
    offenders = []
    for name, path in known.items():
        if name == "tracecheck":
            continue
        for target, line in imports(path, name):
            if target == "tracecheck" or (
                target.startswith("tracecheck.") and target.count(".") == 1 and target not in known
            ):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert offenders == []


def test_a_layering_violation_would_be_found(tmp_path: Path) -> None:
    """The checks above can fail: a cycle and an upward import in a toy graph are reported."""
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert cycles(g) == [["a", "b", "c"]]
    assert floor_of("tracecheck.cli.smoke") > floor_of("tracecheck.smoke.engine")


@pytest.mark.parametrize("name", sorted(modules()))
def test_long_modules_say_why(name: str) -> None:
    path = modules()[name]
    lines = path.read_text(encoding="utf-8").count("\n")
    if lines <= LONG:
        return
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    assert "Why one module" in doc, (
        f"{name}: {lines} lines and no 'Why one module' in its docstring"
    )


if __name__ == "__main__":  # pragma: no cover - a report for humans
    g = graph()
    for i, floor in enumerate(FLOORS):
        print(f"floor {i}: {', '.join(floor)}")
    for src in sorted(g):
        print(f"{src} -> {', '.join(sorted(g[src])) or '-'}")
    print("cycles:", cycles(g) or "none")
