"""Unit tests of the local pipeline supervisor (tracecheck.stack.local).

Real sockets, real processes (fake components are small Python programs), real PKI checked with
``cryptography`` and real TLS handshakes; nothing here touches the ports of the real pipeline.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from servers import free_port

from tracecheck.errors import ConfigError, StackError, UsageError
from tracecheck.stack.local import (
    COMPONENTS,
    LocalStack,
    StartFailure,
    apply_substitutions,
    default_cache_dir,
    default_state_dir,
    find_repo_root,
    load_substitutions,
    render_local_config,
    shell_exports,
)
from tracecheck.stack.local import cluster as clustermod
from tracecheck.stack.local import pki as pkimod
from tracecheck.stack.local.build import (
    BUILD_FILES,
    BUILDS,
    BuildWatch,
    adopt_build,
    build_component,
    cached_build,
    recipe,
)
from tracecheck.stack.local.pipeline import _ADDRESSES, _CONFIGS, _PORTS
from tracecheck.stack.local.substitutions import Substitution
from tracecheck.stack.local.supervisor import (
    HttpReady,
    ProcessSpec,
    Record,
    Supervisor,
    port_holder,
    port_in_use,
)

REPO = find_repo_root(Path(__file__).parent)
BINARIES = (
    "etcd",
    "prometheus",
    "otelcol",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
)
SHIPPED = [shipped for shipped, _ in _CONFIGS.values()]


def alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (reaping it if it is our child)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


# ------------------------------------------------------------------------------ paths


def test_state_and_cache_dirs_follow_env_then_xdg_then_home() -> None:
    assert default_state_dir({"TRACECHECK_STATE_DIR": "/s", "XDG_STATE_HOME": "/x"}) == Path("/s")
    assert default_state_dir({"XDG_STATE_HOME": "/x", "HOME": "/h"}) == Path("/x/tracecheck/local")
    assert default_state_dir({"HOME": "/h"}) == Path("/h/.local/state/tracecheck/local")
    assert default_cache_dir({"TRACECHECK_CACHE_DIR": "/c", "XDG_CACHE_HOME": "/x"}) == Path("/c")
    assert default_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/tracecheck")
    assert default_cache_dir({"HOME": "/h"}) == Path("/h/.cache/tracecheck")


def test_find_repo_root_from_a_subdirectory_and_outside(tmp_path: Path) -> None:
    assert find_repo_root(REPO / "stack" / "collector") == REPO
    with pytest.raises(ConfigError, match="no tracecheck checkout"):
        find_repo_root(tmp_path)


# ------------------------------------------------------------------------------ substitutions


@pytest.mark.parametrize("name", SHIPPED)
def test_rendered_configs_are_yaml_and_local_only(name: str) -> None:
    text = render_local_config(name, repo=REPO, state_dir="/st")
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    data = yaml.safe_dump(doc)  # values only: comments may still describe the cluster
    for k8s_only in ("svc.cluster.local", "0.0.0.0", "/var/", "kubernetes.default.svc"):
        assert k8s_only not in data, f"{name} still contains {k8s_only!r}"
    assert "${" not in text


def test_each_component_address_occurs_in_its_rendered_config() -> None:
    for comp, (shipped, _) in _CONFIGS.items():
        if comp == "kube-apiserver":
            continue  # its config is the tracing config; its address is a flag
        text = render_local_config(shipped, repo=REPO)
        for address in _ADDRESSES[comp].values():
            hostport = address.split("://")[-1].split("/")[0]
            port = hostport.rsplit(":", 1)[1]
            # host:port, or a port key (Tempo's server.http_listen_port, the metrics reader).
            assert hostport in text or re.search(rf"(_port|port): {port}\b", text), (
                f"{comp}: {hostport} not in rendered {shipped}"
            )


def test_rendered_values_point_at_the_local_ports() -> None:
    col = yaml.safe_load(render_local_config("stack/collector/config.yaml", repo=REPO))
    assert col["exporters"]["otlp"]["endpoint"] == "127.0.0.1:4417"
    assert col["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == "127.0.0.1:4317"
    sm = yaml.safe_load(render_local_config("stack/collector/config-spanmetrics.yaml", repo=REPO))
    assert sm["extensions"]["health_check"]["endpoint"] == "127.0.0.1:13134"
    reader = sm["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"]
    assert reader["prometheus"] == {"host": "127.0.0.1", "port": 8889}
    assert sm["exporters"]["prometheusremotewrite"]["endpoint"] == (
        "http://127.0.0.1:9090/api/v1/write"
    )
    tempo = yaml.safe_load(
        render_local_config("stack/tempo/tempo.yaml", repo=REPO, state_dir="/st")
    )
    assert tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] == (
        "127.0.0.1:4417"
    )
    assert tempo["storage"]["trace"]["wal"]["path"] == "/st/tempo/wal"
    prom = yaml.safe_load(
        render_local_config("stack/prometheus/prometheus.yml", repo=REPO, state_dir="/st")
    )
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert jobs["otel-collector"]["static_configs"][0]["targets"] == [
        "127.0.0.1:8888",
        "127.0.0.1:8889",
    ]
    assert jobs["apiserver"]["authorization"]["credentials_file"] == "/st/pki/monitoring.token"
    assert jobs["apiserver"]["tls_config"]["ca_file"] == "/st/pki/ca.crt"
    assert jobs["apiserver"]["static_configs"][0]["targets"] == ["127.0.0.1:6443"]


def test_sampling_rate_is_substituted_and_validated() -> None:
    name = "stack/apiserver/tracing-config.yaml"
    doc = yaml.safe_load(render_local_config(name, repo=REPO))
    assert doc == {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "TracingConfiguration",
        "endpoint": "127.0.0.1:4317",
        "samplingRatePerMillion": 250000,
    }
    assert (
        yaml.safe_load(render_local_config(name, repo=REPO, sampling_rate=0))[
            "samplingRatePerMillion"
        ]
        == 0
    )
    with pytest.raises(ConfigError, match=r"0\.\.1000000"):
        render_local_config(name, repo=REPO, sampling_rate=1_000_001)


def test_drift_in_a_shipped_file_is_caught() -> None:
    name = "stack/collector/config.yaml"
    shipped = (REPO / name).read_text()
    drifted = shipped.replace("tempo.monitoring.svc.cluster.local:4317", "tempo.other:4317")
    with pytest.raises(ConfigError) as info:
        render_local_config(name, repo=REPO, text=drifted)
    message = str(info.value)
    assert "tempo.monitoring.svc.cluster.local:4317" in message
    assert "no longer occurs" in message
    assert name in message
    assert "\n" not in message


def test_render_text_equals_render_file_for_identical_content() -> None:
    name = "stack/tempo/tempo.yaml"
    assert render_local_config(name, repo=REPO, text=(REPO / name).read_text()) == (
        render_local_config(name, repo=REPO)
    )


def test_unknown_placeholder_and_unlisted_file_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"unknown placeholder \$\{NOPE\}"):
        apply_substitutions("a b", [Substitution("a", "${NOPE}")], {}, source="f")
    with pytest.raises(ConfigError, match="no substitutions listed"):
        render_local_config("stack/nope.yaml", repo=REPO)


def test_substitutions_apply_in_order_to_every_occurrence() -> None:
    subs = [Substitution("x:1", "y:${P}"), Substitution("y:9", "z")]
    assert apply_substitutions("x:1 x:1", subs, {"P": "9"}) == "z z"


def test_substitutions_list_exactly_the_shipped_configs_the_pipeline_runs() -> None:
    table = load_substitutions(REPO)
    assert sorted(table) == sorted(SHIPPED)
    assert all(table[name] for name in table)


# ------------------------------------------------------------------------------ PKI


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_pki_certificates_chain_names_and_usages(tmp_path: Path) -> None:
    pki, fresh = pkimod.ensure_pki(tmp_path / "pki")
    assert fresh
    ca = _cert(pki.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    serving = _cert(pki.serving_cert)
    admin = _cert(pki.admin_cert)
    viewer = _cert(pki.viewer_cert)
    for leaf in (serving, admin, viewer):
        leaf.verify_directly_issued_by(ca)
        assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) >= {
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    }
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1",
        pkimod.SERVICE_IP,
    }

    def eku(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    assert eku(serving) == {ExtendedKeyUsageOID.SERVER_AUTH}
    assert eku(admin) == eku(viewer) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    org = NameOID.ORGANIZATION_NAME
    assert [a.value for a in admin.subject.get_attributes_for_oid(org)] == ["system:masters"]
    assert admin.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == pkimod.ADMIN_USER
    assert viewer.subject.get_attributes_for_oid(org) == []
    assert serving.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=300)


def test_pki_private_files_are_0600_and_reused(tmp_path: Path) -> None:
    pki, _ = pkimod.ensure_pki(tmp_path / "pki")
    for path in (pki.ca_key, pki.serving_key, pki.admin_key, pki.viewer_key, pki.sa_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in (pki.token_file, pki.monitoring_token):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    token = pki.monitoring_token.read_text()
    assert len(token) >= 40
    assert pki.token_file.read_text() == (
        f'{token},{pkimod.MONITORING_USER},{pkimod.MONITORING_USER},"system:monitoring"\n'
    )
    before = {p: p.read_bytes() for p in pki.files()}
    again, fresh = pkimod.ensure_pki(tmp_path / "pki")
    assert not fresh
    assert {p: p.read_bytes() for p in again.files()} == before


def test_pki_regenerates_when_a_file_is_missing_or_expiring(tmp_path: Path) -> None:
    pki, _ = pkimod.ensure_pki(tmp_path / "pki")
    ca = pki.ca_cert.read_bytes()
    pki.viewer_key.unlink()
    _, fresh = pkimod.ensure_pki(pki.dir)
    assert fresh and pki.ca_cert.read_bytes() != ca
    ca = pki.ca_cert.read_bytes()
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=360)
    _, fresh = pkimod.ensure_pki(pki.dir, now=later)
    assert fresh and pki.ca_cert.read_bytes() != ca


def test_kubeconfig_contexts_and_embedded_credentials(tmp_path: Path) -> None:
    stack = LocalStack(repo=REPO, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    pki = stack.prepare_credentials()
    assert stat.S_IMODE(stack.kubeconfig.stat().st_mode) == 0o600
    doc = yaml.safe_load(stack.kubeconfig.read_text())
    assert doc["current-context"] == "privileged"
    contexts = {c["name"]: c["context"] for c in doc["contexts"]}
    assert set(contexts) == {"privileged", "viewer", "monitoring"}
    users = {u["name"]: u["user"] for u in doc["users"]}
    assert {c["user"] for c in contexts.values()} == set(users)
    (cluster,) = doc["clusters"]
    assert cluster["cluster"]["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == (
        pki.ca_cert.read_bytes()
    )
    assert base64.b64decode(users["privileged"]["client-certificate-data"]) == (
        pki.admin_cert.read_bytes()
    )
    assert base64.b64decode(users["viewer"]["client-key-data"]) == pki.viewer_key.read_bytes()
    assert users["monitoring"] == {"token": pki.monitoring_token.read_text()}
    assert stack.env() == {
        "KUBECONFIG": str(tmp_path / "state" / "kubeconfig"),
        "TRACECHECK_STATE_DIR": str(tmp_path / "state"),
    }


def test_generated_certs_complete_a_mutual_tls_handshake(tmp_path: Path) -> None:
    """A real TLS server with the serving cert requiring a client cert from the same CA."""
    pki, _ = pkimod.ensure_pki(tmp_path / "pki")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_cert))
    server_ctx.load_cert_chain(str(pki.serving_cert), str(pki.serving_key))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[object] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            seen.append(tls.getpeercert())
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    client_ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    # Hostname verification against the serving cert's SANs, as kubectl does.
    with (
        socket.create_connection(("127.0.0.1", port)) as raw,
        client_ctx.wrap_socket(raw, server_hostname="kubernetes.default.svc") as tls,
    ):
        assert tls.recv(2) == b"ok"
    thread.join(5)
    listener.close()
    peer = seen[0]
    assert isinstance(peer, dict)
    subject = dict(x[0] for x in peer["subject"])
    assert subject == {"organizationName": "system:masters", "commonName": pkimod.ADMIN_USER}


# ------------------------------------------------------------------------------ ports


def test_port_in_use_names_the_holder() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        assert port_in_use(port)
        holder = port_holder(port)
        assert holder is not None
        assert holder[0] == os.getpid()
        assert holder[1] == Path(f"/proc/{os.getpid()}/comm").read_text().strip()
        sup = Supervisor(Path("/nonexistent-state"), env={})
        spec = ProcessSpec("fake", ("true",), HttpReady(f"http://127.0.0.1:{port}/"), ports=(port,))
        with pytest.raises(StartFailure) as info:
            sup.check_ports(spec)
        assert str(info.value) == (
            f"fake at 127.0.0.1:{port}: port {port} already in use by pid {os.getpid()} "
            f"({holder[1]})"
        )
    finally:
        listener.close()
    assert not port_in_use(port)
    assert port_holder(port) is None


# ------------------------------------------------------------------------------ supervision

SERVER = "import http.server as h, sys; h.test(h.SimpleHTTPRequestHandler, port=int(sys.argv[1]), bind='127.0.0.1')"  # noqa: E501


def server_spec(name: str, port: int, cwd: Path, fingerprint: str = "a") -> ProcessSpec:
    return ProcessSpec(
        name=name,
        argv=(sys.executable, "-c", SERVER, str(port)),
        ready=HttpReady(f"http://127.0.0.1:{port}/"),
        ports=(port,),
        addresses={"http": f"http://127.0.0.1:{port}"},
        cwd=str(cwd),
        deadline=20.0,
        fingerprint=fingerprint,
    )


def dying_spec(cwd: Path) -> ProcessSpec:
    script = "import sys\nfor i in range(30): print('line', i)\nprint('fatal: boom')\nsys.exit(3)"
    port = free_port()
    return ProcessSpec(
        name="dies",
        argv=(sys.executable, "-c", script),
        ready=HttpReady(f"http://127.0.0.1:{port}/"),
        ports=(port,),
        addresses={"http": f"http://127.0.0.1:{port}"},
        cwd=str(cwd),
        deadline=20.0,
    )


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    lines: list[str] = []
    sup = Supervisor(tmp_path / "state", progress=lines.append)
    sup.lines = lines  # type: ignore[attr-defined]
    yield sup
    sup.stop_all(sup.recorded_names())


def test_dies_at_start_stops_what_was_started_and_shows_the_log(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    ok = server_spec("ok", free_port(), tmp_path)
    with pytest.raises(StartFailure) as info:
        supervisor.ensure_running([ok, dying_spec(tmp_path)])
    err = info.value
    assert err.system == "dies"
    assert "exited with status 3 during start" in str(err)
    assert str(supervisor.log_path("dies")) in str(err)
    assert err.log_tail[-1] == "fatal: boom"
    assert len(err.log_tail) == 20
    lines = supervisor.lines  # type: ignore[attr-defined]
    assert "fatal: boom" in lines
    assert "ok: stopping (started by this run)" in lines
    assert supervisor.recorded_names() == []
    assert not port_in_use(int(ok.addresses["http"].rsplit(":", 1)[1]))


def test_not_ready_in_time_is_killed(supervisor: Supervisor, tmp_path: Path) -> None:
    port = free_port()
    spec = ProcessSpec(
        name="mute",
        argv=(sys.executable, "-c", "import time; print('waiting', flush=True); time.sleep(600)"),
        ready=HttpReady(f"http://127.0.0.1:{port}/"),
        ports=(port,),
        deadline=1.0,
    )
    with pytest.raises(StartFailure) as info:
        supervisor.ensure_running([spec])
    assert "not ready within 1s" in str(info.value)
    assert "ConnectError" in str(info.value)
    assert info.value.log_tail[-1] == "waiting"
    lines = supervisor.lines  # type: ignore[attr-defined]
    started = [line for line in lines if line.startswith("mute: started (pid ")]
    pid = int(started[0].split("pid ")[1].split(")")[0])
    assert not alive(pid)
    assert supervisor.recorded_names() == []


def test_missing_executable_is_a_start_failure(supervisor: Supervisor, tmp_path: Path) -> None:
    spec = ProcessSpec("ghost", (str(tmp_path / "no-such-binary"),), HttpReady("http://x/"))
    with pytest.raises(StartFailure, match=r"ghost at .*no-such-binary: cannot execute"):
        supervisor.ensure_running([spec])


def test_second_run_leaves_ready_alone_and_a_changed_fingerprint_restarts(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    spec = server_spec("web", free_port(), tmp_path)
    assert supervisor.ensure_running([spec]) == ["web"]
    pid = supervisor.running_pid("web")
    assert pid is not None
    assert supervisor.ensure_running([spec]) == []
    assert supervisor.running_pid("web") == pid
    assert f"web: ready (pid {pid}), left alone" in supervisor.lines  # type: ignore[attr-defined]
    changed = server_spec("web", spec.ports[0], tmp_path, fingerprint="b")
    assert supervisor.ensure_running([changed]) == ["web"]
    new_pid = supervisor.running_pid("web")
    assert new_pid is not None and new_pid != pid
    assert not alive(pid)
    record = supervisor.record("web")
    assert record is not None and record.fingerprint == "b"


def test_started_process_outlives_its_session_and_has_its_own_group(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    spec = server_spec("web", free_port(), tmp_path)
    supervisor.ensure_running([spec])
    pid = supervisor.running_pid("web")
    assert pid is not None
    assert os.getsid(pid) == pid != os.getsid(0)
    assert os.getpgid(pid) == pid
    log = supervisor.log_path("web").read_text()
    assert log.startswith("# tracecheck: starting web at ")


def test_lock_held_elsewhere_is_announced_then_awaited(tmp_path: Path) -> None:
    import fcntl

    lines: list[str] = []
    sup = Supervisor(tmp_path / "state", progress=lines.append)
    (tmp_path / "state").mkdir()
    entered = threading.Event()

    def take() -> None:
        with sup.lock():
            entered.set()

    with (tmp_path / "state" / "lock").open("a") as other:
        fcntl.flock(other, fcntl.LOCK_EX)  # another command's lock (flock is per open file)
        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        for _ in range(1000):  # the waiting thread announces itself before it blocks
            if lines:
                break
            time.sleep(0.01)
        assert lines == [
            f"waiting for another tracecheck command on {tmp_path / 'state'} to finish"
        ]
        assert not entered.is_set()
        fcntl.flock(other, fcntl.LOCK_UN)
    thread.join(10)
    assert entered.is_set()


def test_stop_never_signals_a_reused_pid(supervisor: Supervisor) -> None:
    """A record whose pid now belongs to another program (here: a sleep we own) is not killed."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        fake = Record(name="old", pid=other.pid, argv=("etcd", "--name=x"), starttime=0)
        supervisor._write_record(fake)
        assert supervisor.running_pid("old") is None
        assert supervisor.stop("old") is False
        assert other.poll() is None  # still running
        assert supervisor.record("old") is None
        # Same argv but a different start time: also not ours.
        wrong = Record(name="old", pid=other.pid, argv=("sleep", "60"), starttime=1)
        supervisor._write_record(wrong)
        assert supervisor.running_pid("old") is None
        assert supervisor.stop("old") is False
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_sigterm_ignored_gets_sigkill(tmp_path: Path) -> None:
    lines: list[str] = []
    sup = Supervisor(tmp_path / "state", progress=lines.append, stop_timeout=0.5)
    port = free_port()
    script = (
        "import signal, socket, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "import http.server as h\n"
        f"h.test(h.SimpleHTTPRequestHandler, port={port}, bind='127.0.0.1')\n"
    )
    spec = ProcessSpec(
        "stubborn",
        (sys.executable, "-c", script),
        HttpReady(f"http://127.0.0.1:{port}/"),
        ports=(port,),
        cwd=str(tmp_path),
        deadline=20.0,
    )
    sup.ensure_running([spec])
    pid = sup.running_pid("stubborn")
    assert pid is not None
    assert sup.stop_all(["stubborn"]) == ["stubborn"]
    assert "stubborn: no exit 0.5s after SIGTERM, SIGKILL" in lines
    assert not alive(pid)


# ------------------------------------------------------------------------------ LocalStack


class FakeStack(LocalStack):
    """LocalStack with fake components in place of the real ones (same up/down code path)."""

    fakes: list[ProcessSpec]

    def _prepare(self, names):  # type: ignore[no-untyped-def]
        return list(self.fakes)

    def _bootstrap(self, *, cluster: bool) -> None:
        pass


def test_status_and_down_with_nothing_running(tmp_path: Path) -> None:
    stack = LocalStack(repo=REPO, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    status = stack.status()
    assert [c.name for c in status.components] == list(COMPONENTS)
    assert not status.ready
    assert all(c.pid is None and not c.ready for c in status.components)
    assert {c.detail for c in status.components} == {"not running"}
    doc = status.to_json()
    assert json.loads(json.dumps(doc)) == doc
    assert doc["ready"] is False
    assert doc["components"][0] == {
        "name": "etcd",
        "version": "v3.6.14",
        "addresses": {"client": "http://127.0.0.1:2379", "peer": "http://127.0.0.1:2380"},
        "pid": None,
        "ready": False,
        "log": str(tmp_path / "state" / "logs" / "etcd.log"),
        "detail": "not running",
    }
    text = status.render()
    assert text.splitlines()[0].split() == ["COMPONENT", "VERSION", "PID", "READY", "ADDRESSES"]
    assert "kube-apiserver" in text and "https=https://127.0.0.1:6443" in text
    assert stack.down() == []


def test_up_failure_via_localstack_leaves_nothing_running(tmp_path: Path) -> None:
    lines: list[str] = []
    stack = FakeStack(
        repo=REPO, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", progress=lines.append
    )
    ok = server_spec("ok", free_port(), tmp_path)
    stack.fakes = [ok, dying_spec(tmp_path)]
    with pytest.raises(StackError, match=r"dies at .*exited with status 3"):
        stack.up()
    assert stack.supervisor.recorded_names() == []
    assert stack.down() == []
    assert "fatal: boom" in lines


def test_down_stops_in_reverse_order_and_twice_is_harmless(tmp_path: Path) -> None:
    lines: list[str] = []
    stack = FakeStack(
        repo=REPO, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", progress=lines.append
    )
    stack.fakes = [server_spec(n, free_port(), tmp_path) for n in ("etcd", "prometheus")]
    stack.up()
    stack.up()
    etcd_pid = stack.supervisor.running_pid("etcd")
    assert lines.count(f"etcd: ready (pid {etcd_pid}), left alone") == 1
    pids = [stack.supervisor.running_pid(n) for n in ("etcd", "prometheus")]
    assert all(pids)
    assert stack.down() == ["prometheus", "etcd"]
    assert not any(alive(p) for p in pids if p)
    assert stack.down() == []


def test_unknown_names_are_usage_errors(tmp_path: Path) -> None:
    stack = LocalStack(repo=REPO, state_dir=tmp_path, cache_dir=tmp_path)
    with pytest.raises(UsageError, match="nosuch"):
        stack.stop("nosuch")
    with pytest.raises(UsageError, match="not buildable"):
        stack.build(["tempo"])
    with pytest.raises(UsageError, match="sampling-rate"):
        LocalStack(repo=REPO, state_dir=tmp_path, cache_dir=tmp_path, sampling_rate=-1)
    with pytest.raises(UsageError, match="prometheus"):
        LocalStack(repo=REPO, state_dir=tmp_path, cache_dir=tmp_path, prometheus="docker")


def test_missing_debian_prometheus_names_apt_get(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracecheck.stack.local import pipeline as stackmod

    monkeypatch.setattr(stackmod, "DEBIAN_PROMETHEUS", tmp_path / "usr-bin-prometheus")
    stack = LocalStack(repo=REPO, state_dir=tmp_path, cache_dir=tmp_path, prometheus="debian")
    with pytest.raises(StackError, match="apt-get install prometheus"):
        stack._check_prerequisites(["prometheus"])


def test_spec_fingerprint_follows_the_sampling_rate_only_for_the_apiserver(tmp_path: Path) -> None:
    bins = {b: tmp_path / b for b in BINARIES}

    def specs(rate: int) -> dict[str, str]:
        stack = LocalStack(
            repo=REPO, state_dir=tmp_path / "s", cache_dir=tmp_path / "c", sampling_rate=rate
        )
        stack.prepare_credentials()
        configs = stack.render_configs()
        return {n: stack.spec(n, bins, configs).fingerprint for n in COMPONENTS}

    a, b = specs(250_000), specs(1_000)
    assert [n for n in COMPONENTS if a[n] != b[n]] == ["kube-apiserver"]
    assert specs(250_000) == a


def test_spec_fingerprint_follows_the_standin_source_only_for_tempo(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(REPO / "stack", repo / "stack")
    bins = {b: tmp_path / b for b in BINARIES}
    stack = LocalStack(repo=repo, state_dir=tmp_path / "s", cache_dir=tmp_path / "c")
    stack.prepare_credentials()
    configs = stack.render_configs()

    def fingerprints() -> dict[str, str]:
        return {n: stack.spec(n, bins, configs).fingerprint for n in COMPONENTS}

    before = fingerprints()
    source = repo / "stack/local/tempo_standin/store.py"
    source.write_text(source.read_text() + "\n# changed\n")
    after = fingerprints()
    assert [n for n in COMPONENTS if before[n] != after[n]] == ["tempo"]
    # A module of a subpackage (the TraceQL engine) counts too.
    source = repo / "stack/local/tempo_standin/traceql/eval.py"
    source.write_text(source.read_text() + "\n# changed\n")
    assert fingerprints()["tempo"] != after["tempo"]


def test_component_ports_match_addresses() -> None:
    for comp, ports in _PORTS.items():
        in_addresses = {int(a.rsplit(":", 1)[1].split("/")[0]) for a in _ADDRESSES[comp].values()}
        assert in_addresses == set(ports), comp


def test_shell_exports_quote_values() -> None:
    assert shell_exports({"KUBECONFIG": "/a b/k", "X": "plain"}) == (
        "export KUBECONFIG='/a b/k'\nexport X=plain"
    )


# ------------------------------------------------------------------------------ build cache


def fake_repo(tmp_path: Path, script: str) -> Path:
    """A copy of the build recipe files with a fake build.sh (no Go needed)."""
    repo = tmp_path / "repo"
    (repo / "stack" / "local" / "build" / "etcd").mkdir(parents=True)
    for name in ("go.mod", "go.sum"):
        shutil.copy(REPO / "stack/local/build/etcd" / name, repo / "stack/local/build/etcd" / name)
    shutil.copy(REPO / "stack/local/substitutions.yaml", repo / "stack/local/substitutions.yaml")
    build = repo / "stack" / "local" / "build" / "build.sh"
    build.write_text(script)
    build.chmod(0o755)
    return repo


FAKE_BUILD = """#!/usr/bin/env bash
set -eu
echo "building $1" ; echo run >> "$(dirname "$0")/runs"
mkdir -p "$2" ; printf '#!/bin/sh\\necho etcd Version: 3.6.14\\n' > "$2/etcd" ; chmod +x "$2/etcd"
"""


@pytest.fixture
def go_env(tmp_path: Path) -> dict[str, str]:
    """PATH with a stand-in ``go`` (build_component requires one on PATH)."""
    bindir = tmp_path / "gobin"
    bindir.mkdir()
    go = bindir / "go"
    go.write_text("#!/bin/sh\necho go version go0.0 fake\n")
    go.chmod(0o755)
    return {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path)}


def test_build_cache_is_keyed_by_recipe(tmp_path: Path, go_env: dict[str, str]) -> None:
    repo = fake_repo(tmp_path, FAKE_BUILD)
    cache = tmp_path / "cache"
    lines: list[str] = []
    first = build_component(repo, cache, "etcd", env=go_env, progress=lines.append)
    assert not first.cached
    directory = Path(first.directory)
    rec = recipe(repo, "etcd")
    assert directory == cache / "bin" / f"etcd-v3.6.14-{rec.hash12}"
    assert len(rec.hash12) == 12
    info = json.loads((directory / "build.json").read_text())
    assert info["version"] == "v3.6.14" and info["built_by"] == "build.sh"
    assert info["seconds"] >= 0 and info["go"] == "go version go0.0 fake"
    assert lines[-1] == f"etcd v3.6.14: built in {first.seconds:.1f}s"
    assert not list((cache / "bin").glob(".tmp-*"))

    second = build_component(repo, cache, "etcd", env=go_env, progress=lines.append)
    assert second.cached and second.directory == first.directory
    assert lines[-1] == f"etcd v3.6.14: cached ({directory})"
    assert (repo / "stack/local/build/runs").read_text() == "run\n"

    # A recipe change (go.sum) is a new key: built again into another directory.
    gosum = repo / "stack/local/build/etcd/go.sum"
    gosum.write_text(gosum.read_text() + "\n")
    third = build_component(repo, cache, "etcd", env=go_env)
    assert not third.cached and third.directory != first.directory
    assert (repo / "stack/local/build/runs").read_text() == "run\nrun\n"
    assert cached_build(repo, cache, "etcd") is not None


def test_adopt_build_checks_age_and_version_then_fills_the_cache(tmp_path: Path) -> None:
    repo = fake_repo(tmp_path, FAKE_BUILD)
    cache = tmp_path / "cache"
    source = tmp_path / "hand"
    source.mkdir()
    etcd = source / "etcd"
    etcd.write_text("#!/bin/sh\necho etcd Version: 3.6.13\n")
    etcd.chmod(0o755)
    with pytest.raises(StackError, match=r"--version does not report v3\.6\.14"):
        adopt_build(repo, cache, "etcd", source)
    etcd.write_text("#!/bin/sh\necho etcd Version: 3.6.14\n")
    old = (repo / "stack/local/build/etcd/go.sum").stat().st_mtime - 60
    os.utime(etcd, (old, old))
    with pytest.raises(StackError, match="older than the recipe"):
        adopt_build(repo, cache, "etcd", source)
    os.utime(etcd)
    record = adopt_build(repo, cache, "etcd", source, seconds=12.5)
    assert record.directory == str(recipe(repo, "etcd").directory(cache))
    assert (record.built_by, record.seconds, record.cached) == (f"hand ({source})", 12.5, False)
    info = json.loads((Path(record.directory) / "build.json").read_text())
    assert (info["version"], info["built_by"]) == ("v3.6.14", f"hand ({source})")
    assert (Path(record.directory) / "etcd").read_text() == etcd.read_text()
    assert not list((cache / "bin").glob(".tmp-*"))
    again = cached_build(repo, cache, "etcd")
    assert again is not None and again.cached and again.built_by == f"hand ({source})"


def test_build_failure_shows_the_log_and_leaves_no_directory(
    tmp_path: Path, go_env: dict[str, str]
) -> None:
    repo = fake_repo(tmp_path, "#!/bin/sh\necho 'go: module lookup disabled'\nexit 7\n")
    cache = tmp_path / "cache"
    with pytest.raises(StartFailure) as info:
        build_component(repo, cache, "etcd", env=go_env)
    assert "build.sh exited with status 7" in str(info.value)
    assert info.value.log_tail[-1] == "go: module lookup disabled"
    assert [p.name for p in (cache / "bin").iterdir()] == []


def test_build_without_go_names_the_prerequisite(tmp_path: Path) -> None:
    repo = fake_repo(tmp_path, FAKE_BUILD)
    with pytest.raises(StackError, match="go command is not on PATH"):
        build_component(repo, tmp_path / "cache", "etcd", env={"PATH": str(tmp_path)})


def test_real_recipes_have_versions() -> None:
    versions = {c: recipe(REPO, c).version for c in BUILDS}
    assert versions == {
        "etcd": "v3.6.14",
        "prometheus": "v3.8.0",
        "promtool": "v3.8.0",
        "otelcol": "v0.144.0",
        "kube-apiserver": "v1.34.4",
        "kwok": "v0.8.0",
    }
    # promtool shares Prometheus's recipe files (same wrapper module, same plugin list).
    assert recipe(REPO, "promtool").files == recipe(REPO, "prometheus").files
    assert "stack/local/build/prometheus/plugins.yml" in recipe(REPO, "prometheus").files
    assert recipe(REPO, "kube-apiserver").binaries == (
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubectl",
    )


@pytest.mark.slow
def test_build_etcd_from_scratch_into_an_empty_cache(tmp_path: Path) -> None:
    """The real build path (build.sh + go) for the cheapest component, into a fresh cache."""
    lines: list[str] = []
    stack = LocalStack(
        repo=REPO, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache", progress=lines.append
    )
    t0 = time.monotonic()
    (record,) = stack.build(["etcd"])
    took = time.monotonic() - t0
    print(f"etcd build from scratch (warm Go module/build caches if any): {took:.1f}s")
    assert not record.cached
    etcd = stack.binary("etcd")
    assert etcd == Path(record.directory) / "etcd"
    out = subprocess.run([str(etcd), "--version"], capture_output=True, text=True, check=True)
    assert "etcd Version: 3.6.14" in out.stdout
    (again,) = stack.build(["etcd"])
    assert again.cached and again.directory == record.directory


def test_missing_standin_packages_name_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tracecheck.stack.local import pipeline as stackmod

    monkeypatch.setattr(stackmod, "_STANDIN_MODULES", ("yaml", "no_such_module_xyz"))
    stack = LocalStack(repo=REPO, state_dir=tmp_path, cache_dir=tmp_path)
    with pytest.raises(StackError) as info:
        stack._check_prerequisites(["tempo"])
    assert str(info.value) == (
        f"tempo at {sys.executable}: Python packages missing for the stand-in: "
        "no_such_module_xyz; pip install 'tracecheck[local]'"
    )


def test_all_ports_are_checked_before_anything_starts(
    supervisor: Supervisor, tmp_path: Path
) -> None:
    first = server_spec("first", free_port(), tmp_path)
    listener = socket.create_server(("127.0.0.1", 0))
    taken = listener.getsockname()[1]
    try:
        with pytest.raises(StartFailure, match=f"port {taken} already in use"):
            supervisor.ensure_running([first, server_spec("second", taken, tmp_path)])
    finally:
        listener.close()
    assert "first: started" not in " ".join(supervisor.lines)  # type: ignore[attr-defined]
    assert supervisor.recorded_names() == []


def test_readme_documents_every_substitution() -> None:
    """stack/local/README.md's table lists exactly the substitutions the pipeline applies."""
    readme = (REPO / "stack/local/README.md").read_text()
    current = ""
    documented: set[tuple[str, str, str]] = set()
    for line in readme.splitlines():
        if not (line.startswith("| ") and line.count("|") == 4):
            continue
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        current = cells[0] or current
        documented.add((current, cells[1], cells[2]))
    applied = {
        (name, sub.old, sub.new) for name, subs in load_substitutions(REPO).items() for sub in subs
    }
    assert applied <= documented
    assert {d for d in documented if d[0].startswith("stack/")} == applied


def test_status_reports_a_stale_record_and_down_clears_it(tmp_path: Path) -> None:
    stack = LocalStack(repo=REPO, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    done = subprocess.Popen(["true"])
    done.wait()
    stack.supervisor._write_record(
        Record(name="etcd", pid=done.pid, argv=("true",), starttime=12345)
    )
    etcd = stack.status().components[0]
    assert (etcd.name, etcd.pid, etcd.ready) == ("etcd", None, False)
    assert etcd.detail == f"not running (pid {done.pid} gone)"
    assert f"  etcd: not running (pid {done.pid} gone)" in stack.status().render().splitlines()
    assert stack.down() == []
    assert stack.supervisor.record("etcd") is None


# ------------------------------------------------------------------------------ the cluster


def test_component_certificates_name_their_least_privileged_identities(tmp_path: Path) -> None:
    pki, _ = pkimod.ensure_pki(tmp_path / "pki")
    ca = _cert(pki.ca_cert)
    assert pkimod.COMPONENT_USERS == {
        "kube-controller-manager": "system:kube-controller-manager",
        "kube-scheduler": "system:kube-scheduler",
        "kwok": "kwok-controller",
    }
    for component, user in pkimod.COMPONENT_USERS.items():
        client = _cert(pki.client_cert(component))
        client.verify_directly_issued_by(ca)
        assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == user
        assert client.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) == []  # no groups
        usages = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(usages) == {ExtendedKeyUsageOID.CLIENT_AUTH}
        serving = _cert(pki.component_serving_cert(component))
        serving.verify_directly_issued_by(ca)
        sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
        assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        for key in (pki.client_key(component), pki.component_serving_key(component)):
            assert stat.S_IMODE(key.stat().st_mode) == 0o600, key


def test_component_kubeconfigs_carry_only_their_own_credentials(tmp_path: Path) -> None:
    stack = LocalStack(repo=REPO, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    pki = stack.prepare_credentials()
    for component in pkimod.COMPONENT_USERS:
        path = pki.kubeconfig(component)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        doc = yaml.safe_load(path.read_text())
        (user,) = doc["users"]
        assert base64.b64decode(user["user"]["client-certificate-data"]) == (
            pki.client_cert(component).read_bytes()
        )
        assert base64.b64decode(user["user"]["client-key-data"]) == (
            pki.client_key(component).read_bytes()
        )
        (cluster,) = doc["clusters"]
        assert cluster["cluster"]["server"] == "https://127.0.0.1:6443"
        assert doc["current-context"] == component


def test_cluster_component_arguments(tmp_path: Path) -> None:
    stack = LocalStack(repo=REPO, state_dir=tmp_path / "s", cache_dir=tmp_path / "c")
    pki = stack.prepare_credentials()
    configs = stack.render_configs()
    bins = {b: tmp_path / "bin" / b for b in BINARIES}
    kcm = stack.spec("kube-controller-manager", bins, configs)
    assert f"--kubeconfig={pki.kubeconfig('kube-controller-manager')}" in kcm.argv
    assert "--use-service-account-credentials=true" in kcm.argv
    assert f"--service-account-private-key-file={pki.sa_key}" in kcm.argv
    assert "--leader-elect=false" in kcm.argv
    assert (kcm.ports, kcm.ready.url) == ((10257,), "https://127.0.0.1:10257/healthz")
    scheduler = stack.spec("kube-scheduler", bins, configs)
    config = yaml.safe_load(configs["kube-scheduler"].read_text())
    assert config["clientConnection"]["kubeconfig"] == str(pki.kubeconfig("kube-scheduler"))
    assert config["leaderElection"] == {"leaderElect": False}
    assert f"--config={configs['kube-scheduler']}" in scheduler.argv
    assert (scheduler.ports, scheduler.ready.url) == ((10259,), "https://127.0.0.1:10259/healthz")
    kwok = stack.spec("kwok", bins, configs)
    stages = [a.split("=", 1)[1] for a in kwok.argv if a.startswith("--config=")]
    assert stages == [str(tmp_path / "bin" / "stages" / s) for s in clustermod.KWOK_STAGES]
    # The stages kwok runs are files its build directory holds.
    assert {f"stages/{s}" for s in clustermod.KWOK_STAGES} <= set(BUILD_FILES["kwok"])
    assert {f"crd/{c}" for c in clustermod.KWOK_CRDS} <= set(BUILD_FILES["kwok"])
    assert "--enable-crds=PortForward,ClusterPortForward" in kwok.argv
    assert "--server-address=127.0.0.1:10247" in kwok.argv
    assert kwok.env == {"HOME": str(tmp_path / "s" / "kwok")}  # never the user's ~/.kwok
    apiserver = stack.spec("kube-apiserver", bins, configs)
    assert f"--kubelet-certificate-authority={pki.ca_cert}" in apiserver.argv
    assert "--endpoint-reconciler-type=none" in apiserver.argv


def test_simulated_nodes_look_like_a_two_node_minikube() -> None:
    nodes = [clustermod.node_manifest(n, i, cp) for i, (n, cp) in enumerate(clustermod.NODES)]
    assert [n["metadata"]["name"] for n in nodes] == ["minikube", "minikube-m02"]
    first, second = nodes
    assert first["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] == ""
    assert "node-role.kubernetes.io/control-plane" not in second["metadata"]["labels"]
    for index, node in enumerate(nodes):
        status = node["status"]
        assert (
            status["capacity"]
            == status["allocatable"]
            == {
                "cpu": "4",
                "memory": "16Gi",
                "pods": "110",
                "ephemeral-storage": "100Gi",
            }
        )
        assert status["addresses"][0] == {"type": "InternalIP", "address": "127.0.0.1"}
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
        assert node["spec"]["podCIDR"] == f"10.244.{index}.0/24"
        assert node["metadata"]["labels"]["kubernetes.io/hostname"] == node["metadata"]["name"]


def test_up_creates_the_cluster_objects_between_apiserver_and_cluster_components(
    tmp_path: Path,
) -> None:
    order: list[str] = []

    class Ordered(FakeStack):
        def _bootstrap(self, *, cluster: bool) -> None:
            order.append(f"bootstrap running={sorted(self.supervisor.recorded_names())}")

    stack = Ordered(repo=REPO, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    stack.fakes = [
        server_spec(n, free_port(), tmp_path) for n in ("kube-apiserver", "kube-scheduler")
    ]
    stack.up()
    try:
        assert order == ["bootstrap running=['kube-apiserver']"]
        assert sorted(stack.supervisor.recorded_names()) == ["kube-apiserver", "kube-scheduler"]
    finally:
        assert stack.down() == ["kube-scheduler", "kube-apiserver"]


def test_a_cluster_component_failing_stops_what_up_started(tmp_path: Path) -> None:
    stack = FakeStack(repo=REPO, state_dir=tmp_path / "state", cache_dir=tmp_path / "cache")
    apiserver = server_spec("kube-apiserver", free_port(), tmp_path)
    dies = dying_spec(tmp_path)
    stack.fakes = [apiserver, ProcessSpec(**{**_fields(dies), "name": "kwok"})]
    with pytest.raises(StartFailure, match=r"kwok at .*exited with status 3"):
        stack.up()
    assert stack.supervisor.recorded_names() == []
    assert not port_in_use(apiserver.ports[0])


def _fields(spec: ProcessSpec) -> dict[str, object]:
    import dataclasses

    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}


# ------------------------------------------------------------------------------ build progress


def test_build_watch_counts_packages_and_downloads(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text("# tracecheck: build.sh kwok at now\ngo: downloading sigs.k8s.io/kwok v0.8.0\n")
    watch = BuildWatch(log)
    watch.poll()
    assert (watch.compiled, watch.downloaded) == (0, 1)
    assert watch.line("kwok v0.8.0", 12.4) == (
        "kwok v0.8.0: building, 12s, 0 packages compiled, 1 modules downloaded; "
        "downloading sigs.k8s.io/kwok v0.8.0"
    )
    with log.open("a") as fh:
        fh.write("k8s.io/api/core/v1\ngithub.com/google/cel-go/cel\nsigs.k8s.io/kwok/cmd/kw")
    watch.poll()
    assert watch.compiled == 2  # the half-written last line waits for its end
    assert watch.last == "compiling github.com/google/cel-go/cel"
    with log.open("a") as fh:
        fh.write("ok\n2025-01-01T00:00:00Z info Compiling\n")
    watch.poll()
    assert watch.compiled == 3
    assert watch.last == "2025-01-01T00:00:00Z info Compiling"


SLOW_BUILD = """#!/usr/bin/env bash
set -eu
echo "go: downloading go.etcd.io/etcd/server/v3 v3.6.14"
for p in a/one b/two c/three; do sleep 0.3; echo "example.com/$p"; done
mkdir -p "$2" ; printf '#!/bin/sh\\necho etcd Version: 3.6.14\\n' > "$2/etcd" ; chmod +x "$2/etcd"
"""


def test_a_build_reports_progress_while_it_runs(tmp_path: Path, go_env: dict[str, str]) -> None:
    repo = fake_repo(tmp_path, SLOW_BUILD)
    lines: list[str] = []
    record = build_component(
        repo, tmp_path / "cache", "etcd", env=go_env, progress=lines.append, heartbeat=0.25
    )
    assert lines[0] == (
        f"etcd v3.6.14: building etcd (log: {tmp_path / 'cache/logs/build-etcd.log'})"
    )
    beats = [line for line in lines[1:-1] if line.startswith("etcd v3.6.14: building, ")]
    assert len(beats) >= 2
    assert re.fullmatch(
        r"etcd v3\.6\.14: building, \ds, [123] packages compiled, 1 modules downloaded; "
        r"compiling example\.com/\w/\w+",
        beats[-1],
    )
    assert lines[-1] == f"etcd v3.6.14: built in {record.seconds:.1f}s"


HANGING_BUILD = """#!/usr/bin/env bash
mkdir -p "$2"
sleep 300 &
echo $! > "$(dirname "$0")/child"
wait
"""


def test_an_interrupted_build_stops_its_processes_and_leaves_nothing(
    tmp_path: Path, go_env: dict[str, str]
) -> None:
    repo = fake_repo(tmp_path, HANGING_BUILD)
    cache = tmp_path / "cache"

    def interrupt(line: str) -> None:
        if "building, " in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_component(repo, cache, "etcd", env=go_env, progress=interrupt, heartbeat=0.3)
    child = int((repo / "stack/local/build/child").read_text())
    for _ in range(100):
        if not alive(child):
            break
        time.sleep(0.05)
    assert not alive(child)
    assert list((cache / "bin").iterdir()) == []


def test_a_kwok_build_without_its_stages_is_not_complete(tmp_path: Path) -> None:
    directory = recipe(REPO, "kwok").directory(tmp_path)
    directory.mkdir(parents=True)
    kwok = directory / "kwok"
    kwok.write_text("#!/bin/sh\n")
    kwok.chmod(0o755)
    assert cached_build(REPO, tmp_path, "kwok") is None
    for name in BUILD_FILES["kwok"]:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text("kind: Stage\n")
    record = cached_build(REPO, tmp_path, "kwok")
    assert record is not None and record.version == "v0.8.0"


PARALLEL_BUILD = """#!/usr/bin/env bash
set -eu
log="$(dirname "$0")/events"
echo "start $1" >> "$log"
for _ in $(seq 100); do grep -q "start $([ "$1" = etcd ] && echo prometheus || echo etcd)" "$log" \\
  && break; sleep 0.05; done
[ "$1" = prometheus ] && [ -n "${FAIL:-}" ] && { echo "boom $1"; exit 9; }
mkdir -p "$2"; printf '#!/bin/sh\\n' > "$2/$1"; chmod +x "$2/$1"
echo "end $1" >> "$log"
"""


def parallel_repo(tmp_path: Path) -> Path:
    repo = fake_repo(tmp_path, PARALLEL_BUILD)
    shutil.copytree(REPO / "stack/local/build/prometheus", repo / "stack/local/build/prometheus")
    return repo


def test_components_build_in_parallel_with_jobs(tmp_path: Path, go_env: dict[str, str]) -> None:
    from tracecheck.stack.local.build import build_components

    repo = parallel_repo(tmp_path)
    lines: list[str] = []
    records = build_components(
        repo, tmp_path / "cache", ["etcd", "prometheus"], env=go_env, progress=lines.append, jobs=2
    )
    assert [r.component for r in records] == ["etcd", "prometheus"]
    assert all(not r.cached and Path(r.directory, r.component).is_file() for r in records)
    events = (repo / "stack/local/build/events").read_text().split("\n")
    # Both had started before either ended (each waits until it sees the other start).
    assert set(events[:2]) == {"start etcd", "start prometheus"}
    assert {line.split(":")[0] for line in lines if ": built in " in line} == {
        "etcd v3.6.14",
        "prometheus v3.8.0",
    }


def test_a_failed_parallel_build_is_raised_after_the_others_finish(
    tmp_path: Path, go_env: dict[str, str]
) -> None:
    from tracecheck.stack.local.build import build_components

    repo = parallel_repo(tmp_path)
    with pytest.raises(StartFailure, match=r"build prometheus at .*status 9"):
        build_components(
            repo,
            tmp_path / "cache",
            ["etcd", "prometheus"],
            env={**go_env, "FAIL": "1"},
            jobs=2,
        )
    assert cached_build(repo, tmp_path / "cache", "etcd") is not None  # finished, kept
    assert cached_build(repo, tmp_path / "cache", "prometheus") is None


def test_build_jobs_come_from_the_environment(tmp_path: Path) -> None:
    def jobs(value: str | None) -> int:
        env = {} if value is None else {"TRACECHECK_BUILD_JOBS": value}
        return LocalStack(repo=REPO, state_dir=tmp_path, cache_dir=tmp_path, env=env).build_jobs

    assert (jobs(None), jobs("2")) == (1, 2)
    for bad in ("0", "two"):
        with pytest.raises(UsageError, match="TRACECHECK_BUILD_JOBS"):
            jobs(bad)
