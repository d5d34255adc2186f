"""The local pipeline and cluster: etcd, Prometheus, the Tempo stand-in, two collectors,
kube-apiserver, kube-controller-manager, kube-scheduler and kwok (simulated nodes).

``LocalStack`` is the library behind ``tracecheck stack local up|down|status|env``. Everything it
creates lives under one state directory::

    <state>/logs/<component>.log     stdout+stderr of each component (previous run: .log.1)
    <state>/run/<component>.json     pid, argv, start time, configuration fingerprint
    <state>/pki/                     CA, serving and client certs, SA keys, token file (0600),
                                     the cluster components' kubeconfigs
    <state>/kubeconfig               contexts privileged (current), viewer, monitoring (0600)
    <state>/configs/                 the shipped configs after stack/local/substitutions.yaml
    <state>/etcd, prometheus, tempo  data directories

Binaries come from :mod:`tracecheck.stack.local.build` (cached outside the repository); the
cluster's components and objects from :mod:`tracecheck.stack.local.cluster`.

Why one module: ``LocalStack`` (two thirds of the module) is one orchestration (builds,
credentials, configs, start order, readiness, status) whose methods share the state
directory's layout above; the largest method, :meth:`LocalStack.spec`, is the table of how
each of the nine components is started, and the rest is the status it reports. The building,
the supervision of processes, the certificates and the cluster's objects are modules of their
own already; what is left reads as one piece.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracecheck.errors import StackError, TracecheckError, UsageError
from tracecheck.stack.local import cluster as clustermod
from tracecheck.stack.local import pki as pkimod
from tracecheck.stack.local.build import (
    BINARY_COMPONENT,
    BUILDS,
    BuildRecord,
    build_component,
    build_components,
    cached_build,
    recipe,
)
from tracecheck.stack.local.substitutions import DEFAULT_SAMPLING_RATE, render_local_config
from tracecheck.stack.local.supervisor import HttpReady, ProcessSpec, ReadyCheck, Supervisor

__all__ = ["COMPONENTS", "ComponentStatus", "LocalStack", "StackStatus", "shell_exports"]

# Start order; `down` stops in reverse. The cluster's components start after kube-apiserver and
# the objects they need (tracecheck.stack.local.cluster.bootstrap).
PIPELINE_COMPONENTS = (
    "etcd",
    "prometheus",
    "tempo",
    "collector",
    "collector-spanmetrics",
    "kube-apiserver",
)
COMPONENTS = PIPELINE_COMPONENTS + clustermod.CLUSTER_COMPONENTS

APISERVER_URL = "https://127.0.0.1:6443"
DEBIAN_PROMETHEUS = Path("/usr/bin/prometheus")
TEMPO_VERSION = "2.9 (stand-in)"
VIEW_BINDING = clustermod.VIEW_BINDING

# Addresses and the ports they hold, per component. They follow the rendered configs
# (stack/local/substitutions.yaml); tests check that each address occurs in its config.
_ADDRESSES: dict[str, dict[str, str]] = {
    "etcd": {"client": "http://127.0.0.1:2379", "peer": "http://127.0.0.1:2380"},
    "prometheus": {"http": "http://127.0.0.1:9090"},
    "tempo": {
        "http": "http://127.0.0.1:3200",
        "otlp-grpc": "127.0.0.1:4417",
        "otlp-http": "http://127.0.0.1:4418",
    },
    "collector": {
        "otlp-grpc": "127.0.0.1:4317",
        "otlp-http": "http://127.0.0.1:4318",
        "health": "http://127.0.0.1:13133/",
        "metrics": "http://127.0.0.1:8888/metrics",
    },
    "collector-spanmetrics": {
        "otlp-grpc": "127.0.0.1:4327",
        "otlp-http": "http://127.0.0.1:4328",
        "health": "http://127.0.0.1:13134/",
        "metrics": "http://127.0.0.1:8889/metrics",
    },
    "kube-apiserver": {"https": APISERVER_URL},
    "kube-controller-manager": {"https": f"https://127.0.0.1:{clustermod.CONTROLLER_MANAGER_PORT}"},
    "kube-scheduler": {"https": f"https://127.0.0.1:{clustermod.SCHEDULER_PORT}"},
    "kwok": {"kubelet": f"https://127.0.0.1:{clustermod.KWOK_PORT}"},
}
_PORTS: dict[str, tuple[int, ...]] = {
    "etcd": (2379, 2380),
    "prometheus": (9090,),
    "tempo": (3200, 4417, 4418),
    "collector": (4317, 4318, 13133, 8888),
    "collector-spanmetrics": (4327, 4328, 13134, 8889),
    "kube-apiserver": (6443,),
    "kube-controller-manager": (clustermod.CONTROLLER_MANAGER_PORT,),
    "kube-scheduler": (clustermod.SCHEDULER_PORT,),
    "kwok": (clustermod.KWOK_PORT,),
}
# Readiness deadlines in seconds; kube-apiserver's first start runs its RBAC bootstrap.
DEADLINES: dict[str, float] = {
    "etcd": 30.0,
    "prometheus": 60.0,
    "tempo": 30.0,
    "collector": 30.0,
    "collector-spanmetrics": 30.0,
    "kube-apiserver": 120.0,
    "kube-controller-manager": 60.0,
    "kube-scheduler": 60.0,
    "kwok": 30.0,
}
# Rendered config file per component: (shipped file, name under <state>/configs).
_CONFIGS: dict[str, tuple[str, str]] = {
    "prometheus": ("stack/prometheus/prometheus.yml", "prometheus.yml"),
    "tempo": ("stack/tempo/tempo.yaml", "tempo.yaml"),
    "collector": ("stack/collector/config.yaml", "collector.yaml"),
    "collector-spanmetrics": (
        "stack/collector/config-spanmetrics.yaml",
        "collector-spanmetrics.yaml",
    ),
    "kube-apiserver": ("stack/apiserver/tracing-config.yaml", "tracing-config.yaml"),
}
_BUILD_OF = {
    "etcd": "etcd",
    "prometheus": "prometheus",
    "collector": "otelcol",
    "collector-spanmetrics": "otelcol",
    "kube-apiserver": "kube-apiserver",
    "kube-controller-manager": "kube-apiserver",
    "kube-scheduler": "kube-apiserver",
    "kwok": "kwok",
}
# Generated (not shipped) configs under <state>/configs.
_SCHEDULER_CONFIG = "kube-scheduler.yaml"
# Modules the stand-in imports (pyproject extra "local" plus the core dependencies).
_STANDIN_MODULES = ("yaml", "grpc", "google.protobuf", "opentelemetry.proto", "cramjam")


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    """One component as ``status`` sees it."""

    name: str
    version: str
    addresses: Mapping[str, str]
    pid: int | None
    ready: bool
    log: str
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "addresses": dict(self.addresses),
            "pid": self.pid,
            "ready": self.ready,
            "log": self.log,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class StackStatus:
    """Every component of the local pipeline, in start order."""

    state_dir: str
    components: tuple[ComponentStatus, ...] = field(default_factory=tuple)

    @property
    def ready(self) -> bool:
        """True when every component is ready."""
        return bool(self.components) and all(c.ready for c in self.components)

    @property
    def running(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.components if c.pid is not None)

    def to_json(self) -> dict[str, Any]:
        """The ``status --json`` document::

        {"state_dir": "/home/u/.local/state/tracecheck/local",
         "ready": true,
         "components": [{"name": "etcd", "version": "v3.6.14",
                         "addresses": {"client": "http://127.0.0.1:2379", ...},
                         "pid": 1234, "ready": true,
                         "log": ".../logs/etcd.log", "detail": "ready"}, ...]}
        """
        return {
            "state_dir": self.state_dir,
            "ready": self.ready,
            "components": [c.to_json() for c in self.components],
        }

    def render(self) -> str:
        """A plain-text table for humans."""
        header = ("COMPONENT", "VERSION", "PID", "READY", "ADDRESSES")
        rows = [
            (
                c.name,
                c.version,
                str(c.pid) if c.pid is not None else "-",
                "yes" if c.ready else "no",
                "  ".join(f"{k}={v}" for k, v in c.addresses.items()),
            )
            for c in self.components
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True))
            + "  "
            + row[4]
            for row in [header, *rows]
        ]
        problems = [f"  {c.name}: {c.detail}" for c in self.components if not c.ready and c.detail]
        lines.append(f"state: {self.state_dir}")
        return "\n".join(lines + problems)


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


class LocalStack:
    """Build, start, inspect and stop the local pipeline.

    >>> stack = LocalStack(repo=find_repo_root(), state_dir=default_state_dir(os.environ),
    ...                    cache_dir=default_cache_dir(os.environ), progress=print)
    >>> stack.up().ready  # doctest: +SKIP
    True

    ``prometheus`` is ``"go"`` (Prometheus 3.8 built from Go modules) or ``"debian"``
    (/usr/bin/prometheus 2.42). ``sampling_rate`` is kube-apiserver's samplingRatePerMillion
    (default 250000); changing it restarts only kube-apiserver. ``collection_interval``
    overrides the stand-in's metrics-generator interval (seconds). ``env`` is the environment of
    builds and components (default: this process's).
    """

    def __init__(
        self,
        *,
        repo: Path,
        state_dir: Path,
        cache_dir: Path,
        prometheus: str = "go",
        sampling_rate: int | None = None,
        progress: Callable[[str], None] = lambda s: None,
        env: Mapping[str, str] | None = None,
        collection_interval: float | None = None,
    ) -> None:
        if prometheus not in ("go", "debian"):
            raise UsageError("local-stack", "--prometheus", f"go or debian, not {prometheus!r}")
        rate = DEFAULT_SAMPLING_RATE if sampling_rate is None else sampling_rate
        if not 0 <= rate <= 1_000_000:
            raise UsageError(
                "local-stack", "--sampling-rate", f"must be 0..1000000 per million, not {rate}"
            )
        self.repo = repo
        self.state_dir = state_dir
        self.cache_dir = cache_dir
        self.prometheus = prometheus
        self.sampling_rate = rate
        self.progress = progress
        self.process_env = dict(os.environ if env is None else env)
        self.collection_interval = collection_interval
        self.kubeconfig = state_dir / "kubeconfig"
        self.pki = pkimod.Pki(state_dir / "pki")
        self.supervisor = Supervisor(state_dir, env=self.process_env, progress=progress)
        self.builds: list[BuildRecord] = []
        self.build_jobs = _build_jobs(self.process_env)

    # -- building -----------------------------------------------------------------------------

    def _needed_builds(self) -> list[str]:
        """What ``up`` runs (promtool only serves the tests: built when first asked for)."""
        return [
            b
            for b in BUILDS
            if b != "promtool" and not (b == "prometheus" and self.prometheus == "debian")
        ]

    def build(self, components: Sequence[str] | None = None) -> list[BuildRecord]:
        """Build (or reuse) binaries: build components ``etcd``, ``prometheus``, ``promtool``,
        ``otelcol``, ``kube-apiserver``, ``kwok`` (component and binary names are accepted too);
        default: all that ``up`` needs."""
        wanted: list[str] = []
        for name in components if components is not None else self._needed_builds():
            comp = BINARY_COMPONENT.get(name) or _BUILD_OF.get(name) or name
            if comp not in BUILDS:
                raise UsageError("local-stack", name, f"not buildable; one of {', '.join(BUILDS)}")
            if comp not in wanted:
                wanted.append(comp)
        self.builds = build_components(
            self.repo,
            self.cache_dir,
            wanted,
            env=self.process_env,
            progress=self.progress,
            jobs=self.build_jobs,
        )
        return self.builds

    def binary(self, name: str) -> Path:
        """Path of ``name`` (etcd, prometheus, promtool, otelcol, kube-apiserver,
        kube-controller-manager, kube-scheduler, kubectl, kwok), built if missing; with
        ``prometheus="debian"``, prometheus/promtool from /usr/bin."""
        if self.prometheus == "debian" and name in ("prometheus", "promtool"):
            path = DEBIAN_PROMETHEUS.with_name(name)
            if not path.is_file():
                raise StackError(
                    "prometheus",
                    str(path),
                    "Debian's prometheus is missing: apt-get install prometheus",
                )
            return path
        comp = BINARY_COMPONENT.get(name)
        if comp is None:
            raise UsageError(
                "local-stack", name, f"unknown binary; one of {', '.join(BINARY_COMPONENT)}"
            )
        record = cached_build(self.repo, self.cache_dir, comp) or build_component(
            self.repo, self.cache_dir, comp, env=self.process_env, progress=self.progress
        )
        return Path(record.directory) / name

    # -- preparing ----------------------------------------------------------------------------

    def _check_prerequisites(self, names: Sequence[str]) -> None:
        if "tempo" in names:
            standin = self.repo / "stack" / "local" / "tempo_standin"
            if not (standin / "__main__.py").is_file():
                raise StackError(
                    "tempo", str(standin), "the Tempo stand-in is missing (no __main__.py)"
                )
            missing = [m for m in _STANDIN_MODULES if not _importable(m)]
            if missing:
                raise StackError(
                    "tempo",
                    sys.executable,
                    f"Python packages missing for the stand-in: {', '.join(missing)}; "
                    "pip install 'tracecheck[local]'",
                )
        if "prometheus" in names and self.prometheus == "debian":
            self.binary("prometheus")  # StackError naming apt-get when it is missing

    def render_configs(self) -> dict[str, Path]:
        """Write the rendered configs under ``<state>/configs``; component -> file."""
        out: dict[str, Path] = {}
        configs = self.state_dir / "configs"
        configs.mkdir(parents=True, exist_ok=True)
        for comp, (shipped, local) in _CONFIGS.items():
            text = render_local_config(
                shipped, repo=self.repo, state_dir=self.state_dir, sampling_rate=self.sampling_rate
            )
            out[comp] = _write_if_changed(configs / local, text)
        out["kube-scheduler"] = _write_if_changed(
            configs / _SCHEDULER_CONFIG, clustermod.scheduler_config_text(self.pki)
        )
        # Prometheus's alert rules (its rule_files: <state>/configs/rules/*.yaml), as shipped.
        rules = configs / "rules"
        rules.mkdir(exist_ok=True)
        for src in sorted((self.repo / "stack" / "prometheus" / "rules").glob("*.rules.yaml")):
            dst = rules / src.name
            if not dst.is_file() or dst.read_bytes() != src.read_bytes():
                dst.write_bytes(src.read_bytes())
        return out

    def prepare_credentials(self) -> pkimod.Pki:
        """Ensure the PKI and the kubeconfig (idempotent)."""
        pki, fresh = pkimod.ensure_pki(self.pki.dir)
        if fresh:
            self.progress(f"pki: generated CA, certificates, keys and token under {pki.dir}")
        text = pkimod.kubeconfig_text(pki, APISERVER_URL)
        if not self.kubeconfig.is_file() or self.kubeconfig.read_text() != text:
            pkimod.write_private(self.kubeconfig, text)
        for component in pkimod.COMPONENT_USERS:
            path = pki.kubeconfig(component)
            text = pkimod.component_kubeconfig_text(pki, APISERVER_URL, component)
            if not path.is_file() or path.read_text() != text:
                pkimod.write_private(path, text)
        return pki

    def _ready_check(self, name: str) -> ReadyCheck:
        if name == "etcd":
            return HttpReady("http://127.0.0.1:2379/health", body_contains='"health":"true"')
        if name == "prometheus":
            return HttpReady("http://127.0.0.1:9090/-/ready")
        if name == "tempo":
            return HttpReady("http://127.0.0.1:3200/ready", body_contains="ready")
        if name == "collector":
            return HttpReady("http://127.0.0.1:13133/")
        if name == "collector-spanmetrics":
            return HttpReady("http://127.0.0.1:13134/")
        if name == "kube-apiserver":
            return HttpReady(
                f"{APISERVER_URL}/readyz",
                ca_file=str(self.pki.ca_cert),
                cert_file=str(self.pki.admin_cert),
                key_file=str(self.pki.admin_key),
            )
        if name in clustermod.CLUSTER_COMPONENTS:
            health = HttpReady(
                f"{_ADDRESSES[name]['https' if name != 'kwok' else 'kubelet']}/healthz",
                ca_file=str(self.pki.ca_cert),
            )
            if name == "kube-scheduler":
                return health
            # kube-controller-manager: its controllers run (the view role gets aggregated);
            # kwok: the simulated Nodes are Ready.
            check = (
                clustermod.view_aggregated
                if name == "kube-controller-manager"
                else clustermod.nodes_ready
            )
            return clustermod.ApiReady(health, APISERVER_URL, self.pki, check)
        raise UsageError("local-stack", name, f"unknown component; one of {', '.join(COMPONENTS)}")

    @property
    def _prometheus_data(self) -> str:
        return "prometheus" if self.prometheus == "go" else "prometheus-debian"

    def _version(self, name: str) -> str:
        if name == "tempo":
            return TEMPO_VERSION
        if name == "prometheus" and self.prometheus == "debian":
            return "2.42 (debian)"
        try:
            return recipe(self.repo, _BUILD_OF[name]).version
        except TracecheckError:
            return ""

    def spec(
        self, name: str, binaries: Mapping[str, Path], configs: Mapping[str, Path]
    ) -> ProcessSpec:
        """How to run component ``name`` given built ``binaries`` and rendered ``configs``."""
        state = self.state_dir
        env: dict[str, str] = {}
        cwd = str(state)
        if name == "etcd":
            argv = [
                str(binaries["etcd"]),
                "--name=tracecheck",
                f"--data-dir={state / 'etcd'}",
                "--listen-client-urls=http://127.0.0.1:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=tracecheck=http://127.0.0.1:2380",
            ]
        elif name == "prometheus":
            argv = [
                str(binaries["prometheus"]),
                f"--config.file={configs['prometheus']}",
                # 3.x writes a TSDB 2.42 cannot read back: each flavour keeps its own.
                f"--storage.tsdb.path={state / self._prometheus_data}",
                "--web.listen-address=127.0.0.1:9090",
                # Receives the stand-in's and the collector's span-metrics by remote write,
                # with exemplars (docs/reference/tempo.md §11.3).
                "--web.enable-remote-write-receiver",
                "--enable-feature=exemplar-storage",
            ]
        elif name == "tempo":
            argv = [
                sys.executable,
                "-m",
                "tempo_standin",
                "--config",
                str(configs["tempo"]),
                "--data-dir",
                str(state / "tempo"),
            ]
            if self.collection_interval is not None:
                argv += ["--collection-interval", f"{self.collection_interval:g}"]
            pythonpath = str(self.repo / "stack" / "local")
            if self.process_env.get("PYTHONPATH"):
                pythonpath += os.pathsep + self.process_env["PYTHONPATH"]
            env["PYTHONPATH"] = pythonpath
        elif name in ("collector", "collector-spanmetrics"):
            argv = [str(binaries["otelcol"]), f"--config={configs[name]}"]
        elif name == "kube-apiserver":
            p = self.pki
            argv = [
                str(binaries["kube-apiserver"]),
                "--bind-address=127.0.0.1",
                "--secure-port=6443",
                "--advertise-address=127.0.0.1",
                "--etcd-servers=http://127.0.0.1:2379",
                f"--cert-dir={p.dir}",
                f"--tls-cert-file={p.serving_cert}",
                f"--tls-private-key-file={p.serving_key}",
                f"--client-ca-file={p.ca_cert}",
                f"--token-auth-file={p.token_file}",
                f"--service-account-key-file={p.sa_pub}",
                f"--service-account-signing-key-file={p.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-cluster-ip-range={pkimod.SERVICE_CIDR}",
                "--authorization-mode=RBAC",
                f"--tracing-config-file={configs['kube-apiserver']}",
                # The `kubernetes` Service gets no Endpoints: the reconciler would publish the
                # advertise address 127.0.0.1, which Endpoints validation rejects (loopback), and
                # nothing in the cluster needs it (its components use their kubeconfigs).
                "--endpoint-reconciler-type=none",
                # kwok serves every simulated Node's kubelet port (port-forward, logs, exec) on
                # 127.0.0.1 with a certificate from the local CA: verify it, by InternalIP.
                f"--kubelet-certificate-authority={p.ca_cert}",
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                "--profiling=false",
            ]
        elif name == "kube-controller-manager":
            argv = clustermod.controller_manager_argv(binaries[name], self.pki, state)
        elif name == "kube-scheduler":
            argv = clustermod.scheduler_argv(binaries[name], self.pki, configs[name])
        elif name == "kwok":
            argv = clustermod.kwok_argv(binaries["kwok"], self.pki)
            # kwok also reads ~/.kwok/kwok.yaml when it exists: not the user's, its own home.
            env["HOME"] = str(state / "kwok")
        else:
            raise UsageError(
                "local-stack", name, f"unknown component; one of {', '.join(COMPONENTS)}"
            )
        # The fingerprint covers what the process was started with: argv, extra env, the
        # rendered config's content and the binary's identity. A change restarts it on `up`.
        parts: list[str | bytes] = [*argv, *(f"{k}={v}" for k, v in sorted(env.items()))]
        if name in configs:
            parts.append(configs[name].read_bytes())
        if name == "prometheus":  # changed rules restart it on `up`, as a changed config does
            parts += [p.read_bytes() for p in sorted(configs[name].parent.glob("rules/*.yaml"))]
        exe = Path(argv[0])
        if exe.is_file():
            st = exe.stat()
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        if name == "kube-apiserver" or name in clustermod.CLUSTER_COMPONENTS:
            parts.append(self.pki.ca_cert.read_bytes())
        if name == "tempo":
            # The stand-in's source is its binary: changed code restarts it on `up`, as a new
            # build restarts a Go component (the interpreter's identity alone never changes).
            # Its subpackages too (traceql/): rglob, each named by its path in the package.
            standin = self.repo / "stack" / "local" / "tempo_standin"
            for source in sorted(standin.rglob("*.py")):
                parts += [str(source.relative_to(standin)), source.read_bytes()]
        return ProcessSpec(
            name=name,
            argv=tuple(argv),
            ready=self._ready_check(name),
            version=self._version(name),
            ports=_PORTS[name],
            addresses=_ADDRESSES[name],
            env=env,
            cwd=cwd,
            deadline=DEADLINES[name],
            fingerprint=_digest(*parts),
        )

    def _prepare(self, names: Sequence[str]) -> list[ProcessSpec]:
        self._check_prerequisites(names)
        builds = {_BUILD_OF[n] for n in names if n != "tempo"}
        if self.prometheus == "debian":
            builds.discard("prometheus")
        records = self.build([b for b in BUILDS if b in builds])
        binaries = {b: Path(r.directory) / b for r in records for b in BUILDS[r.component]}
        if self.prometheus == "debian" and "prometheus" in names:
            binaries["prometheus"] = DEBIAN_PROMETHEUS
        for sub in ("etcd", self._prometheus_data, "tempo", "kwok", "logs", "run"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        self.prepare_credentials()
        configs = self.render_configs()
        return [self.spec(n, binaries, configs) for n in names]

    # -- lifecycle ----------------------------------------------------------------------------

    def up(self) -> StackStatus:
        """Build what is missing, then start every component in order, each waited for.

        The pipeline comes first (etcd ... kube-apiserver), then the objects the cluster needs
        (:func:`tracecheck.stack.local.cluster.bootstrap`: the viewer's binding, kwok's CRDs and
        RBAC, the simulated Nodes), then kube-controller-manager, kube-scheduler and kwok. Ready
        components with an unchanged configuration are left alone, so a second ``up`` costs
        seconds. On a failure the components this call started are stopped again and
        :class:`StackError` is raised (its log tail already passed to ``progress``).
        """
        with self.supervisor.lock():
            specs = self._prepare(COMPONENTS)
            self.supervisor.check_all_ports(specs)  # every port, before anything starts
            first = [s for s in specs if s.name in PIPELINE_COMPONENTS]
            then = [s for s in specs if s.name not in PIPELINE_COMPONENTS]
            started = self.supervisor.ensure_running(first)
            try:
                self._bootstrap(cluster=True)
                started += self.supervisor.ensure_running(then)
            except StackError:
                for name in reversed(started):
                    self.progress(f"{name}: stopping (started by this run)")
                    self.supervisor.stop(name)
                raise
        return self.status()

    def _bootstrap(self, *, cluster: bool) -> None:
        """The objects the cluster's components need (idempotent; see cluster.bootstrap).
        Without ``cluster``, only the viewer's RBAC (kwok's build is not needed for it)."""
        kwok_dir = None
        if cluster:
            kwok_dir = self.binary("kwok").parent
        with clustermod.api(APISERVER_URL, self.pki) as client:
            clustermod.bootstrap(client, kwok_dir, self.progress)

    def down(self) -> list[str]:
        """Stop everything ``up`` started (reverse order); returns the names stopped."""
        with self.supervisor.lock():
            recorded = self.supervisor.recorded_names()
            order = [n for n in recorded if n not in COMPONENTS] + [
                n for n in reversed(COMPONENTS) if n in recorded
            ]
            stopped = self.supervisor.stop_all(order)
        return stopped

    def stop(self, component: str) -> None:
        """Stop one component (e.g. for a fault test); a no-op if it is not running."""
        self._ready_check(component)  # validates the name
        with self.supervisor.lock():
            if self.supervisor.stop(component):
                self.progress(f"{component}: stopped")

    def start(self, component: str) -> None:
        """Start one component (left alone if ready) and wait until it is ready."""
        self._ready_check(component)
        with self.supervisor.lock():
            specs = self._prepare([component])
            if component in clustermod.CLUSTER_COMPONENTS:
                self._bootstrap(cluster=True)
            self.supervisor.ensure_running(specs)
            if component == "kube-apiserver":
                # The Nodes and kwok's objects live in etcd: they outlive a restart.
                self._bootstrap(cluster=False)

    def status(self) -> StackStatus:
        """What runs and what answers, without starting or building anything."""
        out = []
        for name in COMPONENTS:
            record = self.supervisor.record(name)
            pid = self.supervisor.running_pid(name)
            ready = False
            if pid is None:
                detail = "not running" if record is None else f"not running (pid {record.pid} gone)"
            else:
                ready, seen = self._ready_check(name).probe()
                detail = "ready" if ready else f"running, not ready: {seen}"
            version = (
                record.version if record is not None and record.version else self._version(name)
            )
            out.append(
                ComponentStatus(
                    name=name,
                    version=version,
                    addresses=_ADDRESSES[name],
                    pid=pid,
                    ready=ready,
                    log=str(self.supervisor.log_path(name)),
                    detail=detail,
                )
            )
        return StackStatus(str(self.state_dir), tuple(out))

    def env(self) -> dict[str, str]:
        """Exports for a shell: the generated kubeconfig and this state directory."""
        return {"KUBECONFIG": str(self.kubeconfig), "TRACECHECK_STATE_DIR": str(self.state_dir)}


def _build_jobs(env: Mapping[str, str]) -> int:
    """Components built at once: ``$TRACECHECK_BUILD_JOBS``, default 1 (each ``go build``
    already uses every core; see stack/local/README.md for the measurements)."""
    raw = env.get("TRACECHECK_BUILD_JOBS", "1")
    try:
        jobs = int(raw)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise UsageError("local-stack", "TRACECHECK_BUILD_JOBS", f"a positive number, not {raw!r}")
    return jobs


def _write_if_changed(path: Path, text: str) -> Path:
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def shell_exports(env: Mapping[str, str]) -> str:
    """``export K='v'`` lines for ``eval "$(tracecheck stack local env)"``."""
    import shlex

    return "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
