"""Trace/span ID helpers: every spelling the pipeline uses maps to the same bytes."""

from __future__ import annotations

import base64

import pytest

from tracecheck.ids import (
    InvalidID,
    parse_id,
    parse_span_id,
    parse_trace_id,
    same_id,
    span_id_hex,
    stripped_hex,
    trace_id_hex,
)

# From tempo-vulture's testdata (docs/reference/tempo.md §4.2): base64 of a 16-byte trace ID.
TEMPO_B64 = "CSCPj2v0UkJjHavLBtfJxg=="
TEMPO_HEX = base64.b64decode(TEMPO_B64).hex()


def test_base64_from_tempo_by_id_json_equals_its_hex() -> None:
    assert TEMPO_HEX == "09208f8f6bf45242631dabcb06d7c9c6"
    assert parse_trace_id(TEMPO_B64) == bytes.fromhex(TEMPO_HEX)
    assert trace_id_hex(TEMPO_B64) == TEMPO_HEX


def test_search_ids_with_leading_zeros_stripped_compare_equal() -> None:
    full = "00000af7651916cd43dd8448eb211c80"
    stripped = full.lstrip("0")  # what /api/search prints (docs/reference/tempo.md §5.3)
    assert stripped == "af7651916cd43dd8448eb211c80"
    assert parse_trace_id(stripped) == bytes.fromhex(full)
    assert same_id(stripped, full)
    assert same_id(stripped, bytes.fromhex(full))
    assert stripped_hex(bytes.fromhex(full)) == stripped


def test_odd_length_hex_gets_a_leading_zero_and_left_pad() -> None:
    assert trace_id_hex("abc") == "00000000000000000000000000000abc"
    assert span_id_hex("f") == "000000000000000f"


def test_hex_is_case_insensitive_and_output_is_lowercase() -> None:
    assert trace_id_hex("ABCDEF0123456789ABCDEF0123456789") == "abcdef0123456789abcdef0123456789"


def test_span_id_base64_with_padding() -> None:
    raw = bytes.fromhex("563d623c76514f8e")
    encoded = base64.b64encode(raw).decode()
    assert encoded.endswith("=")
    assert parse_span_id(encoded) == raw
    assert span_id_hex(encoded) == "563d623c76514f8e"


def test_urlsafe_and_unpadded_base64() -> None:
    raw = bytes(range(250, 256)) + bytes(range(10))
    assert parse_trace_id(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw


def test_bytes_are_left_padded_and_bounded() -> None:
    assert parse_span_id(b"\x01") == b"\0" * 7 + b"\x01"
    with pytest.raises(InvalidID, match="expected 1 to 8 bytes, got 9"):
        parse_span_id(b"\x01" * 9)
    with pytest.raises(InvalidID):
        parse_trace_id(b"")


def test_explicit_hex_rejects_non_hex_with_position() -> None:
    with pytest.raises(InvalidID, match=r"invalid hex character 'x' at position 2"):
        parse_trace_id("abxd", encoding="hex")


def test_too_long_hex_is_rejected_with_its_length() -> None:
    with pytest.raises(InvalidID, match="33 hex digits, more than 32"):
        parse_trace_id("1" * 33)


def test_garbage_is_neither_hex_nor_base64() -> None:
    with pytest.raises(InvalidID, match="neither hex nor base64"):
        parse_trace_id("not an id!")
    with pytest.raises(InvalidID, match="decodes to 3 bytes, expected 16"):
        parse_trace_id("zzzz")
    with pytest.raises(InvalidID, match="empty"):
        parse_trace_id("   ")


def test_ambiguous_all_hex_string_is_read_as_hex() -> None:
    # 22 characters that are valid hex and valid unpadded base64: hex wins (documented).
    text = "0123456789abcdef012345"
    assert parse_trace_id(text) == bytes.fromhex(text.rjust(32, "0"))
    assert parse_trace_id(text, encoding="base64") == base64.b64decode(text + "==")


def test_same_id_is_false_for_garbage_and_for_different_ids() -> None:
    assert not same_id("garbage!", TEMPO_HEX)
    assert not same_id("1", "2")
    assert same_id("1", "01", size=8)


def test_parse_id_generic_size() -> None:
    assert parse_id("ff", 4) == b"\0\0\0\xff"
