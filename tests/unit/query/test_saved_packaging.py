"""The saved queries ship in the wheel (pyproject force-include ``queries`` ->
``tracecheck/queries``) and are found there by importlib.resources when installed.

The wheel is built with the venv's hatchling (no build isolation, no network), unpacked, and
a fresh interpreter imports tracecheck from the unpacked tree: the loader must read the
packaged copy there, and from the repository's ``queries/`` in the editable install
(tests/unit/test_queries.py::test_source_checkout_reads_the_repository_directory).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tracecheck.stack.local.paths import find_repo_root

REPO = find_repo_root(Path(__file__).parent)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "-w", str(out), "--no-deps",
         "--no-build-isolation", "-q"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (whl,) = out.glob("tracecheck-*.whl")
    return whl


def test_the_wheel_holds_every_query_file(wheel: Path) -> None:
    repo_files = sorted(
        p.name for p in (REPO / "queries").iterdir() if p.suffix in (".traceql", ".promql", ".md")
    )
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        packaged = sorted(n.split("/", 2)[2] for n in names if n.startswith("tracecheck/queries/"))
        assert packaged == repo_files
        assert "tracecheck/query/saved.py" in names  # the loader ships beside the data
        for name in repo_files:
            assert z.read(f"tracecheck/queries/{name}") == (REPO / "queries" / name).read_bytes()


def test_installed_package_loads_its_packaged_queries(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    script = (
        "import sys, json; sys.path.insert(0, sys.argv[1]);"
        "import tracecheck, tracecheck.query.saved as q;"
        "print(json.dumps({'package': tracecheck.__file__, 'dir': str(q.queries_dir()),"
        "'names': [x.name for x in q.load_queries()]}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(site)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert Path(seen["package"]).is_relative_to(site)
    assert Path(seen["dir"]) == site / "tracecheck" / "queries"
    expected = sorted(p.stem for p in (REPO / "queries").glob("*.*ql"))
    assert seen["names"] == expected
