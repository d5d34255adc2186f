"""Where the local pipeline keeps its state and its built binaries, and where the checkout is."""

from __future__ import annotations

from pathlib import Path

from tracecheck.config import default_cache_dir, default_state_dir
from tracecheck.errors import ConfigError

__all__ = ["default_cache_dir", "default_state_dir", "find_repo_root"]


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
