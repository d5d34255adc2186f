"""A parser for the Prometheus text exposition format, and sums over metric families.

Used for the self-metrics of the OpenTelemetry Collector (``:8888/metrics``) and of Tempo
(``/metrics``), which say whether spans were accepted, refused and *exported*
(docs/reference/collector.md §4, §6; docs/reference/tempo.md §12).

Accepted input: text format 0.0.4 (``name{label="value",...} value [timestamp_ms]``, ``# HELP``,
``# TYPE``), Prometheus 3's quoted UTF-8 names (``{"my.metric","label.name"="v"} 1``), and the
OpenMetrics extras a server may add (``# UNIT``, ``# EOF``, an exemplar after `` # ``, which is
ignored). Values use Go's spelling (``NaN``, ``+Inf``, ``-Inf``).

Counter names depend on configuration: the collector's default telemetry drops the ``_total`` suffix
(``otelcol_receiver_accepted_spans``), an explicitly configured Prometheus reader keeps it
(``otelcol_receiver_accepted_spans_total``; docs/reference/collector.md §6). :meth:`Exposition.sum`
and :meth:`Exposition.select` therefore match a name with or without ``_total``.

>>> exp = parse_exposition('otelcol_exporter_sent_spans_total{exporter="otlp"} 3\\n')
>>> exp.sum("otelcol_exporter_sent_spans", {"exporter": "otlp"})
3.0
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Exposition", "LabelFilter", "MetricSample", "parse_exposition"]

# A label filter value: an exact string, or a compiled pattern that must match the whole value.
LabelFilter = Mapping[str, "str | re.Pattern[str]"]


@dataclass(frozen=True, slots=True)
class MetricSample:
    """One sample line. ``timestamp`` is as written (milliseconds in the text format), or None."""

    name: str
    labels: Mapping[str, str]
    value: float
    timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class Exposition:
    """The samples of one scrape, in order, with the ``# TYPE`` and ``# HELP`` lines by name."""

    samples: tuple[MetricSample, ...]
    types: Mapping[str, str] = field(default_factory=dict)
    help: Mapping[str, str] = field(default_factory=dict)

    def names(self) -> frozenset[str]:
        """Every sample name present."""
        return frozenset(s.name for s in self.samples)

    def resolve(self, name: str) -> str | None:
        """The spelling of ``name`` present here: as given, else with/without ``_total``."""
        present = self.names()
        if name in present:
            return name
        base = name.removesuffix("_total")
        for candidate in (base, base + "_total"):
            if candidate in present:
                return candidate
        return None

    def select(self, name: str, labels: LabelFilter | None = None) -> tuple[MetricSample, ...]:
        """Samples of ``name`` (with or without ``_total``) whose labels match ``labels``.

        Only one spelling is used (the one :meth:`resolve` finds), so a scrape that somehow has
        both is never counted twice. A filter ``{"l": ""}`` matches a missing label, as in PromQL.
        """
        resolved = self.resolve(name)
        if resolved is None:
            return ()
        return tuple(
            s for s in self.samples if s.name == resolved and _matches(s.labels, labels or {})
        )

    def sum(self, name: str, labels: LabelFilter | None = None) -> float:
        """Sum of the matching samples; 0.0 when there are none.

        A counter that was never incremented is often absent from an exposition (OpenTelemetry
        SDKs export a series only once it has a value), so absent means zero here; use
        :meth:`has` to tell the two apart.
        """
        return math.fsum(s.value for s in self.select(name, labels))

    def has(self, name: str, labels: LabelFilter | None = None) -> bool:
        """Whether at least one sample matches."""
        return bool(self.select(name, labels))

    def value(self, name: str, labels: LabelFilter | None = None) -> float | None:
        """The value of the single matching sample; None if none; ValueError if several."""
        found = self.select(name, labels)
        if not found:
            return None
        if len(found) > 1:
            raise ValueError(f"{len(found)} samples of {name} match {dict(labels or {})}")
        return found[0].value


def _matches(labels: Mapping[str, str], wanted: LabelFilter) -> bool:
    for key, want in wanted.items():
        have = labels.get(key, "")
        if isinstance(want, re.Pattern):
            if want.fullmatch(have) is None:
                return False
        elif have != want:
            return False
    return True


_NAME_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:")
_NAME_CHARS = _NAME_START | frozenset("0123456789")
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


class _Line:
    """A cursor over one line, raising ValueError with the column on bad input."""

    def __init__(self, text: str, lineno: int) -> None:
        self.text = text
        self.pos = 0
        self.lineno = lineno

    def fail(self, what: str) -> ValueError:
        return ValueError(f"line {self.lineno}, column {self.pos + 1}: {what}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> None:
        while self.peek() in (" ", "\t"):
            self.pos += 1

    def expect(self, char: str) -> None:
        if self.peek() != char:
            found = repr(self.peek()) if self.peek() else "end of line"
            raise self.fail(f"expected {char!r}, found {found}")
        self.pos += 1

    def name(self) -> str:
        start = self.pos
        if self.peek() not in _NAME_START:
            raise self.fail("expected a metric or label name")
        while self.peek() in _NAME_CHARS:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str:
        self.expect('"')
        out: list[str] = []
        while True:
            char = self.peek()
            if not char:
                raise self.fail("unterminated quoted string")
            self.pos += 1
            if char == '"':
                return "".join(out)
            if char == "\\":
                esc = self.peek()
                if esc not in _ESCAPES:
                    raise self.fail(f"invalid escape \\{esc}")
                out.append(_ESCAPES[esc])
                self.pos += 1
            else:
                out.append(char)


def _parse_float(token: str, line: _Line) -> float:
    # Go's strconv.ParseFloat takes the same spellings as float() (NaN, +Inf, Infinity...) except
    # digit separators, which the exposition format does not allow.
    if "_" in token:
        raise line.fail(f"invalid value {token!r}")
    try:
        return float(token)
    except ValueError:
        raise line.fail(f"invalid value {token!r}") from None


def _parse_sample(line: _Line) -> MetricSample:
    name = "" if line.peek() == "{" else line.name()
    labels: dict[str, str] = {}
    after_name = line.pos
    line.skip_ws()
    has_labels = line.peek() == "{"
    if not has_labels:
        line.pos = after_name
    else:
        line.pos += 1
        while True:
            line.skip_ws()
            if line.peek() == "}":
                line.pos += 1
                break
            key = line.quoted() if line.peek() == '"' else line.name()
            line.skip_ws()
            if line.peek() in (",", "}") and not name and not labels:
                name = key  # Prometheus 3 / OpenMetrics 2: {"metric.name", ...}
            else:
                line.expect("=")
                line.skip_ws()
                if key in labels:
                    raise line.fail(f"duplicate label {key!r}")
                labels[key] = line.quoted()
            line.skip_ws()
            if line.peek() == ",":
                line.pos += 1
            elif line.peek() != "}":
                raise line.fail("expected ',' or '}' in the label set")
    if not name:
        raise line.fail("sample without a metric name")
    rest = line.text[line.pos :]
    if rest and rest[0] not in (" ", "\t") and not has_labels:
        raise line.fail("expected whitespace before the value")
    rest = rest.split(" # ", 1)[0]  # OpenMetrics exemplar: ignored
    tokens = rest.split()
    if not tokens or len(tokens) > 2:
        raise line.fail("expected a value and an optional timestamp")
    value = _parse_float(tokens[0], line)
    timestamp = _parse_float(tokens[1], line) if len(tokens) == 2 else None
    return MetricSample(name, labels, value, timestamp)


def parse_exposition(text: str) -> Exposition:
    """Parse an exposition. Raises ``ValueError("line N, column C: ...")`` on malformed input."""
    samples: list[MetricSample] = []
    types: dict[str, str] = {}
    helps: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            parts = stripped[1:].split(None, 2)
            if len(parts) >= 2 and parts[0] in ("TYPE", "HELP"):
                family = parts[1].strip('"')
                body = parts[2] if len(parts) > 2 else ""
                if parts[0] == "TYPE":
                    types[family] = body.strip()
                else:
                    helps[family] = _unescape_help(body)
            continue  # other comments, # UNIT, # EOF
        samples.append(_parse_sample(_Line(stripped, lineno)))
    return Exposition(tuple(samples), types, helps)


def _unescape_help(text: str) -> str:
    return re.sub(r"\\(\\|n)", lambda m: "\n" if m.group(1) == "n" else "\\", text)
