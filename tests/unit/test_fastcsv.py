"""The native CSV module (``infermodes.predict.fastcsv``) against the codecs it stands in for:
every value it writes is ``repr(float(value))``, byte for byte, and every chunk it parses gives
the codecs' matrix bit for bit, or is handed back to the codecs (which name the error)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infermodes.errors import InvalidInput
from infermodes.predict import codecs, fastcsv
from infermodes.predict.stream import decode_chunk
from tests.support.hostile import PROFILES

profiles = pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())


def test_the_extension_was_built_by_the_install() -> None:
    """scripts/install.sh builds it (hatch_build.py); without it everything is 4x slower."""
    assert fastcsv.AVAILABLE


def _edge_values() -> np.ndarray:
    """Zeros, specials, both ends of the native range and of float32/float64, powers of two
    (whose lower rounding gap is half the upper), numbers with few digits."""
    values = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-10, 9.999999999999999e-11, 1e16]
    values += [9999999999999998.0, 1e-4, 9.999999999999999e-05, 5e-324, 1.7976931348623157e308]
    values += [2.0**e for e in range(-60, 60)] + [0.1, 0.455, 7.25, 123456.0, 1e15, 3.4e38]
    values += [float(np.float32(2.0**e)) * 1.0000001 for e in range(-40, 60)]
    return np.array(values + [-v for v in values], dtype=np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_format_writes_what_codecs_encode_writes(dtype: type) -> None:
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**63, 200_000, dtype=np.uint64)
    scattered = bits.astype(np.uint32 if dtype is np.float32 else np.uint64).view(dtype)
    typical = (rng.random(200_000) * 10.0 ** rng.integers(-12, 17, 200_000)).astype(dtype)
    with np.errstate(over="ignore"):  # float64's largest values are float32's infinity
        edges = _edge_values().astype(dtype)
    for values in (scattered, typical, edges):
        assert fastcsv.encode(values, codecs.CSV) == codecs.encode(values, codecs.CSV)
        rows = values[: len(values) // 4 * 4].reshape(-1, 4)
        assert fastcsv.encode(rows, codecs.CSV) == codecs.encode(rows, codecs.CSV)


def test_other_outputs_go_to_the_codecs() -> None:
    values = np.array([0.5, 1.25], dtype=np.float32)
    for accept in (codecs.JSON, codecs.JSONLINES):
        assert fastcsv.encode(values, accept) == codecs.encode(values, accept)


_DIGITS = st.text("0123456789", min_size=0, max_size=22)
_NUMBER = st.builds(
    lambda sign, whole, point, fraction, exponent: sign + whole + point + fraction + exponent,
    st.sampled_from(["", "-", "+"]),
    _DIGITS,
    st.sampled_from(["", "."]),
    _DIGITS,
    st.sampled_from(["", "e5", "E-3", "e+40", "e-50", "e", "e-", "e400", "e-400", "e38"]),
)
_FIELD = st.one_of(
    _NUMBER,
    st.builds(
        lambda pad, n, end: pad + n + end,
        st.sampled_from([" ", "\t", ""]),
        _NUMBER,
        st.sampled_from([" ", ""]),
    ),
    st.sampled_from(["", " ", "nan", "-NaN", "inf", "NA", "1_0", "0x1", "1 2", ".", "-"]),
    st.from_regex(r"[0-9.eE+\- ]{1,8}", fullmatch=True),
)
_LINE_END = st.sampled_from(["\n", "\r\n", "\n\n", "\n \t\n", "\r", ""])


@profiles
def test_parse_reads_what_the_codecs_read(profile: object) -> None:
    @given(
        width=st.sampled_from([1, 3, 8]),
        rows=st.lists(st.lists(_FIELD, min_size=1, max_size=9), min_size=1, max_size=6),
        ends=st.lists(_LINE_END, min_size=6, max_size=6),
    )
    def check(width: int, rows: list[list[str]], ends: list[str]) -> None:
        chunk = "".join(",".join(row) + end for row, end in zip(rows, ends, strict=False))
        data = chunk.encode()
        parsed = fastcsv.parse(data, width)
        try:
            expected = codecs.decode(data, codecs.CSV, width)
        except InvalidInput:
            assert parsed is None  # the codecs name the error
            return
        if parsed is not None:
            assert parsed.shape == expected.shape
            assert parsed.tobytes() == expected.tobytes()  # bit for bit, NaN and -0.0 too

    profile(check)()  # type: ignore[operator]


def test_clean_rows_are_parsed_natively() -> None:
    """What the batch bench reads (Abalone-like rows written with %.6g) and its edge cases
    never leave the native parser, and read as the codecs read them."""
    rng = np.random.default_rng(1)
    rows = rng.random((5_000, 8)) * 10.0 ** rng.integers(-8, 8, (5_000, 8))
    lines = [",".join(f"{value:.6g}" for value in row) for row in rows]
    lines += ["1,,3,nan, 4 ,-0,1e-3,.5", "12345678901234567890123,0.1,2,3,4,5,6,7.", ""]
    data = ("\r\n".join(lines) + "\n").encode()
    parsed = fastcsv.parse(data, 8)
    assert parsed is not None
    assert parsed.tobytes() == codecs.decode(data, codecs.CSV, 8).tobytes()


@pytest.mark.parametrize(
    "chunk", [b"1,2\n3,4,5\n", b"1,2,x\n", b"1,2,3\r4,5,6\n", b"1,2,1e39\n", b"1,2,nan5\n"]
)
def test_what_it_hands_back_gets_the_codecs_message(chunk: bytes) -> None:
    assert fastcsv.parse(chunk, 3) is None
    with pytest.raises(InvalidInput) as whole:
        codecs.decode(chunk, codecs.CSV, 3)
    with pytest.raises(InvalidInput) as streamed:
        decode_chunk(chunk, codecs.CSV, 3, 1)
    assert str(streamed.value) == str(whole.value)


@pytest.mark.parametrize("data", [b"", b"\n", b"a", b"a\nb", b"\n\n\r\n", b"x\n" * 1000 + b"y"])
def test_count_lines_counts_what_bytes_count_counts(data: bytes) -> None:
    assert fastcsv.count_lines(data) == data.count(b"\n")


@pytest.mark.parametrize(
    "chunk",
    [
        b"0.12345678,0.123456789012345678901\n",  # a run of eight digits, then more than 19
        b"1.00000000000000000000000001,2\n",
        b"0.1234,5.67",  # the last bytes, no newline: fewer than eight left to read
        b"12345678.87654321,.5\r\n",
        b"0.1234\xfa9,1\n",  # a byte above 0xF9 right after digits
        b"0.12\xff\xff\xff\xff\xff\xff\xff,1\n",
        b"0.123:5678,1\n",
        b"0.1/345678,1\n",
    ],
)
def test_digit_runs_read_eight_at_a_time_end_where_the_codecs_say(chunk: bytes) -> None:
    parsed = fastcsv.parse(chunk, 2)
    try:
        expected = codecs.decode(chunk, codecs.CSV, 2)
    except InvalidInput:
        assert parsed is None
        return
    assert parsed is not None and parsed.tobytes() == expected.tobytes()
