"""``tracecheck load`` on bad input: one line naming the cause, exit 2 (usage) or 4 (config),
before anything is read or sent (no backend runs here: a send would fail with exit 3). And the
ramp's arithmetic and verdicts."""

from __future__ import annotations

import dataclasses

import pytest

from tracecheck.cli import main
from tracecheck.errors import UsageError
from tracecheck.load.account import Accounting, HopCount
from tracecheck.load.ledger import ShardRecord
from tracecheck.load.ramp import RampStep, _judge, _report, parse_ramp, rates
from tracecheck.load.run import LoadResult, Refusals
from tracecheck.results import Status

# Ports nothing listens on: if validation let a command through, it would fail with exit 3.
NOWHERE = [
    "--collector-endpoint=127.0.0.1:9",
    "--collector-http-url=http://127.0.0.1:9",
    "--collector-metrics-url=http://127.0.0.1:9/metrics",
    "--tempo-url=http://127.0.0.1:9",
    "--prometheus-url=http://127.0.0.1:9",
]


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        ([], 2, "tracecheck: error: load: --rate is required (spans per second)"),
        (["--rate", "100"], 2, "tracecheck: error: load: --duration is required (seconds)"),
        (["--duration", "5"], 2, "tracecheck: error: load: --rate is required (spans per second)"),
        (
            ["--rate", "0", "--duration", "5"],
            2,
            "tracecheck: error: load: --rate must be a positive number of spans per second, not 0",
        ),
        (
            ["--rate", "-5", "--duration", "5"],
            2,
            "tracecheck: error: load: --rate must be a positive number of spans per second, not -5",
        ),
        (
            ["--rate", "100", "--duration", "0"],
            2,
            "tracecheck: error: load: --duration must be a positive number of seconds, not 0",
        ),
        (
            ["--rate", "50000", "--duration", "1m", "--max-spans", "1000000"],
            2,
            "tracecheck: error: load: --rate 50,000 x --duration 60 s = 3,000,000 spans, over "
            "--max-spans 1,000,000",
        ),
        (
            ["--rate", "100", "--duration", "5", "--protocol", "quic"],
            4,
            "tracecheck: error: config at collector.protocol: must be grpc or http, not 'quic'",
        ),
        (
            ["--rate", "100", "--duration", "5", "--max-loss", "150"],
            2,
            "tracecheck: error: load: --max-loss '150': must be 0 to 100 (%)",
        ),
        (
            ["--rate", "100", "--duration", "5", "--skip", "tempo,collectr"],
            2,
            "tracecheck: error: load: --skip collectr: choose from collector, tempo, found, "
            "samples, span-metrics",
        ),
        (
            ["--ramp", "1000:5000:1000"],
            2,
            "tracecheck: error: load: --ramp needs --step-duration (seconds per step)",
        ),
        (
            ["--ramp", "5000:1000:1000", "--step-duration", "5"],
            2,
            "tracecheck: error: load: --ramp 5000:1000:1000: need 0 < START <= END and STEP > 0",
        ),
        (
            ["--ramp", "1000:100000:1000", "--step-duration", "60", "--max-spans", "10000000"],
            2,
            "tracecheck: error: load: --ramp 1000:100000:1000 x --step-duration 60 s = "
            "303,000,000 spans at most, over --max-spans 10,000,000",
        ),
        (
            ["--ramp", "1:2:1", "--step-duration", "1", "--rate", "5"],
            2,
            "tracecheck: error: load: --ramp sets the rates: no --rate or --duration (use "
            "--step-duration)",
        ),
        (
            ["--account", "run1", "--rate", "5"],
            2,
            "tracecheck: error: load: --account reads a finished run: no --rate, --duration or "
            "--ramp",
        ),
        (
            ["--rate", "100", "--duration", "5", "--step-duration", "5"],
            2,
            "tracecheck: error: load: --step-duration goes with --ramp",
        ),
        (
            ["--rate", "100", "--duration", "5", "--shards", "2", "--shard", "1"],
            2,
            "tracecheck: error: load: --shards > 1 needs --run-id, so that every shard tags the "
            "same run",
        ),
    ],
)
def test_bad_input_is_one_line_with_its_exit_code(
    args: list[str], code: int, line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["load", *args, *NOWHERE]) == code
    out, err = capsys.readouterr()
    assert out == ""
    assert err == line + "\n"


def test_a_duration_that_is_not_one_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["load", "--rate", "10", "--duration", "10x", *NOWHERE]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'10x' is not a duration" in err


def test_durations_take_units() -> None:
    from tracecheck.cli.load import Seconds

    assert [Seconds().convert(v, None, None) for v in ("10", "2.5s", "2m", "1h", "250ms")] == [
        10.0,
        2.5,
        120.0,
        3600.0,
        0.25,
    ]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("1000:5000:1000", [1000, 2000, 3000, 4000, 5000]),
        ("500:500:1", [500]),
        ("1e3:2e3:5e2", [1000, 1500, 2000]),
    ],
)
def test_ramp_steps(text: str, want: list[float]) -> None:
    assert rates(*parse_ramp(text)) == want


@pytest.mark.parametrize("text", ["", "1000", "1000:2000", "a:b:c", "0:10:1", "1:10:0", "1:1000:1"])
def test_bad_ramps_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_ramp(text)


# -- the ramp's verdicts ------------------------------------------------------------------------


def _result(rate: float, **kw: object) -> LoadResult:
    args: dict[str, object] = {
        "run_id": f"r-{rate:.0f}", "shard": 0, "shards": 1, "seed": 1, "service": "s",
        "protocol": "grpc", "address": "c:4317", "compression": "gzip", "target_rate": rate,
        "duration_s": 5.0, "spans_per_trace": 5, "traces_per_request": 100, "concurrency": 4,
        "planned_spans": int(rate * 5), "planned_traces": int(rate), "planned_requests": 10,
        "sent_spans": int(rate * 5), "sent_traces": int(rate), "sent_requests": 10,
        "rejected_spans": 0, "refused_final_spans": 0, "failed_spans": 0, "unsent_spans": 0,
        "refusals": {}, "errors": {}, "retries": 0, "started_at": 0.0, "elapsed_s": 5.0,
        "achieved_rate": rate, "late_requests": 0, "max_lag_s": 0.0, "mean_lag_s": 0.0,
        "end_lag_s": 0.0, "cpu_s": 0.1,
    }  # fmt: skip
    args.update(kw)
    return LoadResult(**args)  # type: ignore[arg-type]


def _accounting(result: LoadResult, hops: list[HopCount]) -> Accounting:
    return Accounting(result.run_id, (ShardRecord.from_result(result),), tuple(hops), None, 0.0)


def _clean(rate: float) -> RampStep:
    r = _result(rate)
    n = r.planned_spans
    acc = _accounting(r, [HopCount("client", n, n, 0, "exact", Status.PASS)])
    return RampStep(rate, r, acc, *_judge(rate, r, acc))


def test_the_ramp_names_the_last_clean_rate_and_the_hop_that_gave_way() -> None:
    steps = [_clean(1000), _clean(2000)]
    r = _result(3000, sent_spans=12_000, refused_final_spans=3_000,
                refusals={"UNAVAILABLE": Refusals(6, 3_000)})  # fmt: skip
    receiver = HopCount(
        "receiver", 15_000, 12_000, 3_000, "exact", Status.FAIL,
        cause="refused UNAVAILABLE (3,000 spans in refused attempts): data refused due to high "
        "memory usage (the collector's memory_limiter)",
    )  # fmt: skip
    acc = _accounting(r, [HopCount("client", 15_000, 15_000, 0, "exact", Status.PASS), receiver])
    verdict = _judge(3000, r, acc)
    assert verdict[:2] == ("pipeline", "receiver") and "memory_limiter" in verdict[2]
    steps.append(RampStep(3000, r, acc, *verdict))
    report = _report(steps, [1000, 2000, 3000, 4000], _settings(), _spec(), "r", 0.0, 30.0, 5.0)
    capacity = report.result("ramp.capacity")
    assert capacity.status is Status.PASS
    assert capacity.detail.startswith(
        "capacity 2,000 spans/s (the last clean step); gave way at 3,000 spans/s at the "
        "receiver hop"
    )
    assert capacity.data["capacity_spans_per_s"] == 2000 and capacity.data["hop"] == "receiver"
    assert report.result("ramp.3000").status is Status.WARN
    assert [row["verdict"] for row in report.tables["ramp"]] == ["clean", "clean", "pipeline"]
    assert report.exit_code == 0


def test_a_generator_that_falls_behind_is_not_blamed_on_the_pipeline() -> None:
    r = _result(50_000, unsent_spans=100_000, sent_spans=150_000, achieved_rate=30_000.0)
    acc = _accounting(r, [HopCount("client", 250_000, 150_000, 100_000, "exact", Status.FAIL)])
    verdict, hop, why = _judge(50_000, r, acc)
    assert (verdict, hop) == ("generator", "client")
    assert "the pipeline was not the limit" in why
    report = _report([_clean(40_000), RampStep(50_000, r, acc, verdict, hop, why)],
                     [40_000, 50_000], _settings(), _spec(), "r", 0.0, 30.0, 5.0)  # fmt: skip
    capacity = report.result("ramp.capacity")
    assert capacity.status is Status.WARN
    assert capacity.detail.startswith("capacity at least 40,000 spans/s; the generator gave way")


def test_a_ramp_without_a_clean_step_fails() -> None:
    r = _result(1000, sent_spans=0, refused_final_spans=5000,
                refusals={"UNAVAILABLE": Refusals(10, 5000)})  # fmt: skip
    receiver = HopCount("receiver", 5000, 0, 5000, "exact", Status.FAIL, cause="refused")
    acc = _accounting(r, [receiver])
    step = RampStep(1000, r, acc, *_judge(1000, r, acc))
    report = _report([step], [1000, 2000], _settings(), _spec(), "r", 0.0, 9.0, 5.0)
    assert report.result("ramp.capacity").status is Status.FAIL
    assert report.exit_code == 1


def _settings() -> object:
    from tracecheck.config import Settings

    return Settings()


def _spec() -> object:
    from tracecheck.load import LoadSpec

    return dataclasses.replace(LoadSpec(rate=None, duration=None))
