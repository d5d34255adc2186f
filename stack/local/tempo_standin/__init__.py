"""A Python stand-in for Grafana Tempo 2.9 (monolithic) for the local pipeline.

Grafana Tempo is AGPL-3.0 and cannot run here; this package reproduces the wire behaviour that
Tempo 2.9.0's documentation and source define (https://grafana.com/docs/tempo/v2.9.x/ and
github.com/grafana/tempo at tag v2.9.0, read for facts; no code copied), and nothing else. It
never imports ``tracecheck``: it is the system tracecheck is tested against. See README.md for
the behaviours, their citations and what is not matched.

Run: ``PYTHONPATH=stack/local python -m tempo_standin --config FILE``.
"""

from __future__ import annotations

# /api/status/buildinfo reports the version (cmd/tempo/build); the revision says what this is.
VERSION = "2.9.0"
REVISION = "tracecheck-standin (Python stand-in, not Grafana Tempo)"
# pkg/util/auth.go FakeTenantID: the tenant the fake auth middleware injects when multitenancy
# is off (cmd/tempo/app/fake_auth.go).
TENANT = "single-tenant"

__all__ = ["REVISION", "TENANT", "VERSION"]
