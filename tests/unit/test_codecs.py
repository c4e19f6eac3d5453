import math

import numpy as np
import pytest

from infermodes.errors import InvalidInput, NotAcceptable, UnsupportedContentType
from infermodes.predict import codecs


def test_one_csv_row() -> None:
    rows = codecs.decode(b"1,2.5,-3e-2\n", codecs.CSV, 3)
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, np.array([[1, 2.5, -0.03]], dtype=np.float32))


def test_many_csv_rows_with_crlf_and_blank_lines() -> None:
    rows = codecs.decode(b"1,2\r\n3,4\r\n\r\n5,6", codecs.CSV, 2)
    np.testing.assert_array_equal(rows, [[1, 2], [3, 4], [5, 6]])


def test_empty_csv_fields_are_missing_values() -> None:
    rows = codecs.decode(b"1,,3", codecs.CSV, 3)
    assert math.isnan(rows[0, 1])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"1,abc,3", "row 1, column 2: cannot parse 'abc'"),
        (b"1,2,3\n4,5,x", "row 2, column 3: cannot parse 'x'"),
        (b"1,2,3\n4,5", "row 2: expected 3 features, got 2"),
        (b"1,2", "row 1: expected 3 features, got 2"),
        (b"", "empty request body"),
        (b"\n\n", "empty request body"),
    ],
)
def test_bad_csv_names_row_and_column(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        codecs.decode(body, codecs.CSV, 3)


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1, 2], [3, 4]]}',
        b'{"instances": [{"features": [1, 2]}, {"features": [3, 4]}]}',
        b"[[1, 2], [3, 4]]",
    ],
)
def test_json_shapes(body: bytes) -> None:
    np.testing.assert_array_equal(codecs.decode(body, codecs.JSON, 2), [[1, 2], [3, 4]])


def test_json_single_row_and_null() -> None:
    rows = codecs.decode(b"[1, null]", codecs.JSON, 2)
    assert rows.shape == (1, 2) and math.isnan(rows[0, 1])
    np.testing.assert_array_equal(codecs.decode(b'{"features": [1, 2]}', codecs.JSON, 2), [[1, 2]])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b'{"rows": []}', "needs an 'instances' list"),
        (b'{"instances": 3}', "'instances' must be a list"),
        (b'{"instances": [[1, 2], [3, "x"]]}', 'row 2, column 2: expected a number, got "x"'),
        (b'{"instances": [[1, true]]}', "row 1, column 2: expected a number, got true"),
        (b'{"instances": [[1, 2], 5]}', "row 2: expected a list of numbers, got int"),
        (b'{"instances": [{"values": [1]}]}', "row 1: an object row needs a 'features' list"),
        (b'{"instances": [[1, 2, 3]]}', "row 1: expected 2 features, got 3"),
        (b'{"instances": []}', "no rows"),
        (b'"text"', "must be an object"),
    ],
)
def test_bad_json_is_named(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        codecs.decode(body, codecs.JSON, 2)


def test_libsvm_with_and_without_label() -> None:
    rows = codecs.decode(b"7 0:1.5 2:3\n1:2\n", codecs.LIBSVM, 3)
    assert rows.shape == (2, 3)
    assert rows[0, 0] == 1.5 and math.isnan(rows[0, 1]) and rows[0, 2] == 3
    assert math.isnan(rows[1, 0]) and rows[1, 1] == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"1 0:1 x:2", "row 1, column 2: expected index:value"),
        (b"0:1 5:2", "row 1, column 2: feature index 5 is out of range; expected 3 features"),
        (b"0:1 1:abc", "row 1, column 2: cannot parse 'abc'"),
        (b"", "empty request body"),
    ],
)
def test_bad_libsvm(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        codecs.decode(body, codecs.LIBSVM, 3)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, codecs.CSV),
        ("text/csv; charset=utf-8", codecs.CSV),
        ("application/json", codecs.JSON),
        ("text/libsvm", codecs.LIBSVM),
        ("application/x-libsvm", codecs.LIBSVM),
    ],
)
def test_content_types(header: str | None, expected: str) -> None:
    assert codecs.content_type_of(header) == expected


def test_unsupported_content_type() -> None:
    with pytest.raises(UnsupportedContentType, match="'image/png'"):
        codecs.content_type_of("image/png")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, codecs.CSV),
        ("*/*", codecs.CSV),
        ("application/json", codecs.JSON),
        ("text/html, application/json;q=0.9", codecs.JSON),
        ("application/*", codecs.JSON),
    ],
)
def test_accept(header: str | None, expected: str) -> None:
    assert codecs.accept_of(header) == expected


def test_unacceptable_accept() -> None:
    with pytest.raises(NotAcceptable, match="text/html"):
        codecs.accept_of("text/html")


def test_encode_csv_and_json_keep_order() -> None:
    predictions = np.array([1.5, 2.25, -3.0], dtype=np.float32)
    assert codecs.encode(predictions, codecs.CSV) == b"1.5\n2.25\n-3.0\n"
    assert codecs.encode(predictions, codecs.JSON) == (
        b'{"predictions": [{"score": 1.5}, {"score": 2.25}, {"score": -3.0}]}'
    )


def test_encode_multi_output() -> None:
    predictions = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    assert codecs.encode(predictions, codecs.CSV) == b"0.25,0.75\n0.5,0.5\n"
    assert b'{"score": [0.25, 0.75]}' in codecs.encode(predictions, codecs.JSON)
