from __future__ import annotations

from typing import Any

from tracecheck.backends.prometheus import (
    QueryResult,
    RangeSeries,
    counter_increase,
    counter_snapshot,
)

A = {"__name__": "calls_total", "span_name": "a"}
B = {"__name__": "calls_total", "span_name": "b"}


class Prom:
    def __init__(self, *series: tuple[dict[str, str], list[tuple[float, float]]]) -> None:
        self.series = series
        self.queries: list[str] = []

    def query(self, q: str, **kw: Any) -> QueryResult:
        self.queries.append(q)
        return QueryResult(
            "matrix", (), tuple(RangeSeries(labels, tuple(p)) for labels, p in self.series)
        )


def test_reset_to_the_same_value_still_counts() -> None:
    # The writer restarted: the old series ended at 1, the new one starts 0 -> 1 (our span).
    before = Prom((A, [(100.0, 1.0)]))
    base = counter_snapshot(before, "calls_total{}", now=110.0)
    assert before.queries == ["calls_total{}[300s]"]
    after = Prom((A, [(100.0, 1.0), (140.0, 0.0), (165.0, 1.0)]))
    rose = counter_increase(after, base, now=170.0)
    assert rose == {frozenset(A.items()): 1.0}
    assert after.queries == ["calls_total{}[120s]"]


def test_new_series_count_from_zero_and_old_samples_are_ignored() -> None:
    base = counter_snapshot(Prom((A, [(90.0, 5.0), (100.0, 7.0)])), "x", now=100.0)
    after = Prom((A, [(90.0, 5.0), (100.0, 7.0), (115.0, 9.0)]), (B, [(115.0, 0.0), (130.0, 4.0)]))
    rose = counter_increase(after, base, now=130.0)
    assert rose == {frozenset(A.items()): 2.0, frozenset(B.items()): 4.0}


def test_timestamps_are_the_writers_so_clock_skew_does_not_matter() -> None:
    # tracecheck's clock is 1000 s ahead of the generator's: only sample timestamps are compared.
    base = counter_snapshot(Prom((A, [(100.0, 3.0)])), "x", now=1100.0)
    rose = counter_increase(Prom((A, [(100.0, 3.0), (115.0, 8.0)])), base, now=1120.0)
    assert sum(rose.values()) == 5.0
