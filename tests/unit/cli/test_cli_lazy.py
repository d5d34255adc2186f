"""The command table of ``tracecheck``: commands imported when used, listed from summaries that
stay equal to the commands' own help, suggestions for a mistyped name from every command."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tracecheck.cli import COMMANDS, app, main

CLI_DIR = Path(__file__).resolve().parents[3] / "tracecheck" / "cli"


def loaded_command(name: str) -> click.Command:
    module, attribute, _ = COMMANDS[name]
    command = getattr(importlib.import_module(module), attribute)
    assert isinstance(command, click.Command)
    return command


def test_every_command_module_is_in_the_table() -> None:
    modules = {p.stem for p in CLI_DIR.glob("*.py")} - {"__init__", "shared"}
    assert {m.rsplit(".", 1)[1] for m, _, _ in COMMANDS.values()} == modules
    for name in COMMANDS:
        assert loaded_command(name).name == name


@pytest.mark.parametrize("name", list(COMMANDS))
@pytest.mark.parametrize("limit", [20, 45, 58, 70, 120])
def test_summary_shortens_to_the_commands_own_short_help(name: str, limit: int) -> None:
    stand_in = click.Command(name, help=COMMANDS[name][2])
    assert stand_in.get_short_help_str(limit) == loaded_command(name).get_short_help_str(limit)


def imported_after(argv: list[str]) -> list[str]:
    """The tracecheck.cli.* modules a fresh interpreter has imported after running ``argv``."""
    code = (
        "import sys, json\n"
        "from tracecheck.cli import main\n"
        f"main({argv!r})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('tracecheck.cli.'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACECHECK_")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    loaded: list[str] = json.loads(proc.stdout.splitlines()[-1])
    return loaded


def test_help_imports_no_command_module() -> None:
    assert imported_after(["--help"]) == ["tracecheck.cli.shared"]


def test_a_command_imports_only_its_own_module() -> None:
    assert imported_after(["query", "--help"]) == ["tracecheck.cli.query", "tracecheck.cli.shared"]


def test_help_lists_every_command_in_table_order() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    listed = result.output.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in listed if line.strip()] == list(COMMANDS)
    assert "  report     Latency reports with tables and plots." in listed


def test_a_mistyped_command_is_matched_against_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["smok"]) == 2
    err = capsys.readouterr().err
    assert err == "tracecheck: usage: No such command 'smok'. Did you mean 'smoke'? (see --help)\n"
    assert main(["apiservr", "probe"]) == 2
    assert "Did you mean 'apiserver'?" in capsys.readouterr().err
