"""Building the local pipeline's Go binaries, cached outside the repository by recipe.

A recipe is what determines a binary: ``stack/local/build/build.sh`` plus the component's wrapper
``go.mod``/``go.sum`` (or, for the collector, ``stack/collector/ocb-manifest.yaml``). Binaries go
to ``<cache>/bin/<component>-<version>-<hash12>/`` where ``hash12`` is a short SHA-256 of the
recipe, so a changed recipe builds into a new directory and an unchanged one is reused at once.
A build runs into a temporary directory that is renamed into place only when complete; the
directory holds ``build.json`` (version, seconds taken, Go version, who built it). While a build
runs, ``progress`` hears every ``heartbeat`` seconds what it is doing: the time so far, the
packages compiled and the package (or module download) it is at, read from the build log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tracecheck.errors import ConfigError, StackError
from tracecheck.stack.local.supervisor import StartFailure, _tail

__all__ = [
    "BINARY_COMPONENT",
    "BUILDS",
    "BuildRecord",
    "Recipe",
    "adopt_build",
    "build_component",
    "build_components",
    "cached_build",
    "recipe",
]

# Build components (build.sh arguments) and the binaries each produces.
BUILDS: dict[str, tuple[str, ...]] = {
    "etcd": ("etcd",),
    "prometheus": ("prometheus",),
    "promtool": ("promtool",),
    "otelcol": ("otelcol",),
    "kube-apiserver": ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"),
    "kwok": ("kwok",),
}
BINARY_COMPONENT = {binary: comp for comp, binaries in BUILDS.items() for binary in binaries}
# Files besides the binaries that a complete build directory holds (kwok's stages, CRDs, role).
BUILD_FILES: dict[str, tuple[str, ...]] = {
    "kwok": (
        "stages/node-initialize.yaml",
        "stages/node-heartbeat-with-lease.yaml",
        "stages/pod-ready.yaml",
        "stages/pod-complete.yaml",
        "stages/pod-delete.yaml",
        "crd/kwok.x-k8s.io_portforwards.yaml",
        "crd/kwok.x-k8s.io_clusterportforwards.yaml",
        "rbac/role.yaml",
    ),
}

_BUILD_SH = "stack/local/build/build.sh"
# Build component -> (wrapper module directory under stack/local/build, the module it builds).
_WRAPPER = {
    "etcd": ("etcd", "go.etcd.io/etcd/server/v3"),
    "prometheus": ("prometheus", "github.com/prometheus/prometheus"),
    "promtool": ("prometheus", "github.com/prometheus/prometheus"),
    "kube-apiserver": ("kube-apiserver", "k8s.io/kubernetes"),
    "kwok": ("kwok", "sigs.k8s.io/kwok"),
}
# Recipe files besides build.sh and the wrapper's go.mod/go.sum.
_RECIPE_EXTRA = {
    "prometheus": ("stack/local/build/prometheus/plugins.yml",),
    "promtool": ("stack/local/build/prometheus/plugins.yml",),
}
_OCB_MANIFEST = "stack/collector/ocb-manifest.yaml"
HEARTBEAT = 10.0  # seconds between progress lines while a build runs


@dataclass(frozen=True, slots=True)
class Recipe:
    """What determines one component's binaries, and the cache directory they belong in."""

    component: str
    version: str
    binaries: tuple[str, ...]
    files: tuple[str, ...]  # repo-relative, hashed in this order
    hash12: str

    def directory(self, cache_dir: Path) -> Path:
        return cache_dir / "bin" / f"{self.component}-{self.version}-{self.hash12}"


@dataclass(frozen=True, slots=True)
class BuildRecord:
    """One component's binaries: where they are and how they got there."""

    component: str
    version: str
    directory: str
    seconds: float | None  # how long the build took (None: unknown, e.g. built by hand)
    cached: bool  # True when an existing build was reused by this call
    built_by: str = "build.sh"

    def summary(self) -> str:
        """One line for humans, e.g. ``etcd v3.6.14: built in 52.3s``."""
        head = f"{self.component} {self.version}"
        if self.cached:
            return f"{head}: cached ({self.directory})"
        took = f" in {self.seconds:.1f}s" if self.seconds is not None else ""
        return f"{head}: {'built' if self.built_by == 'build.sh' else self.built_by}{took}"


def _module_version(gomod: Path, module: str) -> str:
    try:
        text = gomod.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("local-stack", str(gomod), f"cannot read: {exc.strerror}") from exc
    # Both `require m v` and a line inside a `require ( ... )` block.
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", text, re.MULTILINE)
    if match is None:
        raise ConfigError("local-stack", str(gomod), f"{module} is not required")
    return match.group(1)


def _version(repo: Path, component: str) -> str:
    if component == "otelcol":
        import yaml

        path = repo / _OCB_MANIFEST
        try:
            dist = yaml.safe_load(path.read_text(encoding="utf-8"))["dist"]
            return f"v{dist['version']}"
        except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
            raise ConfigError("local-stack", str(path), f"no dist.version: {exc}") from exc
    wrapper, module = _WRAPPER[component]
    version = _module_version(repo / "stack/local/build" / wrapper / "go.mod", module)
    if module == "github.com/prometheus/prometheus":
        # Module v0.3MM.P is Prometheus 3.MM.P (docs/reference/collector.md §9.5).
        match = re.fullmatch(r"v0\.3(\d\d)\.(\d+)", version)
        if match:
            return f"v3.{int(match.group(1))}.{match.group(2)}"
    return version


def recipe(repo: Path, component: str) -> Recipe:
    """The recipe of build component ``component`` (one of :data:`BUILDS`)."""
    if component not in BUILDS:
        raise ConfigError(
            "local-stack",
            component,
            f"unknown build component; expected one of {', '.join(BUILDS)}",
        )
    if component == "otelcol":
        files: tuple[str, ...] = (_BUILD_SH, _OCB_MANIFEST)
    else:
        base = f"stack/local/build/{_WRAPPER[component][0]}"
        files = (_BUILD_SH, f"{base}/go.mod", f"{base}/go.sum", *_RECIPE_EXTRA.get(component, ()))
    digest = hashlib.sha256()
    for name in files:
        try:
            data = (repo / name).read_bytes()
        except OSError as exc:
            raise ConfigError(
                "local-stack", str(repo / name), f"cannot read: {exc.strerror}"
            ) from exc
        digest.update(name.encode() + b"\0" + data + b"\0")
    return Recipe(
        component=component,
        version=_version(repo, component),
        binaries=BUILDS[component],
        files=files,
        hash12=digest.hexdigest()[:12],
    )


def _complete(directory: Path, component: str) -> bool:
    return all(os.access(directory / b, os.X_OK) for b in BUILDS[component]) and all(
        (directory / f).is_file() for f in BUILD_FILES.get(component, ())
    )


def cached_build(repo: Path, cache_dir: Path, component: str) -> BuildRecord | None:
    """The cached build of ``component`` for the current recipe, or None."""
    rec = recipe(repo, component)
    directory = rec.directory(cache_dir)
    if not _complete(directory, component):
        return None
    seconds: float | None = None
    built_by = "build.sh"
    with contextlib.suppress(OSError, ValueError, TypeError):
        info = json.loads((directory / "build.json").read_text())
        seconds = info.get("seconds")
        built_by = str(info.get("built_by", built_by))
    return BuildRecord(component, rec.version, str(directory), seconds, True, built_by)


def _go_version(env: Mapping[str, str]) -> str:
    try:
        out = subprocess.run(
            ["go", "version"], env=dict(env), capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip()


def _staging(final: Path) -> Path:
    """An empty temporary directory beside ``final`` (same filesystem: renamed into place)."""
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _finish(tmp: Path, final: Path, info: Mapping[str, object]) -> None:
    """Write ``build.json`` into ``tmp`` and rename it to ``final``."""
    (tmp / "build.json").write_text(json.dumps(info, indent=1) + "\n")
    try:
        os.rename(tmp, final)
    except OSError:
        # Someone else completed the same recipe meanwhile: theirs is as good as ours.
        if not final.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


_IMPORT_PATH = re.compile(r"[A-Za-z0-9][\w.~-]*(?:/[\w.~+-]+)*")


class BuildWatch:
    """Follows a build log for progress lines: packages compiled (``go build -v`` prints each
    import path it compiles), modules downloaded (``go: downloading m v``) and the latest step."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.offset = 0
        self.partial = b""
        self.compiled = 0
        self.downloaded = 0
        self.last = "starting"

    def poll(self) -> None:
        """Read what the log gained since the last call."""
        try:
            with self.log.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return
        self.offset += len(data)
        *lines, self.partial = (self.partial + data).split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line or line.startswith("# tracecheck:"):
                continue
            if line.startswith("go: downloading "):
                self.downloaded += 1
                self.last = line.removeprefix("go: ")
            elif _IMPORT_PATH.fullmatch(line):
                self.compiled += 1
                self.last = f"compiling {line}"
            else:
                self.last = line[:120]

    def line(self, head: str, elapsed: float) -> str:
        """E.g. ``kwok v0.8.0: building, 40s, 312 packages compiled, 57 modules downloaded;
        compiling k8s.io/client-go/kubernetes``."""
        return (
            f"{head}: building, {elapsed:.0f}s, {self.compiled} packages compiled, "
            f"{self.downloaded} modules downloaded; {self.last}"
        )


def _run_build(
    argv: list[str],
    log: Path,
    *,
    env: Mapping[str, str],
    cwd: Path,
    head: str,
    progress: Callable[[str], None],
    heartbeat: float,
) -> int:
    """Run build.sh with its output in ``log``; a progress line every ``heartbeat`` seconds.

    The build runs in its own process group, stopped as a whole if this call is interrupted.
    """
    watch = BuildWatch(log)
    started = time.monotonic()
    with log.open("wb") as out:
        out.write(f"# tracecheck: {' '.join(argv[1:3])} at {time.ctime()}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
        try:
            while True:
                try:
                    return proc.wait(timeout=heartbeat)
                except subprocess.TimeoutExpired:
                    watch.poll()
                    progress(watch.line(head, time.monotonic() - started))
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise


def build_component(
    repo: Path,
    cache_dir: Path,
    component: str,
    *,
    env: Mapping[str, str],
    progress: Callable[[str], None] = lambda s: None,
    heartbeat: float = HEARTBEAT,
) -> BuildRecord:
    """Build ``component`` with build.sh unless the current recipe is cached.

    Raises :class:`StackError` when ``go`` is missing and :class:`StartFailure` (with the build
    log's tail) when the build fails.
    """
    cached = cached_build(repo, cache_dir, component)
    if cached is not None:
        progress(cached.summary())
        return cached
    rec = recipe(repo, component)
    if shutil.which("go", path=env.get("PATH")) is None:
        raise StackError(
            f"build {component}",
            "go",
            "the go command is not on PATH; install Go 1.26 or newer (https://go.dev/dl/)",
        )
    final = rec.directory(cache_dir)
    tmp = _staging(final)
    log = cache_dir / "logs" / f"build-{component}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    head = f"{component} {rec.version}"
    progress(f"{head}: building {', '.join(rec.binaries)} (log: {log})")
    started = time.monotonic()
    try:
        returncode = _run_build(
            ["bash", str(repo / _BUILD_SH), component, str(tmp)],
            log,
            env=env,
            cwd=repo,
            head=head,
            progress=progress,
            heartbeat=heartbeat,
        )
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.monotonic() - started
    if returncode != 0 or not _complete(tmp, component):
        shutil.rmtree(tmp, ignore_errors=True)
        cause = (
            f"build.sh exited with status {returncode}"
            if returncode
            else f"build.sh did not produce {', '.join(rec.binaries)}"
        )
        tail = _tail(log)
        for line in tail:
            progress(line)
        raise StartFailure(f"build {component}", str(log), cause, log=log, log_tail=tail)
    info = {
        "component": component,
        "version": rec.version,
        "recipe_hash": rec.hash12,
        "recipe_files": list(rec.files),
        "binaries": list(rec.binaries),
        "seconds": round(seconds, 1),
        "built_by": "build.sh",
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "go": _go_version(env),
    }
    _finish(tmp, final, info)
    record = BuildRecord(component, rec.version, str(final), round(seconds, 1), False)
    progress(record.summary())
    return record


def build_components(
    repo: Path,
    cache_dir: Path,
    components: Sequence[str],
    *,
    env: Mapping[str, str],
    progress: Callable[[str], None] = lambda s: None,
    jobs: int = 1,
) -> list[BuildRecord]:
    """Build several components (in the given order), ``jobs`` at a time.

    With ``jobs`` > 1 the builds run in threads, each its own ``go build``; a failure is raised
    once the builds already running have finished (their results are cached, not wasted).
    """
    if jobs <= 1 or len(components) <= 1:
        return [build_component(repo, cache_dir, c, env=env, progress=progress) for c in components]
    from concurrent.futures import ThreadPoolExecutor

    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            progress(line)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [
            pool.submit(build_component, repo, cache_dir, c, env=env, progress=say)
            for c in components
        ]
        errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error
    return [f.result() for f in futures]


def adopt_build(
    repo: Path,
    cache_dir: Path,
    component: str,
    source: Path,
    *,
    note: str = "hand",
    seconds: float | None = None,
) -> BuildRecord:
    """Hard-link (or copy) binaries built by hand in ``source`` (and the component's
    :data:`BUILD_FILES`) into the recipe's cache directory.

    Refuses (StackError) unless every binary exists, is newer than every recipe file (the recipe
    did not change since it was built) and its ``--version`` names the recipe's version.
    ``build.json`` records ``built_by: <note> (<source>)``.
    """
    rec = recipe(repo, component)
    cached = cached_build(repo, cache_dir, component)
    if cached is not None:
        return cached
    newest_recipe = max((repo / f).stat().st_mtime for f in rec.files)
    bare = rec.version.lstrip("v")
    for binary in rec.binaries:
        path = source / binary
        if not os.access(path, os.X_OK):
            raise StackError(f"adopt {component}", str(path), "no such executable")
        if path.stat().st_mtime < newest_recipe:
            raise StackError(
                f"adopt {component}", str(path), "older than the recipe: it may not match; rebuild"
            )
    for name in BUILD_FILES.get(component, ()):
        if not (source / name).is_file():
            raise StackError(f"adopt {component}", str(source / name), "no such file")
    main = source / rec.binaries[0]
    try:
        out = subprocess.run([str(main), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"adopt {component}", str(main), f"--version failed: {exc}") from exc
    if out.returncode != 0 or bare not in out.stdout + out.stderr:
        raise StackError(
            f"adopt {component}",
            str(main),
            f"--version does not report {rec.version} (status {out.returncode})",
        )
    final = rec.directory(cache_dir)
    tmp = _staging(final)
    for name in (*rec.binaries, *BUILD_FILES.get(component, ())):
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source / name, tmp / name)
        except OSError:
            shutil.copy2(source / name, tmp / name)
    built_by = f"{note} ({source})"
    info = {
        "component": component,
        "version": rec.version,
        "recipe_hash": rec.hash12,
        "recipe_files": list(rec.files),
        "binaries": list(rec.binaries),
        "seconds": seconds,
        "built_by": built_by,
        "adopted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _finish(tmp, final, info)
    return BuildRecord(component, rec.version, str(final), seconds, False, built_by)
