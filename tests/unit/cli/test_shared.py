"""The shared option declarations, as a new command (watch, load, doctor) would use them."""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from tracecheck.cli.shared import APISERVER, PROMETHEUS, TEMPO, output_option, uses_settings
from tracecheck.config import Settings
from tracecheck.errors import UsageError
from tracecheck.output import TABLE_FORMATS

SEEN: list[tuple[Settings, str]] = []


@click.command()
@uses_settings(TEMPO, PROMETHEUS, APISERVER)
@output_option(TABLE_FORMATS)
def probe_settings(settings: Settings, output: str) -> None:
    """A command made the way a new one is. Example: probe-settings --tenant t"""
    SEEN.append((settings, output))


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, Settings | None, str]:
    SEEN.clear()
    base = {"TRACECHECK_CONFIG": "", "KUBECONFIG": "", "HOME": "/nonexistent"}
    result = CliRunner().invoke(probe_settings, list(args), env={**base, **(env or {})})
    return result.exit_code, (SEEN[0][0] if SEEN else None), result.output


def test_tenant_fans_out_to_every_system_the_command_talks_to() -> None:
    code, s, _ = run("--tenant", "team-a")
    assert code == 0 and s is not None
    assert (s.tempo.tenant, s.prometheus.tenant) == ("team-a", "team-a")
    assert s.collector.tenant == ""  # not a system of this command


def test_flags_beat_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "tc.toml"
    cfg.write_text('[tempo]\nurl = "http://file:3200"\n[prometheus]\nurl = "http://file:9090"\n')
    env = {"TRACECHECK_PROMETHEUS_URL": "http://env:9090"}
    code, s, _ = run("--config", str(cfg), "--tempo-url", "http://flag:3200", env=env)
    assert code == 0 and s is not None
    assert (s.tempo.url, s.prometheus.url) == ("http://flag:3200", "http://env:9090")


def test_headers_are_parsed_once_for_every_command() -> None:
    code, s, _ = run("--tempo-header", "Authorization=Bearer x", "--tempo-header", "X-A=1")
    assert code == 0 and s is not None
    assert s.tempo.headers == (("Authorization", "Bearer x"), ("X-A", "1"))
    code, s, out = run("--prometheus-header", "no-equals-sign")
    assert code == 2 and s is None
    assert "expected NAME=VALUE, got 'no-equals-sign'" in out


def test_the_kubeconfig_default_chain_applies_with_the_apiserver_group(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("apiVersion: v1\n")
    code, s, _ = run(env={"KUBECONFIG": str(kubeconfig)})
    assert code == 0 and s is not None and s.apiserver.kubeconfig == str(kubeconfig)
    code, s, _ = run("--kubeconfig", "/explicit", env={"KUBECONFIG": str(kubeconfig)})
    assert s is not None and s.apiserver.kubeconfig == "/explicit"


def test_the_output_format_is_checked_before_the_command_runs() -> None:
    assert run("--output", "csv")[0] == 0
    SEEN.clear()
    result = CliRunner().invoke(probe_settings, ["--output", "junit"])
    assert not SEEN  # refused before the command ran
    assert isinstance(result.exception, UsageError)  # main() turns it into exit 2
    assert "unknown format 'junit'; choose from table, json, csv, markdown" in str(result.exception)
