"""Streaming prediction: chunks of whole lines, row numbers of the whole input in errors,
JSON output spliced from chunks, and the deadline checked between chunks."""

import io
import json

import numpy as np
import pytest

from infermodes.errors import InvalidInput, InvocationTimeout, PayloadTooLarge
from infermodes.predict import codecs
from infermodes.predict.model import XGBoostModel
from infermodes.predict.stream import iter_line_chunks, predict_stream, shift_rows
from tests.unit.async_samples import tiny_model


@pytest.fixture(scope="module")
def model() -> XGBoostModel:
    return tiny_model(2)


ROWS = np.random.default_rng(3).random((1000, 3), dtype=np.float32)
CSV = b"".join(b",".join(repr(float(v)).encode() for v in row) + b"\n" for row in ROWS)


def run(model: XGBoostModel, body: bytes, content_type: str = codecs.CSV, **kw: object) -> bytes:
    sink = io.BytesIO()
    options = {
        "accept": codecs.CSV,
        "timeout": 60.0,
        "chunk_bytes": 1024,
        "max_json_bytes": 1 << 20,
    } | kw
    predict_stream(model, io.BytesIO(body), sink, content_type=content_type, **options)  # type: ignore[arg-type]
    return sink.getvalue()


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_chunks_are_whole_lines_numbered_from_the_input(chunk: int) -> None:
    body = b"a\nbb\n\n\nccc\ndd"
    chunks = list(iter_line_chunks(io.BytesIO(body), chunk))
    assert b"".join(c for _, c in chunks).split() == body.split()
    for first, piece in chunks:
        assert body.splitlines()[first - 1] == piece.splitlines()[0]
        assert piece.endswith(b"\n") or piece == b"dd"


def test_a_line_without_end_is_refused_not_buffered() -> None:
    with pytest.raises(PayloadTooLarge, match="line 1 is longer than 16384 bytes"):
        list(iter_line_chunks(io.BytesIO(b"x" * 100_000), 1024))


def test_no_chunk_is_longer_than_its_bound_and_a_longer_line_is_refused_naming_it() -> None:
    """The async worker bounds a chunk by its memory share per invocation (``input_caps_of``):
    chunks of whole lines are cut to it, a line that does not fit is refused with the bound."""
    lines = b"".join(b"%d,2,3\n" % number for number in range(1000))
    chunks = list(iter_line_chunks(io.BytesIO(lines), 1024, 100))
    assert b"".join(chunk for _, chunk in chunks) == lines
    assert max(len(chunk) for _, chunk in chunks) <= 100
    long = lines[:36] + b"1," * 60 + b"3\n" + lines  # six lines, then one of 122 bytes
    with pytest.raises(PayloadTooLarge, match="line 7 is longer than 100 bytes"):
        list(iter_line_chunks(io.BytesIO(long), 1024, 100))


def test_a_last_line_of_exactly_the_bound_without_its_newline_is_taken() -> None:
    """The bound is the most a chunk holds: a last line of that many bytes, its newline
    missing, fits (it was refused before its end was read); one byte more does not."""
    lines = b"1,2\n" + b"3" * 100
    assert [chunk for _, chunk in iter_line_chunks(io.BytesIO(lines), 1024, 100)] == [
        b"1,2\n",
        b"3" * 100,
    ]
    with pytest.raises(PayloadTooLarge, match="line 2 is longer than 100 bytes"):
        list(iter_line_chunks(io.BytesIO(lines + b"3"), 1024, 100))


@pytest.mark.parametrize("accept", [codecs.CSV, codecs.JSON])
def test_streamed_predictions_equal_one_shot_predictions(model: XGBoostModel, accept: str) -> None:
    want = codecs.encode(model.predict(ROWS), accept)
    got = run(model, CSV, accept=accept)
    if accept == codecs.JSON:
        assert json.loads(got) == json.loads(want)
    else:
        assert got == want


def test_libsvm_and_json_inputs(model: XGBoostModel) -> None:
    want = codecs.encode(model.predict(ROWS[:5]), codecs.CSV)
    libsvm = b"".join(
        b" ".join(f"{i}:{float(v)!r}".encode() for i, v in enumerate(row)) + b"\n"
        for row in ROWS[:5]
    )
    assert run(model, libsvm, codecs.LIBSVM) == want
    assert run(model, json.dumps(ROWS[:5].tolist()).encode(), codecs.JSON) == want


def test_errors_name_the_row_of_the_whole_input(model: XGBoostModel) -> None:
    lines = CSV.splitlines()
    lines[700] = b"1,2"
    with pytest.raises(InvalidInput, match="^row 701: expected 3 features, got 2"):
        run(model, b"\n".join(lines))
    lines[700] = b"1,x,2"
    with pytest.raises(InvalidInput, match="^row 701, column 2: cannot parse 'x'"):
        run(model, b"\n".join(lines))


def test_missing_values_take_the_codec_path(model: XGBoostModel) -> None:
    got = run(model, b"1,,3\n")
    assert got == codecs.encode(model.predict(np.array([[1, np.nan, 3]], "f4")), codecs.CSV)


@pytest.mark.parametrize(
    ("body", "content_type", "error", "message"),
    [
        (b"\n \n", codecs.CSV, InvalidInput, "empty input"),
        (b"[" + b"1," * 600_000 + b"1]", codecs.JSON, PayloadTooLarge, "stream"),
    ],
)
def test_refusals(
    model: XGBoostModel, body: bytes, content_type: str, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        run(model, body, content_type)


def test_the_deadline_is_checked_between_chunks(model: XGBoostModel) -> None:
    with pytest.raises(InvocationTimeout, match="invocation timeout of -1"):
        run(model, CSV, timeout=-1.0)


def test_shift_rows() -> None:
    assert shift_rows("row 2, column 3: bad", 10) == "row 12, column 3: bad"
    assert shift_rows("malformed JSON", 10) == "malformed JSON"
