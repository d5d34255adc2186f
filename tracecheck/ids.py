"""Trace and span IDs: parse any spelling a backend uses, compare as bytes, print as hex.

One trace ID travels through the pipeline in three spellings:

* OTLP protobuf: 16 raw bytes (span IDs: 8);
* Tempo's trace-by-ID JSON: proto3 JSON, so **base64** (``"CSCPj2v0UkJjHavLBtfJxg=="``;
  docs/reference/tempo.md §4.2, grafana/tempo#5437);
* Tempo's search JSON and exemplar labels: **hex with leading zeros stripped**
  (``util.TraceIDToHexString`` trims ``"0"``; docs/reference/tempo.md §5.3 and §11.3), so
  about one random ID in 256 does not equal its 32-character form as a string.

Comparing strings is therefore wrong; :func:`parse_trace_id` turns every spelling into the same
16 bytes, and :func:`same_id` compares those. Hex parsing follows Tempo's ``hexStringToID``: case
is ignored, at most 32 digits, shorter input is left-padded with zeros (an odd length gets a
leading ``0``).

>>> trace_id_hex(parse_trace_id("d2e8"))
'0000000000000000000000000000d2e8'
>>> same_id("00ab" + "0" * 28, "ab" + "0" * 28)
True
"""

from __future__ import annotations

import base64
import binascii
import string
from typing import Literal

__all__ = [
    "SPAN_ID_BYTES",
    "TRACE_ID_BYTES",
    "IDEncoding",
    "InvalidID",
    "parse_id",
    "parse_span_id",
    "parse_trace_id",
    "same_id",
    "span_id_hex",
    "stripped_hex",
    "trace_id_hex",
]

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8

IDEncoding = Literal["auto", "hex", "base64"]

_HEX = frozenset(string.hexdigits)


class InvalidID(ValueError):
    """The value is not a trace or span ID in any supported spelling.

    A plain ``ValueError``: callers translate it at their boundary (a user's argument becomes a
    :class:`~tracecheck.errors.QueryError`, a backend's answer a
    :class:`~tracecheck.errors.ProtocolError`).
    """


def parse_id(value: bytes | bytearray | str, size: int, *, encoding: IDEncoding = "auto") -> bytes:
    """``value`` as exactly ``size`` bytes.

    * ``bytes``: at most ``size`` bytes, left-padded with zeros.
    * ``str`` with ``encoding="hex"``: up to ``2*size`` hex digits, left-padded (Tempo's rule).
    * ``str`` with ``encoding="base64"``: standard or URL-safe alphabet, padding optional; must
      decode to exactly ``size`` bytes.
    * ``encoding="auto"``: hex when every character is a hex digit and it fits, else base64.
      Tempo's base64 IDs always carry ``=`` padding, so they are never mistaken for hex.

    Raises :class:`InvalidID` with a one-line reason.
    """
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
        if not raw or len(raw) > size:
            raise InvalidID(f"expected 1 to {size} bytes, got {len(raw)}")
        return raw.rjust(size, b"\0")
    if not isinstance(value, str):
        raise InvalidID(f"expected bytes or str, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise InvalidID("empty ID")
    if encoding == "hex":
        return _from_hex(text, size)
    if encoding == "base64":
        return _from_base64(text, size)
    if all(c in _HEX for c in text):
        if len(text) <= 2 * size:
            return _from_hex(text, size)
        try:  # too long for hex: only base64 can still make sense of it
            return _from_base64(text, size)
        except InvalidID:
            return _from_hex(text, size)  # raises, with the hex-length reason
    return _from_base64(text, size)


def _from_hex(text: str, size: int) -> bytes:
    if len(text) > 2 * size:
        raise InvalidID(f"{_show(text)} has {len(text)} hex digits, more than {2 * size}")
    for pos, char in enumerate(text):
        if char not in _HEX:
            raise InvalidID(f"{_show(text)}: invalid hex character {char!r} at position {pos}")
    if len(text) % 2:
        text = "0" + text
    return bytes.fromhex(text).rjust(size, b"\0")


def _from_base64(text: str, size: int) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    altchars = b"-_" if ("-" in text or "_" in text) else None
    try:
        raw = base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidID(f"{_show(text)} is neither hex nor base64") from None
    if len(raw) != size:
        raise InvalidID(f"{_show(text)} decodes to {len(raw)} bytes, expected {size}")
    return raw


def _show(text: str) -> str:
    return repr(text if len(text) <= 48 else text[:45] + "...")


def parse_trace_id(value: bytes | bytearray | str, *, encoding: IDEncoding = "auto") -> bytes:
    """A trace ID (hex of any length up to 32, base64, or bytes) as 16 bytes."""
    return parse_id(value, TRACE_ID_BYTES, encoding=encoding)


def parse_span_id(value: bytes | bytearray | str, *, encoding: IDEncoding = "auto") -> bytes:
    """A span ID (hex of any length up to 16, base64, or bytes) as 8 bytes."""
    return parse_id(value, SPAN_ID_BYTES, encoding=encoding)


def trace_id_hex(value: bytes | bytearray | str) -> str:
    """A trace ID in its canonical form: 32 lowercase hex digits."""
    return parse_trace_id(value).hex()


def span_id_hex(value: bytes | bytearray | str) -> str:
    """A span ID in its canonical form: 16 lowercase hex digits."""
    return parse_span_id(value).hex()


def stripped_hex(value: bytes | bytearray | str, size: int = TRACE_ID_BYTES) -> str:
    """The ID as Tempo's search API prints it: lowercase hex, leading zeros trimmed (§5.3)."""
    return parse_id(value, size).hex().lstrip("0")


def same_id(
    a: bytes | bytearray | str, b: bytes | bytearray | str, size: int = TRACE_ID_BYTES
) -> bool:
    """Whether two IDs, in any spelling, are the same ``size``-byte ID.

    An unparseable value is simply not equal (``False``), so a probe comparing a backend's
    answer with the expected ID never raises on a malformed answer.
    """
    try:
        return parse_id(a, size) == parse_id(b, size)
    except InvalidID:
        return False
