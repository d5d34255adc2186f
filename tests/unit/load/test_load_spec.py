"""Bad load requests are refused up front: one line, the documented exit code, nothing sent."""

from __future__ import annotations

import math

import pytest

from tracecheck.config import Settings, load_settings
from tracecheck.errors import ConfigError, ExitCode, TracecheckError, UsageError
from tracecheck.load import DEFAULT_MAX_SPANS, LoadSpec, RetryPolicy, plan_load
from tracecheck.load.spec import MAX_REQUEST_BYTES


def refused(spec: LoadSpec, settings: Settings | None = None) -> TracecheckError:
    with pytest.raises(TracecheckError) as info:
        plan_load(settings or Settings(), spec)
    message = str(info.value)
    assert "\n" not in message and message.startswith("load")
    return info.value


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (LoadSpec(rate=None, duration=10), "load: --rate is required (spans per second)"),
        (LoadSpec(rate=100, duration=None), "load: --duration is required (seconds)"),
        (
            LoadSpec(rate=0, duration=10),
            "load: --rate must be a positive number of spans per second, not 0",
        ),
        (
            LoadSpec(rate=-5, duration=10),
            "load: --rate must be a positive number of spans per second, not -5",
        ),
        (
            LoadSpec(rate=math.nan, duration=10),
            "load: --rate must be a positive number of spans per second, not nan",
        ),
        (
            LoadSpec(rate=100, duration=0),
            "load: --duration must be a positive number of seconds, not 0",
        ),
        (
            LoadSpec(rate=200_000, duration=60, max_spans=1_000_000),
            "load: --rate 200,000 x --duration 60 s = 12,000,000 spans, over --max-spans 1,000,000",
        ),
        (
            LoadSpec(rate=1, duration=2, spans_per_trace=5),
            "load: --rate x --duration gives 2 spans per shard, fewer than one trace of 5 spans",
        ),
        (
            LoadSpec(rate=100, duration=10, shards=4),
            "load: --shards > 1 needs --run-id, so that every shard tags the same run",
        ),
        (
            LoadSpec(rate=100, duration=10, shards=2, shard=2, run_id="r1"),
            "load: --shard must be 0 to 1 (of --shards 2)",
        ),
        (LoadSpec(rate=100, duration=10, concurrency=0), "load: --concurrency must be at least 1"),
        (
            LoadSpec(rate=100, duration=10, spans_per_trace=256),
            "load: --spans-per-trace must be 1 to 255",
        ),
        (
            LoadSpec(rate=100, duration=10, run_id="bad id"),
            "load: --run-id 'bad id': use 1 to 63 letters, digits, '.', '_' or '-'",
        ),
        (
            LoadSpec(rate=100, duration=10, retry=RetryPolicy(attempts=-1)),
            "load: --retry must be a non-negative number of retries",
        ),
    ],
)
def test_bad_input_is_a_usage_error_exit_2(spec: LoadSpec, message: str) -> None:
    error = refused(spec)
    assert isinstance(error, UsageError)
    assert error.exit_code == ExitCode.USAGE == 2
    assert str(error) == message


def test_a_request_over_the_grpc_limit_is_refused_with_the_fix() -> None:
    error = refused(LoadSpec(rate=1_000_000, duration=1, batch_spans=40_000))
    assert isinstance(error, UsageError)
    assert "over the 4 MiB OTLP/gRPC message limit: lower --batch-spans" in str(error)


@pytest.mark.parametrize(
    ("spec", "cause"),
    [
        (LoadSpec(rate=100, duration=1, protocol="udp"), "must be grpc or http, not 'udp'"),
        (LoadSpec(rate=100, duration=1, compression="zstd"), "must be gzip or none, not 'zstd'"),
    ],
)
def test_unusable_settings_are_a_config_error_exit_4(spec: LoadSpec, cause: str) -> None:
    error = refused(spec)
    assert isinstance(error, ConfigError)
    assert error.exit_code == ExitCode.CONFIG == 4
    assert cause in str(error)


def test_the_plan_resolves_defaults_shards_and_batches() -> None:
    settings = load_settings(env={"TRACECHECK_COLLECTOR_PROTOCOL": "http"})
    plan = plan_load(
        settings,
        LoadSpec(rate=9_000, duration=10, shards=3, shard=1, run_id="run-1", batch_spans=512),
    )
    assert plan.protocol == "http" and plan.compression == "gzip"
    assert plan.rate == 3_000  # this shard's part of the rate
    assert plan.traces == 6_000  # 30,000 spans / 5 per trace
    assert plan.traces_per_request == 102  # 512 spans rounded down to whole traces
    assert plan.requests == 59  # 6,000 / 102, the last one partial
    assert plan.traces_in(58) == 6_000 - 58 * 102 == 84
    assert plan.interval == pytest.approx(510 / 3_000)
    assert plan.spans == 30_000 and plan.spans_per_request == 510
    assert plan.overrun == 5.0 and plan.timeout == settings.collector.timeout
    assert plan.request_bytes < MAX_REQUEST_BYTES
    assert plan.run_id == "run-1"
    # Same run ID, same seed: every shard's IDs can be rebuilt from the run ID alone.
    again = plan_load(settings, LoadSpec(rate=9_000, duration=10, shards=3, run_id="run-1"))
    assert again.seed == plan.seed
    assert (
        plan_load(Settings(), LoadSpec(rate=1, duration=5)).run_id
        != plan_load(Settings(), LoadSpec(rate=1, duration=5)).run_id
    )
    assert DEFAULT_MAX_SPANS == 10_000_000
