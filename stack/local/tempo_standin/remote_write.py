"""Prometheus remote write 1.0: ``prometheus.WriteRequest``, snappy, and the HTTP POST.

The message types are built from descriptors in code (no protoc, no generated module):

    message WriteRequest { repeated TimeSeries timeseries = 1; reserved 2;
                           repeated MetricMetadata metadata = 3; }
    message TimeSeries   { repeated Label labels = 1; repeated Sample samples = 2;
                           repeated Exemplar exemplars = 3; }
    message Label        { string name = 1; string value = 2; }
    message Sample       { double value = 1; int64 timestamp = 2; }
    message Exemplar     { repeated Label labels = 1; double value = 2; int64 timestamp = 3; }

Wire facts (Prometheus remote-write 1.0 specification): the body is the snappy *block* format,
headers ``Content-Encoding: snappy``, ``Content-Type: application/x-protobuf``,
``X-Prometheus-Remote-Write-Version: 0.1.0``; labels sorted by name within a series
(https://prometheus.io/docs/specs/prw/remote_write_spec/). Tempo adds ``X-Scope-OrgID: <tenant>``
when ``remote_write_add_org_id_header`` is on (the default) and the tenant is not
``single-tenant`` (modules/generator/storage/config_util.go at v2.9.0).
"""

from __future__ import annotations

import base64
import http.client
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cramjam
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tempo_standin.config import RemoteWrite
from tempo_standin.selfmetrics import MetricsRegistry

__all__ = [
    "PushResult",
    "RemoteWriteQueue",
    "Series",
    "build_write_request",
    "push",
    "write_request_class",
]


@dataclass(frozen=True, slots=True)
class Series:
    """One series in a write: labels (incl. __name__), samples (value, ms), exemplars."""

    labels: tuple[tuple[str, str], ...]
    samples: tuple[tuple[float, int], ...]
    # (exemplar labels, value, timestamp ms)
    exemplars: tuple[tuple[tuple[tuple[str, str], ...], float, int], ...] = ()


_CLASSES: dict[str, Any] = {}


def _build_classes() -> dict[str, Any]:
    fdp = descriptor_pb2.FileDescriptorProto()
    # A private package name, so the pool never clashes with another copy of these types.
    fdp.name = "tempo_standin/remote.proto"
    fdp.package = "prometheus"
    fdp.syntax = "proto3"
    T = descriptor_pb2.FieldDescriptorProto

    def msg(name: str, fields: list[tuple[str, int, int, int, str]]) -> None:
        m = fdp.message_type.add()
        m.name = name
        for fname, number, ftype, label, type_name in fields:
            f = m.field.add()
            f.name = fname
            f.number = number
            f.type = ftype
            f.label = label
            if type_name:
                f.type_name = type_name

    rep, opt = T.LABEL_REPEATED, T.LABEL_OPTIONAL
    msg("Label", [("name", 1, T.TYPE_STRING, opt, ""), ("value", 2, T.TYPE_STRING, opt, "")])
    msg("Sample", [("value", 1, T.TYPE_DOUBLE, opt, ""), ("timestamp", 2, T.TYPE_INT64, opt, "")])
    msg(
        "Exemplar",
        [
            ("labels", 1, T.TYPE_MESSAGE, rep, ".prometheus.Label"),
            ("value", 2, T.TYPE_DOUBLE, opt, ""),
            ("timestamp", 3, T.TYPE_INT64, opt, ""),
        ],
    )
    msg(
        "TimeSeries",
        [
            ("labels", 1, T.TYPE_MESSAGE, rep, ".prometheus.Label"),
            ("samples", 2, T.TYPE_MESSAGE, rep, ".prometheus.Sample"),
            ("exemplars", 3, T.TYPE_MESSAGE, rep, ".prometheus.Exemplar"),
        ],
    )
    msg("WriteRequest", [("timeseries", 1, T.TYPE_MESSAGE, rep, ".prometheus.TimeSeries")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"prometheus.{name}"))
        for name in ("Label", "Sample", "Exemplar", "TimeSeries", "WriteRequest")
    }


def write_request_class() -> Any:
    """The ``prometheus.WriteRequest`` message class."""
    if not _CLASSES:
        _CLASSES.update(_build_classes())
    return _CLASSES["WriteRequest"]


def build_write_request(series: list[Series], *, with_exemplars: bool) -> bytes:
    """Serialized (not yet compressed) WriteRequest."""
    req = write_request_class()()
    for s in series:
        ts = req.timeseries.add()
        for name, label_value in sorted(s.labels):
            lbl = ts.labels.add()
            lbl.name = name
            lbl.value = label_value
        for sample_value, t_ms in s.samples:
            smp = ts.samples.add()
            smp.value = sample_value
            smp.timestamp = t_ms
        if with_exemplars:
            for ex_labels, ex_value, t_ms in s.exemplars:
                ex = ts.exemplars.add()
                for name, lv in ex_labels:
                    el = ex.labels.add()
                    el.name = name
                    el.value = lv
                ex.value = ex_value
                ex.timestamp = t_ms
    return bytes(req.SerializeToString())


@dataclass(frozen=True, slots=True)
class PushResult:
    status: int  # HTTP status, 0 when no response (connection error)
    error: str  # "" on success; one line otherwise
    retryable: bool
    retry_after: float = 0.0  # seconds from a Retry-After header on a retryable answer
    sent_bytes: int = 0  # compressed body size


def push(
    url: str,
    payload: bytes,
    *,
    org_id: str | None,
    headers: tuple[tuple[str, str], ...] = (),
    timeout: float = 30.0,
    retry_on_http_429: bool = False,
    attempt: int = 0,
) -> PushResult:
    """POST one snappy-compressed WriteRequest. Never raises for network or HTTP errors.

    Retry semantics follow Prometheus's remote-write client (storage/remote/client.go Store):
    connection errors and 5xx are recoverable; 429 only with ``retry_on_http_429``; any other
    non-2xx is not (the batch is dropped and counted as failed).
    """
    body = bytes(cramjam.snappy.compress_raw(payload))
    parts = urllib.parse.urlsplit(url)
    conn_cls = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    hdrs = {
        "Content-Encoding": "snappy",
        "Content-Type": "application/x-protobuf",
        "User-Agent": "tempo-standin/2.9.0",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
    }
    if attempt > 0:
        hdrs["Retry-Attempt"] = str(attempt)
    if org_id is not None:
        hdrs["X-Scope-OrgID"] = org_id
    if parts.username is not None:
        # Go's HTTP client sends URL userinfo as basic auth; the connection gets the host only.
        user = (
            f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        )
        hdrs["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
    hdrs.update(dict(headers))
    try:
        conn = conn_cls(parts.hostname or "", parts.port, timeout=timeout)
        try:
            conn.request("POST", path, body=body, headers=hdrs)
            resp = conn.getresponse()
            text = resp.read(512).decode("utf-8", "replace").strip().replace("\n", " ")
            status = resp.status
            retry_after_header = resp.getheader("Retry-After") or ""
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as exc:
        return PushResult(0, f"{type(exc).__name__}: {exc}", True, sent_bytes=len(body))
    if 200 <= status < 300:
        return PushResult(status, "", False, sent_bytes=len(body))
    retryable = status >= 500 or (retry_on_http_429 and status == 429)
    retry_after = 0.0
    if retryable and retry_after_header.strip().isdigit():
        retry_after = float(retry_after_header.strip())
    return PushResult(
        status,
        f"server returned HTTP status {status}: {text[:200]}",
        retryable,
        retry_after,
        len(body),
    )


MAX_SAMPLES_PER_SEND = 2000  # prometheus/config/config.go DefaultQueueConfig
MIN_BACKOFF, MAX_BACKOFF = 0.03, 5.0  # ditto: retry backoff for recoverable errors
MAX_PENDING_SAMPLES = 500_000  # the stand-in's memory bound (Prometheus buffers in its WAL)


class RemoteWriteQueue:
    """One ``remote_write`` target of one tenant: Prometheus's queue manager in one shard.

    Collections are enqueued; a sender thread posts batches of at most 2000 samples plus
    exemplars, a partial batch once ``queue_config.batch_send_deadline`` (5s) has passed since
    the last send.
    A recoverable error retries the same batch with backoff (30ms doubling to 5s, or the
    server's Retry-After) for as long as it takes; a non-recoverable one drops the batch. The
    ``prometheus_remote_storage_*`` counters move as in storage/remote/queue_manager.go
    (sendSamplesWithBackoff, updateMetrics): ``samples_total`` per attempt, ``samples_retried``
    per failed recoverable attempt, ``samples_failed`` per dropped sample.
    """

    def __init__(
        self,
        target: RemoteWrite,
        *,
        tenant: str,
        org_id: str | None,
        metrics: MetricsRegistry,
        log: Callable[[str], None],
    ) -> None:
        self.target = target
        self._org_id = org_id
        self._log = log
        self._deadline = target.batch_send_deadline
        lbl = {"remote_name": target.remote_name, "tenant": tenant, "url": target.shown_url}
        m = metrics
        self._samples = m.counter("prometheus_remote_storage_samples_total", **lbl)
        self._samples_failed = m.counter("prometheus_remote_storage_samples_failed_total", **lbl)
        self._samples_retried = m.counter("prometheus_remote_storage_samples_retried_total", **lbl)
        self._samples_pending = m.gauge("prometheus_remote_storage_samples_pending", **lbl)
        self._exemplars = m.counter("prometheus_remote_storage_exemplars_total", **lbl)
        self._exemplars_failed = m.counter(
            "prometheus_remote_storage_exemplars_failed_total", **lbl
        )
        self._exemplars_retried = m.counter(
            "prometheus_remote_storage_exemplars_retried_total", **lbl
        )
        self._exemplars_pending = m.gauge("prometheus_remote_storage_exemplars_pending", **lbl)
        self._bytes = m.counter("prometheus_remote_storage_bytes_total", **lbl)
        self._highest_sent = m.gauge(
            "prometheus_remote_storage_queue_highest_sent_timestamp_seconds", **lbl
        )
        self._cond = threading.Condition()
        self._pending: deque[Series] = deque()
        self._pending_points = 0
        self._in_flight = 0
        self._force = False
        self._closing = False
        self._hard_stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"remote-write-{target.remote_name}", daemon=True
        )
        self._thread.start()

    @staticmethod
    def _points(s: Series) -> int:
        return len(s.samples) + len(s.exemplars)

    def enqueue(self, series: list[Series]) -> None:
        with self._cond:
            for s in series:
                self._pending.append(s)
                self._pending_points += self._points(s)
                self._samples_pending.inc(len(s.samples))
                self._exemplars_pending.inc(len(s.exemplars))
            while self._pending_points > MAX_PENDING_SAMPLES and self._pending:
                old = self._pending.popleft()
                self._pending_points -= self._points(old)
                self._samples_pending.dec(len(old.samples))
                self._exemplars_pending.dec(len(old.exemplars))
                self._log(
                    f"remote_write url={self.target.shown_url} dropped {len(old.samples)} "
                    "samples: more than the stand-in's pending bound"
                )
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Send what is pending now (not waiting for the batch deadline) and wait until the
        queue is empty; False when ``timeout`` passed first."""
        end = time.monotonic() + timeout
        with self._cond:
            self._force = True
            self._cond.notify_all()
            while self._pending or self._in_flight:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            self._force = False
        return True

    def close(self, flush_deadline: float) -> None:
        """Shutdown: keep sending for at most ``flush_deadline`` (remote_write_flush_deadline),
        then stop, abandoning what is left (as QueueManager.Stop does)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if not self.flush(flush_deadline):
            with self._cond:
                left = sum(len(s.samples) for s in self._pending)
            self._log(
                f"remote_write url={self.target.shown_url} stopped with {left} samples unsent "
                f"after remote_write_flush_deadline={flush_deadline:g}s"
            )
        self._hard_stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=5.0)

    def _take_batch(self) -> list[Series]:
        batch: list[Series] = []
        points = 0
        while self._pending:
            n = self._points(self._pending[0])
            if batch and points + n > MAX_SAMPLES_PER_SEND:
                break
            batch.append(self._pending.popleft())
            points += n
        self._pending_points -= points
        self._in_flight = points
        return batch

    def _run(self) -> None:
        last_send = time.monotonic()
        while not self._hard_stop.is_set():
            with self._cond:
                while not self._hard_stop.is_set():
                    due = last_send + self._deadline
                    now = time.monotonic()
                    if self._pending and (
                        self._pending_points >= MAX_SAMPLES_PER_SEND
                        or self._force
                        or self._closing
                        or now >= due
                    ):
                        break
                    if now >= due:
                        last_send = now  # the batch timer fires with nothing to send
                        due = now + self._deadline
                    self._cond.wait(max(0.001, due - now))
                if self._hard_stop.is_set():
                    return
                batch = self._take_batch()
            self._send(batch)
            last_send = time.monotonic()
            with self._cond:
                self._in_flight = 0
                self._cond.notify_all()

    def _send(self, batch: list[Series]) -> None:
        samples = sum(len(s.samples) for s in batch)
        exemplars = sum(len(s.exemplars) for s in batch)
        payload = build_write_request(batch, with_exemplars=True)
        highest = max((t for s in batch for _v, t in s.samples), default=0)
        url = self.target.shown_url
        backoff = MIN_BACKOFF
        attempt = 0
        result = PushResult(0, "not sent", False)
        while True:
            started = time.monotonic()
            self._samples.inc(samples)
            self._exemplars.inc(exemplars)
            result = push(
                self.target.url,
                payload,
                org_id=self._org_id,
                headers=self.target.headers,
                timeout=self.target.remote_timeout,
                retry_on_http_429=self.target.retry_on_http_429,
                attempt=attempt,
            )
            took = time.monotonic() - started
            if not result.error:
                self._log(
                    f"remote_write url={url} status={result.status} series={len(batch)} "
                    f"samples={samples} exemplars={exemplars} seconds={took:.3f}"
                )
                break
            if not result.retryable:
                self._samples_failed.inc(samples)
                self._exemplars_failed.inc(exemplars)
                self._log(
                    f"remote_write url={url} failed samples={samples} retry=no: {result.error}"
                )
                break
            self._samples_retried.inc(samples)
            self._exemplars_retried.inc(exemplars)
            sleep = result.retry_after or backoff
            self._log(
                f"remote_write url={url} failed samples={samples} retry=yes "
                f"in={sleep:g}s: {result.error}"
            )
            if self._hard_stop.wait(sleep):
                break  # stopped while retrying: the batch is abandoned
            backoff = min(backoff * 2, MAX_BACKOFF)
            attempt += 1
        self._bytes.inc(result.sent_bytes)
        self._highest_sent.set_max(float(highest // 1000))
        self._samples_pending.dec(samples)
        self._exemplars_pending.dec(exemplars)
