"""The UBJSON reader on hand-written bytes: every marker decoded and skipped, typed arrays as
views of the bytes, member spans, and hostile input refused with UBJError only."""

from __future__ import annotations

import contextlib
import struct
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infermodes.errors import ModelLoadError
from infermodes.predict.safe_pickle import booster_model_from_pickle
from infermodes.predict.ubj import MAX_DEPTH, UBJError, UBJReader, member
from tests.unit.test_legacy_models import booster_pickle


def text(value: str, marker: bytes = b"S") -> bytes:
    """A string (or, without a marker, an object's key) with a one-byte length."""
    encoded = value.encode()
    return marker + b"U" + bytes([len(encoded)]) + encoded


def key(name: str) -> bytes:
    return text(name, marker=b"")


SCALARS = [
    (b"i\xff", -1),
    (b"U\xff", 255),
    (b"I" + struct.pack(">h", -300), -300),
    (b"l" + struct.pack(">i", -70_000), -70_000),
    (b"L" + struct.pack(">q", -(2**40)), -(2**40)),
    (b"d" + struct.pack(">f", 1.5), 1.5),
    (b"D" + struct.pack(">d", 0.1), 0.1),
    (b"T", True),
    (b"F", False),
    (b"Z", None),
    (b"Ca", "a"),
    (text("abc"), "abc"),
    (text("é"), "é"),
    (text("12.50", marker=b"H"), "12.50"),  # high precision: its decimal text
    (text(""), ""),
]
CONTAINERS = [
    (b"[]", []),
    (b"{}", {}),
    (b"[i\x01T" + text("x") + b"Z]", [1, True, "x", None]),
    (b"[NNi\x01N]", [1]),  # no-ops are no values
    (b"[#U\x03i\x01TZ", [1, True, None]),
    (b"[$S#U\x02U\x01aU\x01b", ["a", "b"]),
    (b"[$C#U\x02ab", ["a", "b"]),
    (b"[[$T#U\x01]", [[True]]),  # values of no bytes, counted only to the bytes left
    (b"[$[#U\x02#U\x01i\x01]", [[1], []]),  # elements are arrays without their "["
    (b"{" + key("a") + b"i\x01" + key("b") + b"[i\x02]}", {"a": 1, "b": [2]}),
    (b"{#U\x02" + key("a") + b"T" + key("b") + b"{}", {"a": True, "b": {}}),
    (b"{$i#U\x02" + key("a") + b"\x01" + key("b") + b"\x02", {"a": 1, "b": 2}),
    (b"{$S#U\x01" + key("a") + b"U\x01x", {"a": "x"}),
]
NUMBER_FORMATS = {"i": "b", "U": "B", "I": "h", "l": "i", "L": "q", "d": "f", "D": "d"}
# one of each kind of value and container: every prefix of it is truncated
DOCUMENT = (
    b"{"
    + key("Config")
    + b"{#U\x02"
    + key("name")
    + text("gbtree")
    + key("flags")
    + b"[$T#U\x02"
    + key("Model")
    + b"{"
    + key("trees")
    + b"[#U\x01{$i#U\x01"
    + key("n")
    + b"\x05"
    + key("weights")
    + b"[$d#L"
    + struct.pack(">qff", 2, 0.5, -1.0)
    + key("digits")
    + text("3.14", marker=b"H")
    + key("c")
    + b"Cz"
    + key("rest")
    + b"[ZNFI\x01\x00l\x00\x00\x00\x01L"
    + bytes(8)
    + b"D"
    + bytes(8)
    + b"]}"
    + key("after")
    + b"U\x07}"
)


@pytest.mark.parametrize(("data", "expected"), SCALARS + CONTAINERS)
def test_every_marker_decodes_and_skips_to_its_end(data: bytes, expected: Any) -> None:
    reader = UBJReader(data)
    assert reader.value() == expected
    assert reader.at == len(data)
    assert UBJReader(data).skip() == (0, len(data))


def test_no_ops_before_a_value_are_not_part_of_it() -> None:
    assert UBJReader(b"NNi\x05").value() == 5
    assert UBJReader(b"NNi\x05").skip() == (2, 4)


@pytest.mark.parametrize("marker", NUMBER_FORMATS)
@pytest.mark.parametrize("count", [b"U\x03", b"L" + struct.pack(">q", 3)])
def test_typed_arrays_of_numbers_are_views_of_the_bytes(marker: str, count: bytes) -> None:
    layout = ">" + NUMBER_FORMATS[marker]
    values = [1, 0, 2] if marker == "U" else [-1, 0, 2]
    data = b"[$" + marker.encode() + b"#" + count + struct.pack(">" + layout[1] * 3, *values)
    array = UBJReader(data).value()
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.dtype(layout)
    assert array.tolist() == values
    assert array.base is data  # no copy
    assert UBJReader(data).skip() == (0, len(data))


def test_a_document_and_its_members() -> None:
    document = UBJReader(DOCUMENT).document()
    model = document["Model"]
    assert document["Config"] == {"name": "gbtree", "flags": [True, True]}
    assert model["trees"] == [{"n": 5}]
    assert model["weights"].tolist() == [0.5, -1.0]
    assert model["digits"] == "3.14"
    assert model["rest"] == [None, False, 256, 1, 0, 0.0]
    model_bytes = member(DOCUMENT, "Model")
    assert model_bytes is not None
    assert model_bytes.startswith(b"{")
    assert DOCUMENT.endswith(model_bytes + key("after") + b"U\x07}")
    assert UBJReader(model_bytes).document()["weights"].tolist() == [0.5, -1.0]
    assert member(DOCUMENT, "after") == b"U\x07"
    assert member(DOCUMENT, "absent") is None
    with pytest.raises(UBJError, match="is not an object"):
        UBJReader(b"[]").document()


def test_a_member_is_found_without_reading_what_follows_it() -> None:
    assert member(b"{" + key("Model") + b"i\x01" + key("junk") + b"X", "Model") == b"i\x01"


def test_a_typed_objects_member_gets_its_marker_back() -> None:
    data = b"{$i#U\x02" + key("a") + b"\x01" + key("b") + b"\x02"
    assert member(data, "b") == b"i\x02"
    assert member(b"{#U\x01" + key("a") + b"Z", "a") == b"Z"


@pytest.mark.parametrize("size", range(len(DOCUMENT)))
def test_every_truncation_is_refused(size: int) -> None:
    data = DOCUMENT[:size]
    with pytest.raises(UBJError):
        UBJReader(data).value()
    with pytest.raises(UBJError):
        UBJReader(data).skip()
    with pytest.raises(UBJError):
        member(data, "absent")


@pytest.mark.parametrize(
    "data",
    [
        b"[#L" + struct.pack(">q", 2**62) + b"i\x01",
        b"[$d#L" + struct.pack(">q", 2**62) + bytes(16),
        b"[$Z#l" + struct.pack(">i", 10**9) + bytes(16),  # elements of no bytes: refused too
        b"{#L" + struct.pack(">q", 2**62) + b"}",
        b"SL" + struct.pack(">q", 2**62) + b"abc",
        b"SI" + struct.pack(">h", -1) + b"abc",
        b"HU\x05123",
    ],
)
def test_counts_beyond_the_bytes_left_are_refused(data: bytes) -> None:
    for read in (UBJReader(data).value, UBJReader(data).skip):
        with pytest.raises(UBJError, match=r"has a count of -?\d+ with \d+ bytes left"):
            read()


@pytest.mark.parametrize("opening", [b"[", b"{U\x01a", b"[#U\x01", b"[$[#U\x01"])
def test_deep_nesting_is_refused_not_a_recursion_error(opening: bytes) -> None:
    data = opening * 1_000_000
    for read in (UBJReader(data).value, UBJReader(data).skip):
        with pytest.raises(UBJError, match=f"nests containers more than {MAX_DEPTH} deep"):
            read()
    assert sys.getrecursionlimit() // 4 > MAX_DEPTH


def test_nesting_up_to_the_limit_is_read() -> None:
    nested = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    value = UBJReader(nested).value()
    for _ in range(MAX_DEPTH - 1):
        value = value[0]
    assert value == []
    with pytest.raises(UBJError, match="deep"):
        UBJReader(b"[" + nested + b"]").value()


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"X", "unknown marker 0x58"),
        (b"[i\x01X]", "unknown marker 0x58"),
        (b"{" + key("a") + b"}", "unknown marker 0x7d"),
        (b"]", "unknown marker 0x5d"),
        (b"[$X#U\x01", "container of unknown type 0x58"),
        (b"[$N#U\x01", "container of unknown type 0x4e"),
        (b"[$i\x01\x02]", "typed container without a count"),
        (b"Sd\x00\x00\x00\x01", "'d' for a length"),
        (b"{i\x01a}", "unknown marker 0x7d"),  # a key's length must not be read as "}"
        (b"SU\x01\xff", "not UTF-8"),
        (b"C\xff", "not UTF-8"),
    ],
)
def test_malformed_values_are_named(data: bytes, problem: str) -> None:
    with pytest.raises(UBJError, match=problem) as error:
        UBJReader(data).value()
    assert isinstance(error.value, ValueError)
    assert 0 <= error.value.at <= len(data)


@given(st.binary(max_size=64))
def test_any_bytes_are_read_or_refused_with_ubj_error(data: bytes) -> None:
    for read in (UBJReader(data).value, UBJReader(data).skip):
        with contextlib.suppress(UBJError):
            read()


@given(st.lists(st.tuples(st.integers(0, len(DOCUMENT) - 1), st.integers(0, 255)), max_size=3))
def test_corrupted_documents_are_read_or_refused_with_ubj_error(
    edits: list[tuple[int, int]],
) -> None:
    data = bytearray(DOCUMENT)
    for position, value in edits:
        data[position] = value
    with contextlib.suppress(UBJError):
        UBJReader(bytes(data)).value()
    with contextlib.suppress(UBJError):
        member(bytes(data), "absent")


@pytest.mark.parametrize(
    ("handle", "message"),
    [
        (b"{" + key("Model") + b"[" * 1_000_000, "UBJ nests containers more than 64 deep"),
        (b"{" + key("Model") + b"SL" + struct.pack(">q", 2**62), "UBJ has a count of"),
        (b"{" + key("Config") + b"X", "UBJ has an unknown marker 0x58"),
    ],
)
def test_a_hostile_pickled_ubj_is_a_model_load_error(handle: bytes, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        booster_model_from_pickle(booster_pickle({"handle": handle}))


def test_a_pickled_ubj_snapshot_gives_its_model() -> None:
    model = b"{" + key("learner") + b"{}}"
    handle = b"{" + key("Config") + b"{}" + key("Model") + model + b"}"
    assert booster_model_from_pickle(booster_pickle({"handle": handle})) == model
