"""``tracecheck apiserver check-config``: the shipped file passes; each bad file gives its
message, with the line and the field (rules: docs/reference/apiserver.md §2, §8; component-base
``tracing/api/v1/config.go``; strict decoding in k8s.io/apiserver ``options/tracing.go``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tracecheck.errors import ConfigError, ExitCode
from tracecheck.output import render_findings
from tracecheck.results import Finding, has_errors
from tracecheck.stack.local.paths import find_repo_root
from tracecheck.stack.tracingconfig import check_tracing_config, check_tracing_config_text

REPO = find_repo_root(Path(__file__).parent)
SHIPPED = REPO / "stack" / "apiserver" / "tracing-config.yaml"

HEAD = "apiVersion: apiserver.config.k8s.io/v1\nkind: TracingConfiguration\n"


def test_the_shipped_file_passes_without_findings() -> None:
    findings = check_tracing_config(SHIPPED)
    assert findings == []
    assert render_findings(
        findings, "table", "tracing-config.yaml", what="TracingConfiguration"
    ) == ("tracing-config.yaml: OK (a valid TracingConfiguration)")


@pytest.mark.parametrize(
    "version", ["apiserver.config.k8s.io/v1", "apiserver.config.k8s.io/v1beta1",
                "apiserver.config.k8s.io/v1alpha1"],
)  # fmt: skip
def test_every_version_the_apiserver_decodes_is_accepted(version: str) -> None:
    text = f"apiVersion: {version}\nkind: TracingConfiguration\nsamplingRatePerMillion: 100\n"
    assert check_tracing_config_text(text) == []


@pytest.mark.parametrize(
    "endpoint",
    ["localhost:4317", "10.96.0.20:4317", "dns:///localhost:4317", "dns://8.8.8.8/otel:4317",
     "unix:///var/run/otel.sock", "unix:/var/run/otel.sock", "unix-abstract:otel",
     "'[::1]:4317'", "null"],
)  # fmt: skip
def test_good_endpoints_give_no_finding(endpoint: str) -> None:
    text = HEAD + f"endpoint: {endpoint}\nsamplingRatePerMillion: 1000000\n"
    assert check_tracing_config_text(text) == []


# (file body, [(level, line, field, message fragment), ...])
BAD: list[tuple[str, str, list[tuple[str, int, str, str]]]] = [
    (
        "http scheme",
        HEAD + "endpoint: http://otel-collector:4317\nsamplingRatePerMillion: 100\n",
        [("error", 3, "endpoint", "unsupported scheme 'http'")],
    ),
    (
        "https scheme",
        HEAD + "endpoint: https://collector.example.com:4317\nsamplingRatePerMillion: 100\n",
        [("error", 3, "endpoint", "write collector.example.com:4317")],
    ),
    (
        "rate over a million",
        HEAD + "samplingRatePerMillion: 1000001\n",
        [("error", 3, "samplingRatePerMillion", "at most 1000000")],
    ),
    (
        "negative rate",
        HEAD + "endpoint: localhost:4317\nsamplingRatePerMillion: -5\n",
        [("error", 4, "samplingRatePerMillion", "must not be negative")],
    ),
    (
        "rate not an integer",
        HEAD + "samplingRatePerMillion: 0.5\n",
        [("error", 3, "samplingRatePerMillion", "0.5 is not an integer")],
    ),
    (
        "rate as a string",
        HEAD + 'samplingRatePerMillion: "100"\n',
        [("error", 3, "samplingRatePerMillion", "'100' is not an integer")],
    ),
    (
        "rate overflows int32",
        HEAD + "samplingRatePerMillion: 4294967296\n",
        [("error", 3, "samplingRatePerMillion", "overflows int32")],
    ),
    (
        "rate unset",
        HEAD + "endpoint: localhost:4317\n",
        [("warning", 1, "samplingRatePerMillion", "unset: the apiserver starts no trace")],
    ),
    (
        "rate zero",
        HEAD + "samplingRatePerMillion: 0\n",
        [("warning", 3, "samplingRatePerMillion", "0: the apiserver starts no trace")],
    ),
    (
        "cluster DNS name",
        HEAD + "endpoint: otel-collector.monitoring.svc:4317\nsamplingRatePerMillion: 100\n",
        [("warning", 3, "endpoint", "'otel-collector.monitoring.svc' is a cluster DNS name")],
    ),
    (
        "cluster.local name",
        HEAD + "endpoint: dns:///otel.monitoring.svc.cluster.local:4317\n"
        "samplingRatePerMillion: 100\n",
        [("warning", 3, "endpoint", "is a cluster DNS name")],
    ),
    (
        "no port",
        HEAD + "endpoint: collector.example.com\nsamplingRatePerMillion: 100\n",
        [("warning", 3, "endpoint", "has no port: gRPC's DNS resolver then dials 443")],
    ),
    (
        "dns:// with an authority only",
        HEAD + "endpoint: dns://localhost:4317\nsamplingRatePerMillion: 100\n",
        [("error", 3, "endpoint", "write dns:///localhost:4317")],
    ),
    (
        "endpoint not a string",
        HEAD + "endpoint: 4317\nsamplingRatePerMillion: 100\n",
        [("error", 3, "endpoint", "4317 is not a string")],
    ),
    (
        "unknown field",
        HEAD + "samplingRatePerMillion: 100\nsampling_rate_per_million: 100\n",
        [("error", 4, "sampling_rate_per_million", "did you mean samplingRatePerMillion?")],
    ),
    (
        "metadata",
        HEAD + "metadata:\n  name: tracing\nsamplingRatePerMillion: 100\n",
        [("error", 3, "metadata", "has no metadata")],
    ),
    (
        "duplicate field",
        HEAD + "samplingRatePerMillion: 100\nendpoint: a:1\nsamplingRatePerMillion: 200\n",
        [("error", 5, "samplingRatePerMillion", "duplicate field (first on line 3)")],
    ),
    (
        "wrong kind",
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EgressSelectorConfiguration\n"
        "samplingRatePerMillion: 100\n",
        [("error", 2, "kind", "'EgressSelectorConfiguration': must be TracingConfiguration")],
    ),
    (
        "missing kind",
        "apiVersion: apiserver.config.k8s.io/v1\nsamplingRatePerMillion: 100\n",
        [("error", 1, "kind", "missing")],
    ),
    (
        "unknown version",
        "apiVersion: apiserver.config.k8s.io/v2\nkind: TracingConfiguration\n"
        "samplingRatePerMillion: 100\n",
        [("error", 1, "apiVersion", "'apiserver.config.k8s.io/v2' is not decoded")],
    ),
    (
        "wrong group",
        "apiVersion: apiserver.k8s.io/v1\nkind: TracingConfiguration\n"
        "samplingRatePerMillion: 100\n",
        [("error", 1, "apiVersion", "one of apiserver.config.k8s.io/v1")],
    ),
    (
        "YAML syntax error",
        HEAD + "samplingRatePerMillion: [100\n",
        [("error", 4, "(file)", "not valid YAML")],
    ),
    ("empty file", "# nothing\n", [("error", 1, "(file)", "empty")]),
    (
        "a list, not a mapping",
        "- apiVersion: apiserver.config.k8s.io/v1\n",
        [("error", 1, "(document)", "must be a mapping")],
    ),
    (
        "two documents",
        HEAD + "samplingRatePerMillion: 100\n---\n" + HEAD,
        [("error", 5, "(file)", "2 YAML documents")],
    ),
]


@pytest.mark.parametrize(("label", "text", "expected"), BAD, ids=[b[0] for b in BAD])
def test_each_bad_file_gives_its_message(
    label: str, text: str, expected: list[tuple[str, int, str, str]]
) -> None:
    findings = check_tracing_config_text(text)
    got = [(f.level, f.line, f.field) for f in findings]
    assert got == [(lvl, line, fld) for lvl, line, fld, _ in expected], findings
    for finding, (_, _, _, fragment) in zip(findings, expected, strict=True):
        assert fragment in finding.message, finding.message
    assert has_errors(findings) == any(e[0] == "error" for e in expected)


def test_several_problems_come_in_line_order_and_render_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "tracing.yaml"
    path.write_text(
        "apiVersion: apiserver.config.k8s.io/v1\n"
        "kind: TracingConfiguration\n"
        "endpoint: https://otel.monitoring.svc:4317\n"
        "samplingRatePerMillion: 2000000\n"
        "extra: 1\n"
    )
    findings = check_tracing_config(path)
    assert [(f.line, f.field) for f in findings] == [
        (3, "endpoint"),
        (4, "samplingRatePerMillion"),
        (5, "extra"),
    ]
    text = render_findings(findings, "table", str(path)).splitlines()
    assert text[0].startswith(f"{path}:3: error: endpoint: ")
    assert text[-1] == f"{path}: 3 error(s), 0 warning(s)"
    assert json.loads(render_findings(findings, "json"))[2] == {
        "level": "error",
        "line": 5,
        "field": "extra",
        "message": findings[2].message,
    }
    assert str(findings[2]) == (
        "line 5: error: extra: unknown field (strict decoding refuses it); known fields: "
        "apiVersion, kind, endpoint, samplingRatePerMillion"
    )


def test_warnings_alone_are_not_errors() -> None:
    findings = check_tracing_config_text(HEAD + "endpoint: otel.monitoring.svc:4317\n")
    assert [f.level for f in findings] == ["warning", "warning"]
    assert not has_errors(findings)


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as err:
        check_tracing_config(missing)
    assert err.value.exit_code == ExitCode.CONFIG
    assert str(err.value) == f"tracing-config at {missing}: cannot read: No such file or directory"


def test_a_binary_file_is_a_finding(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00kind")
    assert check_tracing_config(path) == [Finding("error", "(file)", "not UTF-8 text", line=1)]
