"""The alert rules on the watch metrics (stack/prometheus/rules/tracecheck.rules.yaml).

`promtool test rules` runs the unit tests in tracecheck-rules-test.yaml with the promtool the
local pipeline builds; the local Prometheus (3.8) loads the shipped file and reports every rule
healthy; every alert names its hop and has a runbook section. That the rule fires on the real
Prometheus for a broken hop is shown in test_watch_pipeline.py.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from watch_support import RULES, loaded_rules

from tracecheck.stack.local import LocalStack, default_cache_dir, default_state_dir

REPO = Path(__file__).resolve().parents[2]
RULES_FILE = RULES / "tracecheck.rules.yaml"
UNIT_TESTS = Path(__file__).with_name("tracecheck-rules-test.yaml")
ALERTS = [
    "TracecheckPipelineBroken",
    "TracecheckPipelineSlow",
    "TracecheckWatchDown",
    "TracecheckWatchAbsent",
    "TracecheckWatchStalled",
]


def shipped_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.fixture(scope="module")
def promtool() -> Path:
    """promtool of the local build (cached outside the repo; no running pipeline needed)."""
    stack = LocalStack(
        repo=REPO, state_dir=default_state_dir(os.environ), cache_dir=default_cache_dir(os.environ)
    )
    return stack.binary("promtool")


def test_promtool_unit_tests_of_the_alert_rules_pass(promtool: Path) -> None:
    proc = subprocess.run(
        [str(promtool), "test", "rules", str(UNIT_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=UNIT_TESTS.parent,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout
    # Every alert of the file is exercised, firing at least once.
    tests = yaml.safe_load(UNIT_TESTS.read_text(encoding="utf-8"))["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", ())
        if case.get("exp_alerts")
    }
    assert fired == set(ALERTS)


def test_a_wrong_expectation_makes_promtool_fail(promtool: Path, tmp_path: Path) -> None:
    # The unit tests can fail: one changed expectation is reported with what Prometheus got.
    text = UNIT_TESTS.read_text(encoding="utf-8").replace(
        "preflight.tempo failed 3 rounds", "preflight.tempo failed 2 rounds"
    )
    broken = tmp_path / "broken-test.yaml"
    broken.write_text(text.replace("../../stack/", f"{REPO}/stack/"), encoding="utf-8")
    proc = subprocess.run(
        [str(promtool), "test", "rules", str(broken)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1
    assert "FAILED" in proc.stdout + proc.stderr
    assert "preflight.tempo failed 3 rounds in a row" in proc.stdout + proc.stderr


def test_the_local_prometheus_runs_the_shipped_rules(local_pipeline: LocalStack) -> None:
    groups = loaded_rules(local_pipeline)
    loaded = {
        rule["name"]: rule
        for name in ("tracecheck-pipeline", "tracecheck-watcher")
        for rule in groups[name]
    }
    assert sorted(loaded) == sorted(ALERTS)
    for rule in shipped_rules():
        got = loaded[rule["alert"]]
        assert got["health"] == "ok", got
        assert got["type"] == "alerting"
        assert got["labels"] == rule["labels"]
        assert got["annotations"] == rule["annotations"]
        assert got["duration"] == _seconds(rule.get("for", "0s"))


def _seconds(duration: str) -> int:
    value, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()  # type: ignore[union-attr]
    return int(value) * {"s": 1, "m": 60, "h": 3600}[unit]


def test_every_alert_names_its_hop_and_has_a_runbook_section() -> None:
    readme = (REPO / "stack" / "README.md").read_text(encoding="utf-8")
    headings = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", readme, re.M)
    }
    rules = shipped_rules()
    assert [r["alert"] for r in rules] == ALERTS
    for rule in rules:
        summary = rule["annotations"]["summary"]
        if "hop" in rule["expr"] or "stage" in rule["expr"]:
            assert '"{{ $labels.hop }}"' in summary, rule["alert"]
        else:  # the watcher itself: every hop goes unverified
            assert "no hop of the tracing pipeline is being verified" in summary, rule["alert"]
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "stack/README.md"
        assert anchor == rule["alert"].lower() and anchor in headings, rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning")
