"""Exit codes and the one exception tree of tracecheck.

An exception means "could not check"; a check that ran and found a problem is data
(``CheckResult`` with status FAIL), never an exception.

    TracecheckError                 base; never raised itself
    ├── UsageError          (2)     a command line that makes no sense (unknown --only name, ...)
    ├── ConfigError         (4)     bad configuration: unreadable file, bad value, unknown context
    │   └── QueryError      (4)     a query rejected locally or by the backend (TraceQL 400,
    │                               PromQL bad_data, unknown saved query, missing parameter)
    ├── BackendError        (3)     a backend could not be asked
    │   ├── Unreachable             connection refused, DNS failure, TLS handshake, timeout
    │   ├── AuthError               401 / 403: credentials missing, wrong or not allowed
    │   ├── HTTPStatusError         any other unexpected HTTP status or gRPC code
    │   ├── NotReady                the backend answers but says it is not ready
    │   └── ProtocolError           the answer cannot be decoded (garbage JSON, wrong shape)
    └── StackError          (3)     the local pipeline could not be built, started or stopped

Every message is one line naming the system, the address and the cause, e.g.
``tempo at http://localhost:3200/api/search: HTTP 500: internal error``. Messages never contain
credentials: clients pass addresses through :func:`redact_url` and never include headers.
"""

from __future__ import annotations

import enum
import re

__all__ = [
    "AuthError",
    "BackendError",
    "ConfigError",
    "ExitCode",
    "HTTPStatusError",
    "NotReady",
    "ProtocolError",
    "QueryError",
    "StackError",
    "TracecheckError",
    "Unreachable",
    "UsageError",
    "excerpt",
    "redact_url",
]


class ExitCode(enum.IntEnum):
    """Process exit codes; stable, documented in the README and in ``tracecheck --help``."""

    OK = 0  # every check passed (WARN and SKIP allowed)
    CHECK_FAILED = 1  # at least one check failed
    USAGE = 2  # the command line is wrong
    BACKEND = 3  # a backend was unreachable or erroring, or the local pipeline failed
    CONFIG = 4  # configuration or query error
    INTERRUPTED = 130  # Ctrl-C
    INTERNAL = 70  # a bug in tracecheck (EX_SOFTWARE); the message says how to get a traceback


class TracecheckError(Exception):
    """Base of every error tracecheck raises on purpose.

    ``system`` names the component (``tempo``, ``prometheus``, ``collector``, ``apiserver``,
    ``config``, ``local-stack``...), ``address`` where it was reached (a URL, ``host:port`` or a
    file path) and ``cause`` what went wrong, in a few words.
    """

    exit_code: ExitCode = ExitCode.BACKEND

    def __init__(self, system: str, address: str, cause: str) -> None:
        self.system = system
        self.address = address
        self.cause = one_line(cause)
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" at {self.address}" if self.address else ""
        return f"{self.system}{where}: {self.cause}"


class UsageError(TracecheckError):
    """The command line asks for something that does not exist (e.g. ``--only nosuchcheck``)."""

    exit_code = ExitCode.USAGE


class ConfigError(TracecheckError):
    """Configuration cannot be used: unreadable or invalid file, bad value, unknown context."""

    exit_code = ExitCode.CONFIG


class QueryError(ConfigError):
    """A query was rejected, locally (PromQL parse, point limit) or by the backend (400)."""


class BackendError(TracecheckError):
    """A backend could not be asked; the check could not be made."""

    exit_code = ExitCode.BACKEND


class Unreachable(BackendError):
    """Connection refused, name resolution failed, TLS handshake failed, or the deadline passed."""


class AuthError(BackendError):
    """Credentials refused (HTTP 401/403, gRPC UNAUTHENTICATED/PERMISSION_DENIED)."""


class HTTPStatusError(BackendError):
    """An unexpected status: ``status`` holds the HTTP status or the gRPC code name."""

    def __init__(self, system: str, address: str, cause: str, status: int | str = 0) -> None:
        self.status = status
        super().__init__(system, address, cause)


class NotReady(BackendError):
    """The backend answered its readiness endpoint with "not ready"."""


class ProtocolError(BackendError):
    """The answer could not be decoded (not JSON, wrong shape, bad protobuf)."""


class StackError(TracecheckError):
    """The local pipeline could not be built, started or stopped."""

    exit_code = ExitCode.BACKEND


_WS = re.compile(r"\s+")


def one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace so a message stays on one line, and cap its length."""
    text = _WS.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def excerpt(body: bytes | str, limit: int = 200) -> str:
    """A short, single-line excerpt of a response body for an error message."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", errors="replace")
    body = one_line(body, limit)
    return body or "(empty body)"


def redact_url(url: str) -> str:
    """Drop userinfo (``user:password@``) and the query string's values from a URL for display."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
