"""The command-line tools the manifests need: kustomize (or ``kubectl kustomize``) and kubectl.

Looked up on ``PATH`` from the ``env`` the caller passes (the CLI passes ``os.environ``; core
code never reads the environment), else the kubectl the local pipeline has already built, from
the build cache under :func:`~tracecheck.config.default_cache_dir`. Never built here: that
would start a kube-apiserver Go build (minutes, no progress) behind ``tracecheck stack render``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from tracecheck.config import default_cache_dir
from tracecheck.errors import ConfigError, TracecheckError

__all__ = ["find_kustomize", "kubectl_command", "local_kubectl"]


def _path(env: Mapping[str, str] | None) -> str:
    return (env or {}).get("PATH", os.defpath)


def find_kustomize(env: Mapping[str, str] | None = None) -> list[str]:
    """The command prefix that renders a kustomization: ``kustomize build`` or
    ``kubectl kustomize`` from ``PATH`` in ``env`` (None: the default search path), else the
    kubectl the local pipeline has built.

    Raises :class:`ConfigError` with an install hint when there is none.
    """
    path = _path(env)
    for name, args in (("kustomize", ["build"]), ("kubectl", ["kustomize"])):
        found = shutil.which(name, path=path)
        if found:
            return [found, *args]
    local = local_kubectl(env)
    if local is not None:
        return [local, "kustomize"]
    raise ConfigError(
        "kustomize",
        "PATH",
        "neither kustomize nor kubectl found; install kubectl (e.g. apt-get install kubectl, or "
        "`tracecheck stack local up`, which builds one) or kustomize",
    )


def local_kubectl(env: Mapping[str, str] | None = None) -> str | None:
    """The kubectl the local pipeline already built (in the build cache of ``env``), if any."""
    # build.py alone knows the cache key (the wrapper module's go.mod/go.sum hash).
    from tracecheck.stack.local.build import cached_build
    from tracecheck.stack.local.paths import find_repo_root

    try:
        record = cached_build(find_repo_root(), default_cache_dir(env or {}), "kube-apiserver")
    except (TracecheckError, OSError):
        return None
    if record is None:
        return None
    binary = Path(record.directory) / "kubectl"
    return str(binary) if binary.is_file() else None


def kubectl_command(env: Mapping[str, str] | None = None) -> str:
    """kubectl from ``PATH`` in ``env``, else the local pipeline's; ConfigError with a hint."""
    found = shutil.which("kubectl", path=_path(env)) or local_kubectl(env)
    if found is None:
        raise ConfigError(
            "kubectl",
            "PATH",
            "kubectl not found; install it, or run `tracecheck stack local up` (builds one)",
        )
    return found
