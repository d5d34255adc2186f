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
    # The local substitutions shorten the not-ready period.
    assert (c.min_ready_duration, c.remote_write_flush_deadline) == (1.0, 60.0)
    assert (c.trace_idle_period, c.max_block_duration) == (5.0, 1800.0)
    # Tempo's defaults for the keys the shipped file leaves out.
    assert (c.multitenancy, c.http_api_prefix, c.max_bytes_per_trace) == (False, "", 5_000_000)
    assert (c.max_traces_per_user, c.max_block_duration) == (10_000, 1800.0)


def test_shipped_config_keeps_tempos_defaults(tmp_path: Path) -> None:
    text = (REPO / "stack" / "tempo" / "tempo.yaml").read_text()
    path = tmp_path / "tempo.yaml"
    path.write_text(text)
    c = load_config(path)
    assert (c.min_ready_duration, c.remote_write_flush_deadline) == (15.0, 60.0)


def test_tempo_mode_keys(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text(
        "multitenancy_enabled: true\n"
        "http_api_prefix: /tempo\n"
        "ingester:\n  lifecycler:\n    min_ready_duration: 500ms\n"
        "  max_block_duration: 1m\n"
        "overrides:\n  defaults:\n"
        "    global:\n      max_bytes_per_trace: 1234\n"
        "    ingestion:\n      max_traces_per_user: 7\n"
        "    metrics_generator:\n      processors: [service-graphs]\n"
        "      max_active_series: 99\n"
    )
    c = load_config(p)
    assert (c.multitenancy, c.http_api_prefix, c.min_ready_duration) == (True, "/tempo", 0.5)
    assert (c.max_block_duration, c.max_bytes_per_trace, c.max_traces_per_user) == (60.0, 1234, 7)
    assert (c.processors, c.max_active_series) == (("service-graphs",), 99)
    # The legacy flat overrides format and the deprecated auth_enabled are read too.
    p.write_text(
        "auth_enabled: true\n"
        "overrides:\n  max_bytes_per_trace: 55\n  metrics_generator_processors: [span-metrics]\n"
    )
    c = load_config(p)
    assert (c.multitenancy, c.max_bytes_per_trace, c.processors) == (True, 55, ("span-metrics",))
    p.write_text("overrides:\n  defaults:\n    global:\n      max_bytes_per_trace: lots\n")
    with pytest.raises(ConfigError, match="max_bytes_per_trace: 'lots' is not an integer"):
        load_config(p)
    p.write_text("multitenancy_enabled: yes please\n")
    with pytest.raises(
        ConfigError, match="multitenancy_enabled: 'yes please' is not true or false"
    ):
        load_config(p)


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
    res = st.append([_rec(1, i) for i in range(5)], now=0.0)
    # The stand-in's per-trace span cap counts as trace_too_large.
    assert (len(res.created), res.stored, res.too_large) == (1, 3, 2)
    st.append([_rec(2, 1), _rec(3, 1), _rec(4, 1)], now=10.0)
    assert st.counts() == (4, 6)
    assert st.evict(now=11.0) == 1  # over max_spans: the least recently written trace goes
    assert st.get((1).to_bytes(16, "big")) == []
    assert st.evict(now=71.0) == 3  # past retention
    assert st.counts() == (0, 0)
    assert st.live_traces() == 0


def _store(**kw: float) -> TraceStore:
    args: dict[str, float] = {
        "idle_period": 5,
        "live_period": 30,
        "retention": 3600,
        "max_spans": 1000,
        "max_spans_per_trace": 1000,
    }
    args.update(kw)
    return TraceStore(**args)  # type: ignore[arg-type]


def test_live_traces_limit_refuses_every_push_once_reached() -> None:
    """instance.push: AssertMaxTracesPerUser(len(traces)) refuses any push, even one for a
    trace already live, while the live map holds max_traces_per_user traces."""
    st = _store(max_live_traces=2)
    assert st.append([_rec(1, 1), _rec(2, 1)], now=0.0).live_exceeded == 0
    res = st.append([_rec(3, 1), _rec(3, 2), _rec(1, 2)], now=1.0)
    assert (res.live_exceeded, res.stored) == (3, 0)
    assert st.live_traces() == 2
    assert len(st.cut(now=6.0)) == 2  # cut: the live map is empty again
    res = st.append([_rec(3, 1)], now=7.0)
    assert (res.live_exceeded, res.stored, res.created) == (0, 1, [(3).to_bytes(16, "big")])


def test_size_tracker_refuses_then_forgets_after_an_idle_block() -> None:
    """pkg/tracesizes: the running total includes refused pushes (which also refresh the
    entry); a block cut forgets traces not offered anything since the previous block cut. The
    trace can then grow past the limit, and reading it by ID gives a partial answer."""
    tid = (1).to_bytes(16, "big")
    st = _store(max_bytes_per_trace=100, max_block_duration=10, idle_period=1)
    assert st.append_segment(tid, [_rec(1, 1)], 60, now=0.0).stored == 1  # 60 + 8 <= 100
    assert st.append_segment(tid, [_rec(1, 2)], 60, now=1.0).too_large == 1  # 68 + 68 > 100
    st.cut(now=5.0)
    assert not st.cut_block_if_ready(now=9.0)  # max_block_duration not reached
    assert st.cut_block_if_ready(now=10.0)  # forgets what was idle since the start: nothing
    assert st.append_segment(tid, [_rec(1, 3)], 10, now=11.0).too_large == 1  # refreshed
    st.append([_rec(2, 1)], now=12.0)
    assert not st.cut_block_if_ready(now=12.5)  # nothing cut into the head block yet
    st.cut(now=15.0)
    assert st.cut_block_if_ready(now=21.0)  # forgets what is idle since t=10: tid (t=11) kept
    assert st.append_segment(tid, [_rec(1, 4)], 1, now=21.5).too_large == 1  # 154 + 9
    st.append([_rec(2, 2)], now=23.0)
    st.cut(now=25.0)
    assert st.cut_block_if_ready(now=32.0)  # idle since t=21: tid (t=21.5) kept again
    st.append([_rec(2, 3)], now=33.0)
    st.cut(now=35.0)
    assert st.cut_block_if_ready(now=42.0)  # idle since t=32: 21.5 < 32, forgotten
    res = st.append_segment(tid, [_rec(1, 5)], 60, now=43.0)
    assert (res.stored, res.too_large) == (1, 0)
    # By ID with the limit: the live segment (60 bytes), then the cut one (60): 120 > 100.
    read = st.read(tid, 100)
    assert read.partial
    assert [s.span_id[-1] for s in read.spans] == [1, 5]
    assert read.inspected_bytes == 120  # refused pushes are not held
    assert not st.read(tid, 0).partial  # 0: no limit
    assert not st.read(tid, 1000).partial


def test_read_keeps_the_segment_that_crosses_the_limit_and_drops_the_rest() -> None:
    tid = (7).to_bytes(16, "big")
    st = _store(max_bytes_per_trace=0)
    for i, size in enumerate((40, 40, 40), start=1):
        st.append_segment(tid, [_rec(7, i)], size, now=float(i))
    read = st.read(tid, 70)  # 40 fits, 80 crosses: kept; the third is left out
    assert read.partial
    assert [s.span_id[-1] for s in read.spans] == [1, 2]
    st.cut(now=10.0)
    st.append_segment(tid, [_rec(7, 4)], 40, now=11.0)
    read = st.read(tid, 70)  # the live segment comes first, then the cut ones in push order
    assert [s.span_id[-1] for s in read.spans] == [1, 4]
