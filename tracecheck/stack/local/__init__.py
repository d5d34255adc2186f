"""The local pipeline from real parts: ``tracecheck stack local up|down|status|env``.

etcd, Prometheus 3.8, the Tempo 2.9 stand-in, two OpenTelemetry Collectors, kube-apiserver,
kube-controller-manager and kube-scheduler 1.34 and kwok's simulated nodes on 127.0.0.1, built
from Go modules into a cache outside the repository, supervised as detached processes with their
state under one directory. See ``stack/local/README.md``.
"""

from __future__ import annotations

from tracecheck.stack.local.build import BuildRecord, adopt_build
from tracecheck.stack.local.paths import default_cache_dir, default_state_dir, find_repo_root
from tracecheck.stack.local.pipeline import (
    COMPONENTS,
    ComponentStatus,
    LocalStack,
    StackStatus,
    shell_exports,
)
from tracecheck.stack.local.substitutions import (
    DEFAULT_SAMPLING_RATE,
    apply_substitutions,
    load_substitutions,
    render_local_config,
)
from tracecheck.stack.local.supervisor import StartFailure

__all__ = [
    "COMPONENTS",
    "DEFAULT_SAMPLING_RATE",
    "BuildRecord",
    "ComponentStatus",
    "LocalStack",
    "StackStatus",
    "StartFailure",
    "adopt_build",
    "apply_substitutions",
    "default_cache_dir",
    "default_state_dir",
    "find_repo_root",
    "load_substitutions",
    "render_local_config",
    "shell_exports",
]
