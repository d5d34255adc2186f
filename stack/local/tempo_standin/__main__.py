"""``python -m tempo_standin --config FILE [--collection-interval S] [--trace-idle-period S]
[--data-dir DIR]``: run the stand-in until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from tempo_standin.app import Standin, stderr_logger
from tempo_standin.config import ConfigError, load_config, parse_go_duration

__all__ = ["main"]


def _seconds(text: str) -> float:
    """A flag value in seconds: a number (``15``, ``0.5``) or a Go duration (``15s``)."""
    try:
        return float(text)
    except ValueError:
        try:
            return parse_go_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tempo_standin",
        description="Grafana Tempo 2.9 stand-in (tracecheck local pipeline).",
    )
    p.add_argument("--config", required=True, help="tempo.yaml (after the local substitutions)")
    p.add_argument("--collection-interval", type=_seconds, help="registry collection interval")
    p.add_argument("--trace-idle-period", type=_seconds, help="ingester trace_idle_period")
    p.add_argument("--trace-live-period", type=_seconds, help="ingester trace_live_period")
    p.add_argument("--data-dir", help="state directory (kept for the supervisor; unused)")
    p.add_argument("--http-port", type=int, help="override server.http_listen_port (0: free)")
    p.add_argument("--retention", type=_seconds, help="drop traces idle this long (default 1h)")
    p.add_argument("--max-spans", type=int, help="spans held before the oldest traces go")
    args = p.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        stderr_logger(f"config error: {exc}")
        return 4
    overrides: dict[str, object] = {}
    if args.collection_interval is not None:
        overrides["collection_interval"] = args.collection_interval
    if args.trace_idle_period is not None:
        overrides["trace_idle_period"] = args.trace_idle_period
    if args.trace_live_period is not None:
        overrides["trace_live_period"] = args.trace_live_period
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    if args.http_port is not None:
        overrides["http_port"] = args.http_port
    if args.retention is not None:
        overrides["retention"] = args.retention
    if args.max_spans is not None:
        overrides["max_spans"] = args.max_spans
    config = config.with_overrides(**overrides)
    app = Standin(config)
    try:
        app.start()
    except OSError as exc:
        stderr_logger(f"cannot start: {exc}")
        app.stop()
        return 1
    done = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stderr_logger(f"received {signal.Signals(signum).name}, stopping")
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not done.wait(1.0):
        pass
    app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
