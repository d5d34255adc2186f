"""A Python stand-in for Grafana Tempo 2.9 (monolithic, single tenant) for the local pipeline.

Grafana Tempo is AGPL-3.0 and cannot run here; this package reproduces the wire behaviour that
tempo-api.md (../shared/reference) documents, section by section, and nothing else. It never
imports ``tracecheck``: it is the system tracecheck is tested against. See README.md for the
behaviours, their citations and what is not matched.

Run: ``PYTHONPATH=stack/local python -m tempo_standin --config FILE``.
"""

from __future__ import annotations

# tempo-api.md §3: /api/status/buildinfo reports the version; the revision says what this is.
VERSION = "2.9.0"
REVISION = "tracecheck-standin (Python stand-in, not Grafana Tempo)"
TENANT = "single-tenant"  # tempo-api.md §2: fake auth injects this tenant when auth is off.

__all__ = ["REVISION", "TENANT", "VERSION"]
