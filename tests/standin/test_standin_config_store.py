"""Configuration loading (the shipped tempo.yaml after the local substitutions) and the store's
memory bounds and visibility rules, with explicit times."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from standin_helpers import REPO
from tempo_standin.config import ConfigError, load_config, parse_go_duration
from tempo_standin.model import SpanRecord
from tempo_standin.store import TraceStore


def _local_tempo_yaml(tmp_path: Path) -> Path:
    """stack/tempo/tempo.yaml with stack/local/substitutions.yaml applied, as `up` renders it."""
    subs = yaml.safe_load((REPO / "stack" / "local" / "substitutions.yaml").read_text())
    text = (REPO / "stack" / "tempo" / "tempo.yaml").read_text()
    for sub in subs["stack/tempo/tempo.yaml"]:
        assert sub["from"] in text, sub["from"]
        text = text.replace(sub["from"], sub["to"].replace("${STATE}", str(tmp_path)))
    path = tmp_path / "tempo.yaml"
    path.write_text(text)
    return path


def test_shipped_config_after_local_substitutions(tmp_path: Path) -> None:
    c = load_config(_local_tempo_yaml(tmp_path))
    assert (c.http_port, c.otlp_grpc, c.otlp_http) == (3200, "127.0.0.1:4417", "127.0.0.1:4418")
    assert (c.trace_idle_period, c.collection_interval) == (5.0, 15.0)
    assert c.external_labels == (("source", "tempo"),)
    assert [(rw.url, rw.send_exemplars) for rw in c.remote_write] == [
        ("http://127.0.0.1:9090/api/v1/write", True)
    ]
    assert c.processors == ("service-graphs", "span-metrics", "local-blocks")
    assert c.filter_server_spans is False  # the shipped file turns it off for TraceQL metrics


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("1m30s", 90.0),
        ("100ms", 0.1),
        ("0", 0.0),
        ("1.5h", 5400.0),
        ("250us", 0.00025),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


def test_bad_config_values(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text(
        "metrics_generator:\n  storage:\n    remote_write:\n      - send_exemplars: true\n"
    )
    with pytest.raises(ConfigError, match=r"remote_write\[0\] has no url"):
        load_config(p)
    p.write_text(
        "distributor:\n  receivers:\n    otlp:\n      protocols:\n"
        "        grpc:\n          endpoint: nohost\n"
    )
    with pytest.raises(ConfigError, match="is not host:port"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def _rec(trace: int, span: int) -> SpanRecord:
    return SpanRecord(
        trace_id=trace.to_bytes(16, "big"),
        span_id=span.to_bytes(8, "big"),
        parent_span_id=b"",
        name="s",
        kind=2,
        start_ns=1,
        end_ns=2,
        status_code=0,
        status_message="",
        attributes={},
        resource_attributes={},
        links=(),
        service="svc",
        size=10,
        proto=None,
        group_key=b"k",
        received=0.0,
    )


def test_store_cut_by_idle_and_live_period() -> None:
    st = TraceStore(
        idle_period=5, live_period=30, retention=3600, max_spans=100, max_spans_per_trace=100
    )
    st.append([_rec(1, 1)], now=100.0)
    assert st.cut(104.9) == [] and st.searchable() == []
    (cut,) = st.cut(105.0)
    assert (cut.spans, cut.first) == (1, True)
    # A span arriving later is live again until the next cut; the first one stays searchable.
    st.append([_rec(1, 2)], now=106.0)
    assert [len(spans) for _, spans in st.searchable()] == [1]
    (again,) = st.cut(111.0)
    assert (again.spans, again.first) == (2, False)
    # A busy trace is cut after trace_live_period even though it never goes idle.
    for i in range(31):
        st.append([_rec(2, 100 + i)], now=200.0 + i)
        if i < 30:
            assert all(c.trace_id != (2).to_bytes(16, "big") for c in st.cut(200.0 + i))
    assert [c.trace_id for c in st.cut(230.0)] == [(2).to_bytes(16, "big")]


def test_store_memory_bounds() -> None:
    st = TraceStore(idle_period=5, live_period=30, retention=60, max_spans=5, max_spans_per_trace=3)
    created, stored, too_large = st.append([_rec(1, i) for i in range(5)], now=0.0)
    assert (len(created), stored, too_large) == (1, 3, 2)  # per-trace cap: trace_too_large
    st.append([_rec(2, 1), _rec(3, 1), _rec(4, 1)], now=10.0)
    assert st.counts() == (4, 6)
    assert st.evict(now=11.0) == 1  # over max_spans: the least recently written trace goes
    assert st.get((1).to_bytes(16, "big")) == []
    assert st.evict(now=71.0) == 3  # past retention
    assert st.counts() == (0, 0)
