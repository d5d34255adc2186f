"""The README is tested: its two commands, every command, setting, check and exit code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tracecheck.cli import app
from tracecheck.config import Settings, describe_settings
from tracecheck.errors import ExitCode
from tracecheck.smoke.plan import default_checks

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _commands(typer_app, prefix: str = "tracecheck") -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for cmd in typer_app.registered_commands:
        out.append(f"{prefix} {cmd.name or cmd.callback.__name__}")
    for group in typer_app.registered_groups:
        out += _commands(group.typer_instance, f"{prefix} {group.name}")
    return out


def test_readme_starts_with_exactly_the_two_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None
    assert README.index("```sh") < README.index("## ")  # before any section
    lines = [ln.split("#")[0].strip() for ln in first_block.group(1).splitlines()]
    assert lines == [".ci/smoke", ".ci/test"]
    for script in lines:
        assert (ROOT / script).stat().st_mode & 0o111, f"{script} is executable"


def test_ci_runs_the_readme_test_command() -> None:
    run = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\.ci/test\b", run, re.M)
    assert "set -euo pipefail" in run


def test_every_command_is_in_the_readme_and_has_an_example() -> None:
    commands = _commands(app)
    assert len(commands) >= 14
    for command in commands:
        words = command.split()[1:]
        # "tracecheck stack local up | down" style rows list several verbs after the group
        assert words[-1] in README, f"{command} is not in the README"
    for group in [app, *(g.typer_instance for g in app.registered_groups)]:
        for cmd in group.registered_commands:
            assert "Example:" in (cmd.callback.__doc__ or ""), f"{cmd.name} has no example"


def test_every_setting_is_in_the_configuration_table() -> None:
    for key, env, _flag, _default, _help in describe_settings():
        assert f"| `{key}` | `{env}` |" in README, key


def test_every_check_is_in_the_check_table() -> None:
    for check in default_checks(Settings()):
        assert f"| `{check.name}` |" in README, check.name


@pytest.mark.parametrize("code", list(ExitCode))
def test_every_exit_code_is_documented(code: ExitCode) -> None:
    assert f"| {int(code)} |" in README
