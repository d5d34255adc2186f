from __future__ import annotations

from pathlib import Path

import pytest

from tracecheck.config import Settings, describe_settings, load_settings
from tracecheck.errors import ConfigError, ExitCode


def test_defaults_are_the_local_pipeline_ports() -> None:
    s = load_settings()
    assert s.collector.endpoint == "localhost:4317"
    assert s.collector.http_url == "http://localhost:4318"
    assert s.collector.health_url == "http://localhost:13133/"
    assert s.tempo.url == "http://localhost:3200"
    assert s.prometheus.url == "http://localhost:9090"
    assert s.deadlines.trace_by_id == 10.0 and s.deadlines.search == 30.0


def test_precedence_defaults_file_env_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text(
        '[tempo]\nurl = "http://file:3200"\ntimeout = 3\n'
        '[prometheus]\nurl = "http://file:9090"\n'
        '[smoke]\nskip = ["apiserver"]\n'
    )
    env = {"TRACECHECK_TEMPO_URL": "http://env:3200", "PATH": "/bin"}
    s = load_settings(cfg, env, {"tempo.url": "http://flag:3200", "prometheus.url": None})
    assert s.tempo.url == "http://flag:3200"  # flag beats env and file
    assert s.tempo.timeout == 3.0  # file beats default
    assert s.prometheus.url == "http://file:9090"  # a None flag means "not given"
    assert s.smoke.skip == ("apiserver",)
    s2 = load_settings(cfg, env)
    assert s2.tempo.url == "http://env:3200"  # env beats file


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"TRACECHECK_TEMPO_TIMEOUT": "soon"},
            "tempo.timeout: expected seconds or a duration such as 90s, 5m, 1h30m",
        ),
        ({"TRACECHECK_COLLECTOR_INSECURE": "maybe"}, "expected true or false"),
        ({"TRACECHECK_NO_SUCH_THING": "1"}, "unknown setting in the environment"),
        ({"TRACECHECK_COLLECTOR_PROTOCOL": "carrier-pigeon"}, "must be grpc or http"),
        ({"TRACECHECK_PROMETHEUS_URL": "http://host:99999"}, "malformed URL"),
        ({"TRACECHECK_TEMPO_URL": "localhost:3200"}, "malformed URL 'localhost:3200'"),
        ({"TRACECHECK_COLLECTOR_HEADERS": "novalue"}, "headers as name=value"),
    ],
)
def test_bad_values_name_the_source(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert message in str(info.value)
    assert info.value.exit_code == ExitCode.CONFIG
    assert "\n" not in str(info.value)


def test_env_conversions() -> None:
    s = load_settings(
        env={
            "TRACECHECK_COLLECTOR_INSECURE": "false",
            "TRACECHECK_APISERVER_REQUESTS": "7",
            "TRACECHECK_SMOKE_ONLY": "tempo, prometheus.span_metrics",
            "TRACECHECK_TEMPO_HEADERS": "Authorization=Bearer abc,X-Extra: 1",
        }
    )
    assert s.collector.insecure is False
    assert s.apiserver.requests == 7
    assert s.smoke.only == ("tempo", "prometheus.span_metrics")
    assert s.tempo.headers == (("Authorization", "Bearer abc"), ("X-Extra", "1"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[tempo\nurl=", "invalid TOML"),
        ("[nosuch]\na = 1\n", "unknown section [nosuch]"),
        ("[tempo]\nnosuch = 1\n", "unknown setting 'tempo.nosuch'"),
        ("[tempo]\nurl = 3\n", "tempo.url: expected a string, got 3"),
    ],
)
def test_bad_config_file(tmp_path: Path, content: str, message: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert message in str(info.value)
    assert str(cfg) in str(info.value)


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config at .*missing\.toml: cannot read"):
        load_settings(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path)  # a directory


def test_redacted_masks_secrets_only() -> None:
    s = load_settings(
        env={
            "TRACECHECK_PROMETHEUS_HEADERS": "Authorization=Bearer s3cret",
            "TRACECHECK_PROMETHEUS_TENANT": "t1",
        }
    )
    red = s.redacted()
    assert red["prometheus"]["headers"] == {"Authorization": "***"}
    assert red["prometheus"]["tenant"] == "t1"
    assert "s3cret" not in repr(red)


def test_describe_settings_covers_every_field() -> None:
    rows = describe_settings()
    keys = {r[0] for r in rows}
    assert (
        "tempo.url" in keys and "deadlines.search" in keys and "smoke.span_metrics_naming" in keys
    )
    assert all(r[1] == "TRACECHECK_" + r[0].replace(".", "_").upper() for r in rows)
    settings = Settings()
    count = sum(
        len(getattr(settings, f).__dataclass_fields__) for f in settings.__dataclass_fields__
    )
    assert len(rows) == count
