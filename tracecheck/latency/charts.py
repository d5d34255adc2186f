"""The latency report drawn: matplotlib charts, a PNG of the main one, a self-contained HTML page.

matplotlib is imported inside the functions that draw (the ``plots`` extra), so the report's
table works without it.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import TYPE_CHECKING

from tracecheck.errors import ConfigError
from tracecheck.latency.report import CHART_ENDPOINTS, ApiserverReport
from tracecheck.output import iso
from tracecheck.results import ResultTable

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = [
    "chart_delays",
    "chart_errors",
    "chart_latency",
    "render_html",
    "write_html",
    "write_png",
]


def _figure(width: float, height: float) -> Figure:
    # A bare Figure renders with Agg and touches no global pyplot state or backend.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _short(name: str, limit: int = 52) -> str:
    """A label that fits: the method stays, the middle of a long route is elided."""
    if len(name) <= limit:
        return name
    method, sep, route = name.partition(" ")
    if not sep:
        return name[: limit - 1] + "…"
    return f"{method} …{route[-(limit - len(method) - 2) :]}"


def chart_latency(report: ApiserverReport) -> Figure:
    """The main chart: per endpoint (the busiest :data:`CHART_ENDPOINTS`), the distribution of
    trace durations (box and points, log scale) with the p50/p99 of each source marked."""
    fig = _figure(11, 1.2 + 0.55 * max(1, min(CHART_ENDPOINTS, len(report.endpoints))))
    ax = fig.add_subplot()
    top = list(report.endpoints["endpoint"][:CHART_ENDPOINTS])[::-1]
    if not top:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    kept = report.durations[~report.durations["is_watch"]]
    data = [kept.loc[kept["endpoint"] == e, "duration_ms"].to_numpy() for e in top]
    positions = list(range(len(top)))
    with_data = [(p, d) for p, d in zip(positions, data, strict=True) if len(d)]
    if with_data:
        ax.boxplot([d for _, d in with_data], positions=[p for p, _ in with_data],
                   orientation="horizontal", widths=0.5, showfliers=False, manage_ticks=False,
                   medianprops={"color": "tab:blue"})  # fmt: skip
        import numpy as np

        rng = np.random.default_rng(0)
        for p, d in with_data:
            ax.scatter(d, p + rng.uniform(-0.18, 0.18, len(d)), s=6, alpha=0.35,
                       color="tab:blue", linewidths=0)  # fmt: skip
    idx = report.endpoints.set_index("endpoint")
    plotted: list[float] = []
    marks = (
        ("traces_p99_ms", "|", "tab:blue", "p99 traces"),
        ("sm_p50_ms", "D", "tab:orange", "p50 span-metrics"),
        ("sm_p99_ms", "d", "tab:red", "p99 span-metrics"),
        ("apiserver_p99_ms", "^", "tab:green", "p99 apiserver metric"),
    )
    for col, marker, color, label in marks:
        xs, ys = [], []
        for p, e in zip(positions, top, strict=True):
            v = idx.at[e, col] if e in idx.index else math.nan
            if isinstance(v, float) and math.isfinite(v) and v > 0:
                xs.append(v)
                ys.append(p)
        plotted.extend(xs)
        if xs:
            ax.scatter(xs, ys, marker=marker, s=70 if marker == "|" else 40, color=color,
                       label=label, zorder=3)  # fmt: skip
    # The axis follows the data; bucket bounds are drawn only inside it.
    shown = [float(v) for _, d in with_data for v in d if v > 0] + plotted
    lo, hi = (min(shown) / 1.5, max(shown) * 1.5) if shown else (0.1, 10.0)
    for bound in report.sm_bounds_ms:
        if lo <= bound <= hi:
            ax.axvline(bound, color="0.85", linewidth=0.6, zorder=0)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ax.set_yticks(positions, [_short(e) for e in top], fontsize=8)
    ax.set_xlabel("latency (ms, log scale; grey lines: span-metric bucket bounds)")
    ax.set_title(
        f"{report.service}: request latency per endpoint, {iso(report.start)} to {iso(report.end)}",
        fontsize=10,
    )
    ax.grid(axis="x", which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def chart_delays(report: ApiserverReport) -> Figure:
    """Pipeline delay per stage: one bar per smoke stage, a box for exemplar-derived delays."""
    fig = _figure(9, 1.4 + 0.6 * max(1, report.delays["stage"].nunique()))
    ax = fig.add_subplot()
    if report.delays.empty:
        ax.text(0.5, 0.5, "no delays measured (run with --probe)", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
        ax.set_axis_off()
        return fig
    stages = list(dict.fromkeys(report.delays["stage"]))[::-1]
    for i, stage in enumerate(stages):
        values = report.delays.loc[report.delays["stage"] == stage, "delay_s"].to_numpy()
        if len(values) == 1:
            ax.barh(i, values[0], color="tab:purple", height=0.5)
            ax.text(values[0], i + 0.3, f"{values[0]:.2f}s", ha="right", fontsize=8)
        else:
            ax.boxplot(
                [values], positions=[i], orientation="horizontal", widths=0.5, manage_ticks=False
            )
            median = float(sorted(values)[len(values) // 2])
            ax.text(median, i + 0.3, f"median {median:.2f}s (n={len(values)})", ha="center",
                    fontsize=8)  # fmt: skip
    # "tempo.search (tempo ingester -> search)": the check on one line, its hop below.
    labels = [s.replace(" (", "\n(", 1) for s in stages]
    ax.set_yticks(range(len(stages)), labels, fontsize=8)
    ax.set_xlabel("seconds from send (smoke) or span end (exemplars) until visible")
    ax.set_title("pipeline delay per stage", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return fig


def chart_errors(report: ApiserverReport) -> Figure:
    """Error rate over time per source (span-metrics, apiserver 5xx, traces)."""
    from datetime import UTC, datetime

    fig = _figure(11, 3.6)
    ax = fig.add_subplot()
    if report.errors.empty:
        ax.text(0.5, 0.5, "no requests in the window", ha="center", va="center",
                transform=ax.transAxes)  # fmt: skip
        ax.set_axis_off()
        return fig
    styles = {"span-metrics": ("tab:red", "-"), "apiserver 5xx": ("tab:green", "--"),
              "traces": ("tab:blue", ":")}  # fmt: skip
    for source, group in report.errors.groupby("source", sort=False):
        color, line = styles.get(str(source), ("0.3", "-"))
        if source == "traces":
            # Few spans per bin make a jumpy percentage: the marker's area shows how many.
            sizes = [8 + 6 * math.sqrt(n) for n in group["requests"]]
            ax.plot(list(group["time"]), group["error_pct"], line, color=color, linewidth=0.8)
            ax.scatter(list(group["time"]), group["error_pct"], s=sizes, color=color,
                       alpha=0.6, label="traces (marker area: spans found)")  # fmt: skip
        else:
            ax.plot(list(group["time"]), group["error_pct"], line, color=color,
                    label=str(source))  # fmt: skip
    ticks = [report.start + i * (report.end - report.start) / 6 for i in range(7)]
    fmt = "%H:%M" if report.end - report.start <= 86400 else "%m-%d %H:%M"
    ax.set_xticks(ticks, [datetime.fromtimestamp(t, UTC).strftime(fmt) for t in ticks])
    ax.set_xlim(report.start, report.end)
    ax.set_ylabel("errors (% of requests)")
    ax.set_ylim(bottom=0, top=max(5.0, float(report.errors["error_pct"].max()) * 1.2))
    ax.set_title("error rate over time (UTC)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_png(report: ApiserverReport, path: str) -> None:
    """Write the main chart (:func:`chart_latency`) as a PNG file."""
    _write(path, _png(chart_latency(report)))


def write_html(report: ApiserverReport, path: str) -> None:
    """Write :func:`render_html` to ``path``."""
    _write(path, render_html(report).encode("utf-8"))


def _write(path: str, data: bytes) -> None:
    from pathlib import Path

    try:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    except OSError as exc:
        raise ConfigError("report", path, f"cannot write: {exc.strerror or exc}") from None


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:.25em .5em}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{color:#555}code,pre{font-size:.85em}pre{white-space:pre-wrap;background:#f7f7f7;padding:.5em}
img{max-width:100%}
"""


def render_html(report: ApiserverReport) -> str:
    """One self-contained HTML page: the endpoint table, notes, three charts (inline PNG) and
    the queries that produced the numbers. No external resources."""
    charts = (
        ("Latency per endpoint", chart_latency(report),
         "Boxes and points: trace durations (WATCH excluded). Markers: p99 from traces, p50/p99 "
         "from span-metrics, p99 from the apiserver's own histogram."),
        ("Pipeline delay per stage", chart_delays(report),
         "Bars: one smoke run (send to visible). Boxes: span end to the span-metrics sample "
         "holding its exemplar."),
        ("Error rate over time", chart_errors(report),
         "span-metrics: STATUS_CODE_ERROR share of SERVER calls; apiserver: 5xx share of "
         "apiserver_request_total; traces: share of found spans with status >= 500."),
    )  # fmt: skip
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>tracecheck report apiserver: {e(report.service)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>tracecheck report apiserver: <code>{e(report.service)}</code></h1>",
        f"<p>Window {e(iso(report.start))} to {e(iso(report.end))}; span-metrics family "
        f"<code>{e(report.naming or 'none found')}</code>; {report.traces_found} traces found"
        f"{' (limited)' if report.traces_limited else ''}.</p>",
    ]
    if report.notes:
        parts.append("<ul class='note'>" + "".join(f"<li>{e(n)}</li>" for n in report.notes)
                     + "</ul>")  # fmt: skip
    parts.append("<h2>Endpoints</h2>")
    parts.append(_html_table(report.table(full=True)))
    for title, fig, caption in charts:
        data = base64.b64encode(_png(fig)).decode("ascii")
        parts.append(f"<h2>{e(title)}</h2><p class='note'>{e(caption)}</p>")
        parts.append(f"<img alt='{e(title)}' src='data:image/png;base64,{data}'>")
    evaluated = e(iso(report.evaluated_at))
    parts.append(
        "<h2>Queries</h2><details><summary>PromQL and TraceQL behind the numbers (instant "
        f"queries evaluated at {evaluated})</summary>"
    )
    for name, text in report.queries:
        parts.append(f"<p><b>{e(name)}</b></p><pre>{e(text)}</pre>")
    parts.append("</details></body></html>")
    return "\n".join(parts) + "\n"


def _html_table(table: ResultTable) -> str:
    if not table.rows:
        return "<p class='note'>no data</p>"
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for c in table.columns:
            v = row.get(c)
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            text = "" if v is None else (f"{v:,.3f}".rstrip("0").rstrip(".") if num else str(v))
            cells.append(f"<td class='num'>{e(text)}</td>" if num else f"<td>{e(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
