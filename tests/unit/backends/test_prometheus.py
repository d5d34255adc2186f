"""PrometheusClient against httpx.MockTransport.

Most payloads were recorded from the Prometheus 3.8 binary the lead builds
(``prometheus-manual/prometheus``, self-scraping, ``--enable-feature=exemplar-storage``); the rest
follow docs/reference/prometheus.md §1-§2 (envelope, error types, exemplar shapes).
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from tracecheck.backends.prometheus import MAX_POINTS, PrometheusClient, escape_label_name
from tracecheck.config import PrometheusSettings
from tracecheck.errors import (
    AuthError,
    HTTPStatusError,
    NotReady,
    ProtocolError,
    QueryError,
)

BASE = "http://prom:9090"

# Recorded: rate() over a gauge -> an info annotation (2.54+ only).
RATE_WITH_INFO = {
    "status": "success",
    "data": {
        "resultType": "vector",
        "result": [
            {
                "metric": {"instance": "127.0.0.1:19090", "job": "prom", "goversion": "go1.26.8"},
                "value": [1795626241.101, "0"],
            }
        ],
    },
    "infos": [
        "PromQL info: metric might not be a counter, name does not end in "
        '_total/_sum/_count/_bucket: "prometheus_build_info" (1:6)'
    ],
}
# Recorded: histogram_quantile over a non-histogram -> a warning and an empty vector.
QUANTILE_WITH_WARNING = {
    "status": "success",
    "data": {"resultType": "vector", "result": []},
    "warnings": [
        'PromQL warning: bucket label "le" is missing or has a malformed value of "" (1:25)'
    ],
}
# Recorded: x / 0 -> "NaN"; -1/0 -> scalar "-Inf".
NAN_VECTOR = {
    "status": "success",
    "data": {
        "resultType": "vector",
        "result": [
            {"metric": {"code": "200", "handler": "/-/ready"}, "value": [1795626241.117, "NaN"]}
        ],
    },
}
NEG_INF_SCALAR = {
    "status": "success",
    "data": {"resultType": "scalar", "result": [1795626241.148, "-Inf"]},
}
MATRIX = {
    "status": "success",
    "data": {
        "resultType": "matrix",
        "result": [
            {
                "metric": {"__name__": "up", "instance": "127.0.0.1:19090", "job": "prom"},
                "values": [[1795626239, "1"], [1795626241, "+Inf"]],
            }
        ],
    },
}
# Recorded: 400 bad_data and 422 execution.
BAD_DATA = {
    "status": "error",
    "errorType": "bad_data",
    "error": 'invalid parameter "query": 1:5: parse error: unclosed left parenthesis',
}
EXECUTION = {
    "status": "error",
    "errorType": "execution",
    "error": 'found duplicate series for the match group {job="prom"} on the right hand-side '
    "of the operation: [...];many-to-many matching not allowed: matching labels must be unique "
    "on one side",
}
# Recorded /api/v1/status/buildinfo of the local build (no version ldflags) and a released one.
BUILDINFO = {
    "status": "success",
    "data": {
        "version": "3.8.0",
        "revision": "e44ed351cdf0181f9fde56ba096f4d949f9e295d",
        "branch": "HEAD",
        "buildUser": "root@buildkitsandbox",
        "buildDate": "20251202-10:00:00",
        "goVersion": "go1.25.4",
    },
}


class Recorder:
    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.get(request.url.path)
        if answer is None:
            return httpx.Response(404, text="404 page not found\n")
        if isinstance(answer, httpx.Response):
            return answer
        status, body = answer if isinstance(answer, tuple) else (200, answer)
        if isinstance(body, (dict, list)):
            return httpx.Response(status, json=body)
        return httpx.Response(status, text=body)

    def form(self, index: int = -1) -> dict[str, list[str]]:
        request = self.requests[index]
        assert request.method == "POST"
        assert request.headers["content-type"] == "application/x-www-form-urlencoded"
        return parse_qs(request.content.decode())


def client(rec: Recorder, **settings: Any) -> PrometheusClient:
    return PrometheusClient(
        PrometheusSettings(url=BASE, **settings), transport=httpx.MockTransport(rec)
    )


# -- queries ------------------------------------------------------------------------------------


def test_instant_query_posts_a_form_and_surfaces_infos() -> None:
    rec = Recorder({"/api/v1/query": RATE_WITH_INFO})
    with client(rec, tenant="team-a") as prom:
        result = prom.query("rate(prometheus_build_info[1m])", at=1795626241.1)
    assert rec.form() == {"query": ["rate(prometheus_build_info[1m])"], "time": ["1795626241.1"]}
    assert rec.requests[0].headers["x-scope-orgid"] == "team-a"
    assert result.result_type == "vector"
    (sample,) = result.samples
    assert sample.labels["job"] == "prom" and sample.value == 0.0
    assert sample.timestamp == 1795626241.101
    assert result.warnings == ()
    assert result.infos == (RATE_WITH_INFO["infos"][0],)  # type: ignore[index]


def test_warnings_are_surfaced_and_missing_keys_mean_empty() -> None:
    rec = Recorder({"/api/v1/query": QUANTILE_WITH_WARNING})
    with client(rec) as prom:
        result = prom.query("histogram_quantile(0.9, up)")
    assert result.empty
    assert result.warnings == (
        'PromQL warning: bucket label "le" is missing or has a malformed value of "" (1:25)',
    )
    assert result.infos == ()
    assert "time" not in rec.form()


def test_nan_and_infinities_are_floats() -> None:
    rec = Recorder({"/api/v1/query": NAN_VECTOR})
    with client(rec) as prom:
        assert math.isnan(prom.query("a / 0").samples[0].value)
        rec.answers["/api/v1/query"] = NEG_INF_SCALAR
        scalar = prom.query("-1/0")
    assert scalar.result_type == "scalar"
    assert scalar.samples[0].value == -math.inf and scalar.samples[0].labels == {}


def test_string_result() -> None:
    body = {
        "status": "success",
        "data": {"resultType": "string", "result": [1795625854.332, "abc"]},
    }
    with client(Recorder({"/api/v1/query": body})) as prom:
        result = prom.query('"abc"')
    assert (result.result_type, result.string, result.samples) == ("string", "abc", ())


def test_native_histogram_sample_keeps_the_histogram() -> None:
    hist = {"count": "3", "sum": "0.6", "buckets": [[0, "0.1", "0.2", "3"]]}
    body = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": {"service": "api"}, "histogram": [1700000000, hist]}],
        },
    }
    with client(Recorder({"/api/v1/query": body})) as prom:
        (sample,) = prom.query("traces_spanmetrics_latency").samples
    assert sample.value == 3.0 and sample.histogram == hist


def test_query_range_decodes_a_matrix() -> None:
    rec = Recorder({"/api/v1/query_range": MATRIX})
    with client(rec) as prom:
        result = prom.query_range("up", start=1795626237.0, end=1795626241.5, step=2)
    assert rec.form() == {
        "query": ["up"],
        "start": ["1795626237"],
        "end": ["1795626241.5"],
        "step": ["2"],
    }
    (series,) = result.series
    assert series.labels == {"__name__": "up", "instance": "127.0.0.1:19090", "job": "prom"}
    assert series.points == ((1795626239.0, 1.0), (1795626241.0, math.inf))
    assert result.samples == ()


def test_query_range_over_the_point_limit_is_refused_before_sending() -> None:
    rec = Recorder({})
    with client(rec) as prom, pytest.raises(QueryError) as info:
        prom.query_range("up", start=0, end=100_000, step=1)
    assert str(info.value) == (
        "prometheus at http://prom:9090: 100000 points per series exceeds Prometheus's limit of "
        "11,000; use a step of at least 10 s"
    )
    assert rec.requests == []
    # Exactly at the limit is allowed (Prometheus refuses only > 11000).
    rec.answers["/api/v1/query_range"] = MATRIX
    with client(rec) as prom:
        prom.query_range("up", start=0, end=MAX_POINTS, step=1)
    assert len(rec.requests) == 1


@pytest.mark.parametrize(
    ("start", "end", "step", "cause"),
    [
        (0, 10, 0, "step must be a positive number, not 0"),
        (0, 10, math.nan, "step must be a positive number, not nan"),
        (10, 0, 1, "end (0) is before start (10)"),
    ],
)
def test_query_range_bad_arguments(start: float, end: float, step: float, cause: str) -> None:
    with client(Recorder({})) as prom, pytest.raises(QueryError) as info:
        prom.query_range("up", start=start, end=end, step=step)
    assert info.value.cause == cause


# -- errors -------------------------------------------------------------------------------------


def test_bad_data_is_a_query_error_with_error_type() -> None:
    with (
        client(Recorder({"/api/v1/query": (400, BAD_DATA)})) as prom,
        pytest.raises(QueryError) as info,
    ):
        prom.query("foo(")
    assert str(info.value) == (
        "prometheus at http://prom:9090/api/v1/query: bad_data: "
        'invalid parameter "query": 1:5: parse error: unclosed left parenthesis'
    )
    assert info.value.exit_code == 4


def test_execution_is_a_query_error() -> None:
    with (
        client(Recorder({"/api/v1/query": (422, EXECUTION)})) as prom,
        pytest.raises(QueryError, match="execution: found duplicate series"),
    ):
        prom.query("a + on(job) a")


@pytest.mark.parametrize(
    ("status", "error_type", "error"),
    [
        (503, "timeout", "query timed out in expression evaluation"),
        (500, "internal", "unexpected error"),
        (500, "unavailable", "admin APIs disabled"),
        (499, "canceled", "context canceled"),
    ],
)
def test_server_side_error_types_are_status_errors(
    status: int, error_type: str, error: str
) -> None:
    body = {"status": "error", "errorType": error_type, "error": error}
    with (
        client(Recorder({"/api/v1/query": (status, body)})) as prom,
        pytest.raises(HTTPStatusError) as info,
    ):
        prom.query("up")
    assert info.value.status == status
    assert str(info.value) == (
        f"prometheus at http://prom:9090/api/v1/query: HTTP {status}: {error_type}: {error}"
    )
    assert info.value.exit_code == 3


def test_plain_text_503_is_a_one_line_status_error() -> None:
    # The readiness wrapper's answer while Prometheus starts (§1): not JSON.
    with (
        client(Recorder({"/api/v1/query": (503, "Service Unavailable")})) as prom,
        pytest.raises(HTTPStatusError) as info,
    ):
        prom.query("up")
    assert str(info.value) == (
        "prometheus at http://prom:9090/api/v1/query: HTTP 503: Service Unavailable"
    )


def test_proxy_html_502_is_a_status_error_with_excerpt() -> None:
    html = "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>nginx</body>\n</html>\n"
    with (
        client(Recorder({"/api/v1/query": (502, html)})) as prom,
        pytest.raises(HTTPStatusError) as info,
    ):
        prom.query("up")
    assert info.value.cause == (
        "HTTP 502: <html> <head><title>502 Bad Gateway</title></head> <body>nginx</body> </html>"
    )


def test_proxy_401_is_an_auth_error_without_the_token() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.payload.signature"
    rec = Recorder({"/api/v1/query": (401, {"message": "invalid token"})})
    with (
        client(rec, headers=(("Authorization", f"Bearer {token}"),)) as prom,
        pytest.raises(AuthError) as info,
    ):
        prom.query("up")
    assert rec.requests[0].headers["authorization"] == f"Bearer {token}"
    assert token not in str(info.value)
    assert str(info.value) == (
        'prometheus at http://prom:9090/api/v1/query: HTTP 401: {"message":"invalid token"} '
        "(credentials missing or refused; sent header Authorization from prometheus.headers)"
    )


def test_garbage_json_with_200_is_a_protocol_error() -> None:
    with (
        client(Recorder({"/api/v1/query": (200, "{not json")})) as prom,
        pytest.raises(ProtocolError) as info,
    ):
        prom.query("up")
    assert str(info.value) == (
        "prometheus at http://prom:9090/api/v1/query: invalid JSON "
        "(Expecting property name enclosed in double quotes at position 1): {not json"
    )


def test_wrong_shape_is_a_protocol_error() -> None:
    body = {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}}
    with (
        client(Recorder({"/api/v1/query": body})) as prom,
        pytest.raises(ProtocolError, match="malformed query result"),
    ):
        prom.query("up")
    body2 = {"status": "success", "data": {"resultType": "histogramish", "result": []}}
    with (
        client(Recorder({"/api/v1/query": body2})) as prom,
        pytest.raises(ProtocolError, match="unknown resultType 'histogramish'"),
    ):
        prom.query("up")


# -- exemplars, series, labels -----------------------------------------------------------------


def test_query_exemplars_decodes_string_values_and_float_timestamps() -> None:
    body = {
        "status": "success",
        "data": [
            {
                "seriesLabels": {
                    "__name__": "traces_spanmetrics_latency_bucket",
                    "service": "tracecheck-server",
                    "le": "0.256",
                },
                "exemplars": [
                    {
                        "labels": {"traceID": "f067aa0ba902b7a3ce8e1a2bcd7f91"},
                        "value": "0.25",
                        "timestamp": 1700000000.123,
                    }
                ],
            }
        ],
    }
    rec = Recorder({"/api/v1/query_exemplars": body})
    with client(rec) as prom:
        (series,) = prom.query_exemplars(
            'traces_spanmetrics_latency_bucket{service="tracecheck-server"}',
            start=1700000000,
            end=1700000060,
        )
    assert series.series_labels["le"] == "0.256"
    (ex,) = series.exemplars
    assert ex.labels == {"traceID": "f067aa0ba902b7a3ce8e1a2bcd7f91"}
    assert (ex.value, ex.timestamp) == (0.25, 1700000000.123)
    assert rec.form()["start"] == ["1700000000"]


@pytest.mark.parametrize("data", [[], None])
def test_query_exemplars_empty_and_null(data: Any) -> None:
    # Storage off answers [] (tsdb/exemplar.go); no selector answers null (§2).
    body = {"status": "success", "data": data}
    with client(Recorder({"/api/v1/query_exemplars": body})) as prom:
        assert prom.query_exemplars("up", start=0, end=1) == ()


def test_series_sends_every_match_and_decodes_label_sets() -> None:
    body = {
        "status": "success",
        "data": [{"__name__": "up", "instance": "127.0.0.1:19090", "job": "prom"}],
    }
    rec = Recorder({"/api/v1/series": body})
    with client(rec) as prom:
        series = prom.series(["up", '{job="prom"}'], start=10, end=20)
    assert series == ({"__name__": "up", "instance": "127.0.0.1:19090", "job": "prom"},)
    assert rec.form() == {"match[]": ["up", '{job="prom"}'], "start": ["10"], "end": ["20"]}


def test_series_without_match_is_refused() -> None:
    with client(Recorder({})) as prom, pytest.raises(QueryError, match="at least one match"):
        prom.series([])


def test_label_values_get_with_match_and_utf8_escaping() -> None:
    rec = Recorder(
        {
            "/api/v1/label/__name__/values": {
                "status": "success",
                "data": ["traces_spanmetrics_calls_total", "up"],
            },
            "/api/v1/label/U__service_2e_name/values": {"status": "success", "data": ["api"]},
        }
    )
    with client(rec) as prom:
        names = prom.label_values("__name__", match=['{__name__=~"traces_.*"}'], start=5, end=6)
        assert prom.label_values("service.name") == ("api",)
    assert names == ("traces_spanmetrics_calls_total", "up")
    first = rec.requests[0]
    assert first.method == "GET"
    assert dict(first.url.params.multi_items()) == {
        "start": "5",
        "end": "6",
        "match[]": '{__name__=~"traces_.*"}',
    }


def test_escape_label_name_follows_value_encoding_escaping() -> None:
    assert escape_label_name("service_name") == "service_name"
    assert escape_label_name("__name__") == "__name__"
    assert escape_label_name("http.status_code") == "U__http_2e_status__code"
    assert escape_label_name("1st") == "U___31_st"
    assert escape_label_name("ü") == "U___fc_"
    assert escape_label_name("k8s:pod.name") == "U__k8s:pod_2e_name"  # ":" is legacy, kept


# -- readiness, identity, flags ----------------------------------------------------------------


def test_ready_and_not_ready() -> None:
    rec = Recorder({"/-/ready": (200, "Prometheus Server is Ready.\n")})
    with client(rec) as prom:
        prom.ready()
        rec.answers["/-/ready"] = (503, "Service Unavailable")
        with pytest.raises(NotReady) as info:
            prom.ready()
        assert (
            str(info.value)
            == "prometheus at http://prom:9090/-/ready: HTTP 503: Service Unavailable"
        )
        rec.answers["/-/ready"] = httpx.Response(
            503, headers={"X-Prometheus-Stopping": "true"}, text="Service Unavailable"
        )
        with pytest.raises(NotReady) as info:
            prom.ready()
        assert info.value.cause == "stopping"


def test_buildinfo() -> None:
    with client(Recorder({"/api/v1/status/buildinfo": BUILDINFO})) as prom:
        info = prom.buildinfo()
    assert (info.version, info.branch, info.go_version) == ("3.8.0", "HEAD", "go1.25.4")
    assert info.revision.startswith("e44ed351")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # Recorded from Prometheus 3.8 with two --enable-feature flags: joined by ",".
        ({"enable-feature": "exemplar-storage,native-histograms"}, True),
        ({"enable-feature": "native-histograms"}, False),
        ({"enable-feature": ""}, False),
        ({"storage.tsdb.path": "data/"}, None),
    ],
)
def test_exemplar_storage_from_flags(answer: dict[str, str], expected: bool | None) -> None:
    body = {"status": "success", "data": answer}
    with client(Recorder({"/api/v1/status/flags": body})) as prom:
        assert prom.exemplar_storage_enabled() is expected


def test_exemplar_storage_unknown_without_flags_endpoint() -> None:
    # Mimir and friends have no /api/v1/status/flags.
    with client(Recorder({})) as prom:
        assert prom.exemplar_storage_enabled() is None


def test_flags_auth_failure_is_not_swallowed() -> None:
    with (
        client(Recorder({"/api/v1/status/flags": (403, "forbidden")})) as prom,
        pytest.raises(AuthError),
    ):
        prom.exemplar_storage_enabled()
