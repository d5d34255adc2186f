"""Where the local pipeline keeps its state and its built binaries, and where the checkout is."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tracecheck.errors import ConfigError

__all__ = ["default_cache_dir", "default_state_dir", "find_repo_root"]


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME")
    return Path(home) if home else Path.home()


def default_state_dir(env: Mapping[str, str]) -> Path:
    """``$TRACECHECK_STATE_DIR``, else ``${XDG_STATE_HOME:-~/.local/state}/tracecheck/local``.

    Logs, pid records, PKI, the kubeconfig, rendered configs and data dirs all live under it.
    """
    if env.get("TRACECHECK_STATE_DIR"):
        return Path(env["TRACECHECK_STATE_DIR"]).expanduser()
    base = env.get("XDG_STATE_HOME") or str(_home(env) / ".local" / "state")
    return Path(base).expanduser() / "tracecheck" / "local"


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """``$TRACECHECK_CACHE_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/tracecheck``.

    Built binaries go to ``<cache>/bin/<component>-<version>-<hash12>/``, outside the repository.
    """
    if env.get("TRACECHECK_CACHE_DIR"):
        return Path(env["TRACECHECK_CACHE_DIR"]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(_home(env) / ".cache")
    return Path(base).expanduser() / "tracecheck"


def _is_root(path: Path) -> bool:
    return (path / "stack" / "local" / "build" / "build.sh").is_file() and (
        path / "stack" / "local" / "substitutions.yaml"
    ).is_file()


def find_repo_root(start: Path | None = None) -> Path:
    """The checkout holding ``stack/local``: searched upwards from ``start`` (default: the
    working directory, then this package's location). Raises :class:`ConfigError` if none."""
    starts = [start] if start is not None else [Path.cwd(), Path(__file__).resolve().parent]
    for begin in starts:
        begin = begin.resolve()
        for candidate in (begin, *begin.parents):
            if _is_root(candidate):
                return candidate
    where = str(start) if start is not None else str(Path.cwd())
    raise ConfigError(
        "local-stack",
        where,
        "no tracecheck checkout (stack/local/build/build.sh) here or above; "
        "run from a clone of the repository",
    )
