"""Helpers for the watch and alert-rule tests against the local pipeline.

``loaded_rules``: the local Prometheus's configuration (stack/prometheus/prometheus.yml after
stack/local/substitutions.yaml) loads ``<state>/configs/rules/*.yaml``, where
``tracecheck stack local up`` copies the shipped ``stack/prometheus/rules/*.rules.yaml`` (and
restarts Prometheus when they changed). This checks the copies are the shipped files and waits
until the rules API lists their groups: nothing is installed behind ``up``'s back.

``running_watch``: a real watcher (the library, in a thread) on 127.0.0.1:9464, the target the
local Prometheus scrapes, stopped and joined at the end of the block.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tracecheck.config import Settings, load_settings
from tracecheck.stack.local import LocalStack
from tracecheck.watch import Watcher

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "stack" / "prometheus" / "rules"
PROMETHEUS = "http://127.0.0.1:9090"
WATCH_LISTEN = "127.0.0.1:9464"
WATCH_URL = f"http://{WATCH_LISTEN}"
#: The span-metrics checks wait for the metrics-generator (seconds per round): not the point here.
SPAN_METRICS = (
    "prometheus.span_metrics",
    "prometheus.exemplars",
    "prometheus.service_graph",
    "apiserver.span_metrics",
)

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, every: float = 0.25) -> T:
    """``probe()`` until it returns something other than None/False, or fail naming ``what``."""
    end = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last is not None and last is not False:
                return last
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {timeout:g}s (last: {last!r})")
        time.sleep(every)


def rule_groups() -> dict[str, list[dict[str, Any]]]:
    reply = httpx.get(f"{PROMETHEUS}/api/v1/rules", timeout=5)
    reply.raise_for_status()
    return {g["name"]: g["rules"] for g in reply.json()["data"]["groups"]}


def loaded_rules(stack: LocalStack) -> dict[str, list[dict[str, Any]]]:
    """The rules API's groups, once the local Prometheus lists the shipped rule groups."""
    import yaml

    wanted: set[str] = set()
    for src in sorted(RULES.glob("*.rules.yaml")):
        wanted |= {g["name"] for g in yaml.safe_load(src.read_text())["groups"]}
        copy = stack.state_dir / "configs" / "rules" / src.name
        assert copy.read_bytes() == src.read_bytes(), f"{copy} is not {src} (run stack local up)"
    assert wanted, f"no rule groups in {RULES}"
    return wait_for(
        "Prometheus lists the tracecheck rule groups",
        lambda: (groups := rule_groups()) and wanted <= set(groups) and groups,
        timeout=30,
    )


def watch_settings(stack: LocalStack, *skip: str) -> Settings:
    return load_settings(
        env={},
        flags={"apiserver.kubeconfig": str(stack.kubeconfig), "smoke.skip": ",".join(skip)},
    )


@contextlib.contextmanager
def running_watch(
    settings: Settings, *, interval: float = 1.0, grace: float = 15.0
) -> Iterator[tuple[Watcher, list[str]]]:
    """A watcher on 127.0.0.1:9464 in a thread; yields it and its log lines."""
    lines: list[str] = []
    watcher = Watcher(
        settings, interval=interval, jitter=0.0, listen=WATCH_LISTEN, grace=grace, log=lines.append
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            watcher.run()
        except BaseException as exc:  # re-raised in the test's thread below
            errors.append(exc)

    thread = threading.Thread(target=run, name="watch-under-test", daemon=True)
    thread.start()
    try:
        wait_for("the watcher serves /healthz", lambda: _ok(f"{WATCH_URL}/healthz"), timeout=10)
        yield watcher, lines
    finally:
        watcher.stop.set()
        thread.join(timeout=grace + 10)
    assert not thread.is_alive(), "the watcher did not stop within its grace period"
    if errors:
        raise errors[0]


def _ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The watcher's /metrics, parsed by the reference parser: (name, labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    reply = httpx.get(f"{WATCH_URL}/metrics", timeout=5)
    reply.raise_for_status()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def metric(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), float("nan"))


def rounds(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], result: str | None = None
) -> float:
    results = ("pass", "fail", "error") if result is None else (result,)
    return sum(metric(samples, "tracecheck_rounds_total", result=r) for r in results)
