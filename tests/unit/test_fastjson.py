"""The native JSON decoder (``fastjson``) against ``json.loads``' path in ``codecs.decode_json``:
for every generated body, valid or hostile, the same matrix bit for bit or the same error (type,
status code, message); the common numeric shapes taken natively; and their decoding's memory
bounded per byte of body (json.loads' objects cost ~20 bytes per byte)."""

from __future__ import annotations

import json
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infermodes.errors import InfermodesError
from infermodes.predict import codecs, fastjson
from tests.support.hostile import PROFILES

profiles = pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())

Outcome = tuple[object, ...]


def outcome(
    body: bytes, num_features: int | None, max_rows: int | None, max_values: int
) -> Outcome:
    try:
        matrix = codecs.decode(
            body, codecs.JSON, num_features, max_rows=max_rows, max_values=max_values
        )
    except InfermodesError as exc:
        return (type(exc).__name__, exc.status_code, str(exc))
    return (matrix.dtype.str, matrix.shape, matrix.flags.c_contiguous, matrix.tobytes())


def both(
    body: bytes, num_features: int | None, max_rows: int | None, max_values: int
) -> tuple[Outcome, Outcome]:
    """(json.loads' path, the path with the native decoder in front of it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fastjson, "shape", lambda body: None)
        old = outcome(body, num_features, max_rows, max_values)
    return old, outcome(body, num_features, max_rows, max_values)


def test_the_extension_was_built_by_the_install() -> None:
    """scripts/install.sh builds it (hatch_build.py); without it JSON costs ~10x the memory."""
    assert fastjson.AVAILABLE


# Numbers as JSON writes them, and as careless or hostile clients do.
NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.integers(-(2**70), 2**70).map(str),
    st.integers(0, 400).map(lambda n: "9" * n),
    st.integers(0, 60).map(lambda n: "0." + "0" * n + "1"),
    st.integers(0, 60).map(lambda n: "1" + "0" * n + "e-" + str(n)),
    st.sampled_from(
        [
            "0", "-0", "-0.0", "0e0", "-0e-0", "1E+2", "1e-400", "-1e-400", "1e39", "1e38",
            "3.4028235e38", "-3.4028235e38", "3.4028236e38", "3.4028235677973366e38",
            "340282356779733661637539395458142568448", "340282356779733661637539395458142568447",
            "1e308", "1e309", "1e0000000000000000000002", "9007199254740993",
            "18446744073709551617", "0.1", "1.5e-45", "1e-46", "NaN", "Infinity",
            "-Infinity", "nan", "inf", "01", "-01", "00", "1.", ".5", "+1", "1e", "1e+",
            "-", "1.5e5.2", "1_0", "0x10", "\uff11", "true", "false", "null", "null",
            "null", '"1"', '""', "[]", "[1]", "{}", '{"features": [1]}', "nul", "nulls",
        ]
    ),
)  # fmt: skip
SPACE = st.sampled_from(["", "", "", " ", "\n", "\r\n", "\t", "\x0c", "\x0b", "\u00a0", "  \n"])


@st.composite
def rows_text(draw: st.DrawFn, width: int) -> list[str]:
    count = draw(st.integers(0, 4))
    rows = []
    for _ in range(count):
        ragged = draw(st.integers(0, 9)) == 0
        size = draw(st.integers(0, 5)) if ragged else width
        values = [draw(NUMBERS) for _ in range(size)]
        gap = draw(SPACE)
        row = "[" + gap + ("," + draw(SPACE)).join(values) + draw(SPACE) + "]"
        kind = draw(st.integers(0, 7))
        if kind == 1:
            row = '{"features": ' + row + "}"
        elif kind == 2:
            row = '{"features":' + row + ', "id": 1}'
        elif kind == 3:
            row = '{"features": [0], "features": ' + row + "}"
        elif kind == 4:
            row = '{"feature": ' + row + "}"
        rows.append(row)
    return rows


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    width = draw(st.integers(1, 4))
    rows = draw(rows_text(width))
    listed = "[" + draw(SPACE) + ("," + draw(SPACE)).join(rows) + draw(SPACE) + "]"
    key = draw(st.sampled_from(['"instances"'] * 4 + ['"\\u0069nstances"', '"Instances"']))
    one_row = "[" + ", ".join(draw(NUMBERS) for _ in range(width)) + "]"
    text = draw(
        st.sampled_from(
            [
                listed,
                "{" + key + ":" + draw(SPACE) + listed + "}",
                '{"instances": [[0]], "instances": ' + listed + "}",
                '{"instances": ' + listed + ', "x": null}',
                one_row,
                '{"features": ' + one_row + "}",
                '{"features": ' + one_row + ', "instances": ' + listed + "}",
                "[" + listed + "]",
                listed + listed,
                draw(NUMBERS),
            ]
        )
    )
    text = draw(SPACE) + text + draw(SPACE)
    body = text.encode("utf-8")
    mutation = draw(st.integers(0, 9))
    if mutation == 0:
        body = body[: draw(st.integers(0, len(body)))]
    elif mutation == 1:
        at = draw(st.integers(0, len(body)))
        byte = draw(st.sampled_from([b"\x00", b"\x80", b"\xff", b"\xc3", b"\xe9", b"\xef\xbb\xbf"]))
        body = body[:at] + byte + body[at:]
    elif mutation == 2:
        body = codecs.UTF8_BOM * draw(st.integers(1, 2)) + body
    elif mutation == 3:
        body = text.encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32-be"])))
    elif mutation == 4:
        body = b"[" * draw(st.integers(2, 1200)) + body
    return body


@profiles
def test_the_native_path_answers_as_json_loads_does(profile: object) -> None:
    @given(
        body=json_bodies(),
        num_features=st.sampled_from([None, None, 1, 2, 3]),
        max_rows=st.sampled_from([None, 2, 200_000]),
        max_values=st.sampled_from([3, 1 << 24]),
    )
    def check(body: bytes, num_features: int | None, max_rows: int | None, max_values: int) -> None:
        old, new = both(body, num_features, max_rows, max_values)
        assert new == old, body[:200]

    profile(check)()  # type: ignore[operator]


@profiles
def test_the_common_numeric_shapes_are_read_natively(profile: object) -> None:
    """Rows of numbers (any float32, integers, exponents) and nulls, in every accepted shape."""
    value = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=32))

    @given(
        rows=st.integers(1, 5).flatmap(
            lambda width: st.lists(st.lists(value, min_size=width, max_size=width), min_size=1)
        ),
        shape=st.sampled_from(["instances", "features", "list", "objects"]),
        indent=st.sampled_from([None, 0, 2]),
    )
    def check(rows: list[list[float | None]], shape: str, indent: int | None) -> None:
        document: object = {
            "instances": {"instances": rows},
            "features": {"features": rows[0]},
            "list": rows if len(rows) > 1 else rows[0],
            "objects": [{"features": row} for row in rows],
        }[shape]
        body = json.dumps(document, indent=indent).encode()
        assert fastjson.shape(body) is not None
        old, new = both(body, None, None, 1 << 24)
        assert new == old

    profile(check)()  # type: ignore[operator]


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1, 2], [3, 4]]}',
        b'\xef\xbb\xbf {"instances":[{"features":[1,null]},[-0,1e-400]]} \r\n',
        b"[1, 2]",
        b'{"features": [1, 2]}',
        b"[[1, 2], [340282346638528859811704183484516925440, 9007199254740993]]",
        b"[[1e0000000000000000000002, -0.0]]",
    ],
)
def test_bodies_read_natively_decode_as_before(body: bytes) -> None:
    assert fastjson.shape(body) is not None
    old, new = both(body, 2, None, 1 << 24)
    assert new == old and isinstance(new[0], str)


@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"[[]]",
        b"[[1], [1, 2]]",
        b"[[1e39]]",
        b"[[340282356779733661637539395458142568448]]",
        b'[["1"]]',
        b"[[NaN]]",
        b"[[01]]",
        b'{"instances": [[1]], "instances": [[2]]}',
        b'{"instances": [[1]], "x": 1}',
        b'{"\\u0069nstances": [[1]]}',
        b"\xef\xbb\xbf\xef\xbb\xbf[[1]]",
        b"[[1]]\x00",
        b"[[1]] [[1]]",
        b"[[[1]]]",
        b"[" + b"9" * 200 + b"]",
    ],
)
def test_what_the_native_path_does_not_take_goes_to_json_loads(body: bytes) -> None:
    assert fastjson.shape(body) is None
    old, new = both(body, None, None, 1 << 24)
    assert new == old


def test_a_numeric_body_decodes_within_six_bytes_per_byte() -> None:
    """json.loads made a float and a list entry per value: ~20 bytes of memory per body byte
    for rows of one-digit features; the native path needs the matrix (4 bytes a value)."""
    body = json.dumps({"instances": [[i % 10] * 8 for i in range(40_000)]}).encode()
    tracemalloc.start()
    try:
        matrix = codecs.decode(body, codecs.JSON, 8, max_rows=200_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert matrix.shape == (40_000, 8)
    assert peak <= 6 * len(body), peak / len(body)
