"""Endpoint substitutions: the shipped Kubernetes configs, rendered for the local pipeline.

The configuration files under ``stack/`` live once and feed both the Kubernetes ConfigMaps and the
local pipeline (one source). ``stack/local/substitutions.yaml`` lists, per file, the literal
``from -> to`` replacements that make the local file; they are applied in order, each ``from`` at
all of its occurrences. A ``from`` that no longer occurs means the shipped file drifted from the
local pipeline: rendering raises :class:`~tracecheck.errors.ConfigError` rather than silently
running something else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tracecheck.errors import ConfigError

__all__ = [
    "DEFAULT_SAMPLING_RATE",
    "SUBSTITUTIONS_FILE",
    "Substitution",
    "apply_substitutions",
    "load_substitutions",
    "render_local_config",
]

SUBSTITUTIONS_FILE = "stack/local/substitutions.yaml"

# A rate at which an unprivileged client's burst of 50 requests finds a sampled trace with near
# certainty (1 - 0.75**50 ~ 1 - 6e-7); privileged callers with a sampled traceparent are always
# traced whatever the rate (docs/reference/apiserver.md §4.2).
DEFAULT_SAMPLING_RATE = 250_000

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True, slots=True)
class Substitution:
    """One literal replacement: every occurrence of ``old`` becomes ``new`` (placeholders
    such as ``${STATE}`` in ``new`` expand at render time)."""

    old: str
    new: str


def load_substitutions(repo: Path) -> dict[str, tuple[Substitution, ...]]:
    """Read ``stack/local/substitutions.yaml``: repo-relative file name -> its substitutions."""
    import yaml

    path = repo / SUBSTITUTIONS_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("local-stack", str(path), f"cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError("local-stack", str(path), f"invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("local-stack", str(path), "expected a mapping of file -> substitutions")
    out: dict[str, tuple[Substitution, ...]] = {}
    for name, rules in data.items():
        if not isinstance(name, str) or not isinstance(rules, list):
            raise ConfigError("local-stack", str(path), f"{name!r}: expected a list of from/to")
        subs = []
        for i, rule in enumerate(rules):
            if (
                not isinstance(rule, dict)
                or set(rule) != {"from", "to"}
                or not isinstance(rule["from"], str)
                or not isinstance(rule["to"], str)
                or not rule["from"]
            ):
                raise ConfigError(
                    "local-stack", str(path), f"{name} rule {i + 1}: expected from: and to: strings"
                )
            subs.append(Substitution(rule["from"], rule["to"]))
        out[name] = tuple(subs)
    return out


def apply_substitutions(
    text: str,
    substitutions: Sequence[Substitution],
    variables: Mapping[str, str],
    *,
    source: str = "",
) -> str:
    """Apply ``substitutions`` to ``text`` in order, expanding ``${NAME}`` from ``variables``.

    Raises :class:`ConfigError` (naming ``source``) when a ``from`` string does not occur, or a
    placeholder has no value.
    """
    for sub in substitutions:
        if sub.old not in text:
            raise ConfigError(
                "local-stack",
                source or "config",
                f"substitution {sub.old!r} no longer occurs; the shipped file changed, update "
                f"{SUBSTITUTIONS_FILE}",
            )
        text = text.replace(sub.old, _expand(sub.new, variables, source))
    return text


def _expand(value: str, variables: Mapping[str, str], source: str) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            raise ConfigError(
                "local-stack", source or SUBSTITUTIONS_FILE, f"unknown placeholder ${{{name}}}"
            )
        return variables[name]

    return _PLACEHOLDER.sub(one, value)


def render_local_config(
    name: str,
    *,
    repo: Path | None = None,
    state_dir: Path | str = "${STATE}",
    sampling_rate: int = DEFAULT_SAMPLING_RATE,
    text: str | None = None,
) -> str:
    """The local pipeline's version of the shipped config ``name`` (repo-relative, e.g.
    ``stack/collector/config.yaml``), after the substitutions in ``stack/local/substitutions.yaml``.

    ``text`` renders other content (e.g. a ConfigMap's data) with the same substitutions instead
    of reading the file. ``state_dir`` defaults to the literal ``${STATE}``, so the result does
    not depend on the machine.

    >>> print(render_local_config("stack/apiserver/tracing-config.yaml").splitlines()[-1])
    samplingRatePerMillion: 250000
    """
    if repo is None:
        from tracecheck.stack.local.paths import find_repo_root

        repo = find_repo_root()
    table = load_substitutions(repo)
    if name not in table:
        raise ConfigError(
            "local-stack", str(repo / SUBSTITUTIONS_FILE), f"no substitutions listed for {name}"
        )
    if text is None:
        path = repo / name
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError("local-stack", str(path), f"cannot read: {exc.strerror}") from exc
    if not 0 <= sampling_rate <= 1_000_000:
        # TracingConfiguration validation (docs/reference/apiserver.md §2): 0..1,000,000.
        raise ConfigError(
            "local-stack", "--sampling-rate", f"must be 0..1000000, not {sampling_rate}"
        )
    variables = {"STATE": str(state_dir), "SAMPLING_RATE": str(sampling_rate)}
    return apply_substitutions(text, table[name], variables, source=name)
