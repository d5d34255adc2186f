"""The README is tested: its two commands, every command, setting, check and exit code."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from tracecheck.cli import app
from tracecheck.config import Settings, describe_settings
from tracecheck.errors import ExitCode
from tracecheck.smoke.plan import default_checks
from tracecheck.stack.local.paths import find_repo_root

ROOT = find_repo_root(Path(__file__).parent)
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _leaves(group: click.Group, prefix: str = "tracecheck") -> list[tuple[str, click.Command]]:
    """Every command under ``group`` with its full name, e.g. ("tracecheck stack local up", ...)."""
    out: list[tuple[str, click.Command]] = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # the top group imports its commands when asked
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        if isinstance(cmd, click.Group):
            out += _leaves(cmd, f"{prefix} {name}")
        else:
            out.append((f"{prefix} {name}", cmd))
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
    commands = _leaves(app)
    assert len(commands) >= 14
    for command, cmd in commands:
        words = command.split()[1:]
        # "tracecheck stack local up | down" style rows list several verbs after the group
        assert words[-1] in README, f"{command} is not in the README"
        assert "Example:" in (cmd.help or ""), f"{command} has no example"


def test_every_setting_is_in_the_configuration_table() -> None:
    for key, env, _flag, _default, _help in describe_settings():
        assert f"| `{key}` | `{env}` |" in README, key


def test_every_check_is_in_the_check_table() -> None:
    for check in default_checks(Settings()):
        assert f"| `{check.name}` |" in README, check.name


@pytest.mark.parametrize("code", list(ExitCode))
def test_every_exit_code_is_documented(code: ExitCode) -> None:
    assert f"| {int(code)} |" in README
