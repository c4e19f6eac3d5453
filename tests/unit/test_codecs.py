import contextlib
import json
import math
import tracemalloc
from collections.abc import Sequence

import numpy as np
import pytest

from infermodes.errors import InvalidInput, NotAcceptable, PayloadTooLarge, UnsupportedContentType
from infermodes.predict import codecs, recordio
from tests.support import recordio as recordio_support


def test_one_csv_row() -> None:
    rows = codecs.decode(b"1,2.5,-3e-2\n", codecs.CSV, 3)
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, np.array([[1, 2.5, -0.03]], dtype=np.float32))


def test_many_csv_rows_with_crlf_and_blank_lines() -> None:
    rows = codecs.decode(b"1,2\r\n3,4\r\n\r\n5,6", codecs.CSV, 2)
    np.testing.assert_array_equal(rows, [[1, 2], [3, 4], [5, 6]])


@pytest.mark.parametrize("body", [b"1,2\r\n3,4\n", b"1,2", b"1,2\n"])
def test_a_utf8_byte_order_mark_before_the_first_row_is_skipped(body: bytes) -> None:
    """Spreadsheets save "CSV UTF-8" with one; JSON's reader skips it as well."""
    np.testing.assert_array_equal(
        codecs.decode(codecs.UTF8_BOM + body, codecs.CSV, 2), codecs.decode(body, codecs.CSV, 2)
    )
    with pytest.raises(InvalidInput, match="row 2, column 1: cannot parse"):
        codecs.decode(b"1,2\n" + codecs.UTF8_BOM + b"3,4", codecs.CSV, 2)  # only at the start


@pytest.mark.parametrize("body", [b"1 0:1 2:3\n1:2", b"0:1"])
def test_a_utf8_byte_order_mark_before_the_first_libsvm_row_is_skipped(body: bytes) -> None:
    """As before a CSV row: an editor saving "UTF-8 with BOM" wrote it, not the client."""
    np.testing.assert_array_equal(
        codecs.decode(codecs.UTF8_BOM + body, codecs.LIBSVM, 3),
        codecs.decode(body, codecs.LIBSVM, 3),
    )


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
        (b'{"instances": [[1, 2], 5]}', "row 2: expected a list of numbers, got a number"),
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
        (b"0:1 1:abc", "row 1, feature index 1: cannot parse 'abc'"),
        (b"1 2:abc", "row 1, feature index 2: cannot parse 'abc'"),
        (b"0:1\n2:1 0:inf", "row 2, feature index 0: infinite values are refused"),
        (b"2:1e39", "row 1, feature index 2: '1e39' is beyond the range of float32"),
        (b"", "empty request body"),
    ],
)
def test_bad_libsvm(body: bytes, message: str) -> None:
    """A bad value is named by its feature index, not by its token's place in the row."""
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
        ("text/csv; header=absent", codecs.CSV),
    ],
)
def test_content_types(header: str | None, expected: str) -> None:
    assert codecs.content_type_of(header) == expected


@pytest.mark.parametrize(
    "header", ["text/csv; header=present", 'text/csv;charset=utf-8; Header="Present"']
)
def test_a_csv_header_declared_present_is_refused_naming_it(header: str) -> None:
    """RFC 4180's parameter says row 1 is a header: refused as such, not read as data and
    answered "row 1, column 1: cannot parse 'age'"."""
    with pytest.raises(UnsupportedContentType, match="header=present.*send the rows without it"):
        codecs.content_type_of(header)


HEADER_HINT = "no field of this row is a number: header rows are not supported"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"Sex,Length,Diameter", "row 1, column 1: cannot parse 'Sex'"),  # the one-row path
        (b"\n Sex , Length,Diameter\n1,2,3", "row 2, column 1: cannot parse 'Sex'"),
        (b"Sex,Length\n1,2,3", "row 1: expected 3 features, got 2"),
        (b'"a","b",', "row 1, column 1: cannot parse '\"a\"'"),
        (b"Sex;Length;Diameter", "row 1: expected 3 features, got 1"),  # no number: a header
    ],
)
def test_a_first_row_without_a_number_is_named_as_a_header_row(body: bytes, message: str) -> None:
    """Sent without ``header=present``, a header row was answered "cannot parse 'Sex'" alone;
    the platform's container reads none either."""
    with pytest.raises(InvalidInput) as raised:
        codecs.decode(body, codecs.CSV, 3)
    assert str(raised.value).startswith(message)
    assert str(raised.value).endswith(f"{HEADER_HINT} (nor by the platform's container); "
                                      "send rows only")  # fmt: skip


@pytest.mark.parametrize(
    "body", [b"M,0.455,1", b"M,0.455,1\n1,2,3", b"1,2,3\nSex,Length,Diameter", b"nan,x,"]
)
def test_a_row_with_a_number_or_after_the_first_is_not_called_a_header(body: bytes) -> None:
    """A categorical value left unencoded (abalone's raw ``M``) is not a header row."""
    with pytest.raises(InvalidInput) as raised:
        codecs.decode(body, codecs.CSV, 3)
    assert HEADER_HINT not in str(raised.value)


QUOTED = "the model reads numbers only, and quotes in CSV are not parsed"


@pytest.mark.parametrize(
    ("body", "where", "field"),
    [
        (b'"1,5",0.3,0.2', "row 1, column 1", '"1,5"'),  # the one-row path
        (b'0.1,"2,5",0.3\n1,2,3', "row 1, column 2", '"2,5"'),
        (b'1,2,3\n\n"1,5",0.3,0.2\n4,5,6', "row 3, column 1", '"1,5"'),  # after a row read
        (b'1,2,"3"\n4,5,6', "row 1, column 3", '"3"'),  # no comma in it: as no number
        (b'1,2,"3', "row 1, column 3", '"3'),  # not closed
    ],
)
@pytest.mark.parametrize("num_features", [3, None])
@pytest.mark.parametrize("budgets", [None, {codecs.CSV: 1 << 30}])  # the server's, batch's
def test_a_quoted_field_is_refused_as_such_naming_its_row_and_column(
    body: bytes, where: str, field: str, num_features: int | None, budgets: dict[str, int] | None
) -> None:
    """``"1,5",0.3,0.2`` was refused as "expected 3 features, got 4" (or "cannot parse '"1'"),
    which sends the user counting columns: the model reads numbers, and quotes are not parsed
    (the platform's XGBoost container parses none either)."""
    with pytest.raises(InvalidInput) as raised:
        codecs.decode(body, codecs.CSV, num_features, memory_budgets=budgets)
    assert str(raised.value).startswith(f"{where}: the quoted field {field!r} is not taken: ")
    assert QUOTED in str(raised.value)


ABALONE_ROW = [b"1", b"0", b"0", b"0.455", b"0.365", b"0.095", b"0.514", b"0.2245", b"0.101"]


@pytest.mark.parametrize(
    ("delimiter", "shown"), [(b";", "';'"), (b"\t", "'\\t'"), (b"|", "'|'"), (b" ; ", "';'")]
)
@pytest.mark.parametrize("num_features", [9, None])
@pytest.mark.parametrize("rows", [1, 2])
def test_a_row_of_numbers_joined_by_another_delimiter_is_named_as_such(
    delimiter: bytes, shown: str, num_features: int | None, rows: int
) -> None:
    """It was blamed on a header row ("no field of this row is a number"): all its fields
    are numbers, joined by the wrong delimiter. The model server's and batch's decoder alike,
    with the model's width (the field count's error) or without (the parse's)."""
    row = delimiter.join(ABALONE_ROW)
    with pytest.raises(InvalidInput) as raised:
        codecs.decode(b"\n".join([row] * rows), codecs.CSV, num_features)
    first = "row 1: expected 9 features, got 1" if num_features else "row 1, column 1: cannot"
    assert str(raised.value).startswith(first)
    assert str(raised.value).endswith(
        f"; the row looks separated by {shown}, and CSV fields are separated by ','"
    )
    assert HEADER_HINT not in str(raised.value)


@pytest.mark.parametrize(
    "body",
    [
        b"1,5;2,3;0,4",  # a decimal comma and ';' between fields: two fields are runs of ';'
        b"id;1;2,3",  # an id column joined with the rest
        b"M;0.455;0.365",  # abalone's raw categorical column
        b"1;;2,x",  # an empty field between is a missing value, as in CSV
    ],
)
def test_a_run_of_numbers_in_any_field_names_the_delimiter(body: bytes) -> None:
    with pytest.raises(InvalidInput, match="the row looks separated by ';'"):
        codecs.decode(body, codecs.CSV, 3)


@pytest.mark.parametrize(
    "body", [b"Sex;Length;Diameter", b"a|b|c", b"x;1,y,z", b"1;a,2,3", b"a;b;1;2"]
)
def test_fields_joined_by_another_delimiter_but_not_numbers_are_not_named_so(
    body: bytes,
) -> None:
    """A header row joined by ';' is still a header row; one number in a field, or as many
    numbers as other words, is no run of numbers."""
    with pytest.raises(InvalidInput) as raised:
        codecs.decode(body, codecs.CSV, 3)
    assert "looks separated" not in str(raised.value)


def test_unsupported_content_type() -> None:
    with pytest.raises(UnsupportedContentType, match="'image/png'"):
        codecs.content_type_of("image/png")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, codecs.CSV),
        ("", codecs.CSV),
        (" ", codecs.CSV),  # blank, as an empty Content-Type: the default, not a 406
        (" , ,", codecs.CSV),
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


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"1,1_0,3", "row 1, column 2: cannot parse '1_0'"),
        (b"1,0x10,3", "row 1, column 2: cannot parse '0x10'"),
        (b"1,inf,3", "row 1, column 2: infinite values are refused"),
        (b"1,2,1e39", "row 1, column 3: '1e39' is beyond the range of float32"),
        (b"1,2,3\n4,5," + b"9" * 39, "row 2, column 3: '999"),
        (b"1,2,3\r4,5,6", "row 1: a carriage return inside a row"),
        (b"1,2,3\n4,5,6\r7,8,9\n", "row 2: a carriage return inside a row"),
    ],
)
def test_numbers_are_read_as_a_c_parser_would(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        codecs.decode(body, codecs.CSV, 3)


def test_nan_and_exponents_are_numbers() -> None:
    rows = codecs.decode(b"nan,-NaN,1e-3\r\n2E2,+.5,5.\r\n", codecs.CSV, 3)
    assert math.isnan(rows[0, 0]) and math.isnan(rows[0, 1])
    np.testing.assert_array_equal(rows[:, 2], np.array([1e-3, 5.0], dtype=np.float32))
    np.testing.assert_array_equal(rows[1, :2], [200, 0.5])


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"[1" + b"0" * 400 + b", 2, 3]", codecs.JSON, "column 1: the number is beyond"),
        (b"[1e39, 2, 3]", codecs.JSON, r"column 1: 1e\+39 is beyond"),
        (b"[NaN, 2, 3]", codecs.JSON, "NaN is not JSON"),
        (b"[" * 5000 + b"]" * 5000, codecs.JSON, "nested too deeply"),
        (b"1,2,3", codecs.LIBSVM, "row 1: the label '1,2,3' is not a number"),
        (b"0:1 0:2", codecs.LIBSVM, "row 1, column 2: feature index 0 appears twice"),
        (b"0:1 " + b"1" * 5000 + b":2", codecs.LIBSVM, "feature index 1111"),
    ],
)
def test_decoder_errors_are_invalid_input(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        codecs.decode(body, content_type, 3)


@pytest.mark.parametrize(
    ("body", "content_type", "limits", "message"),
    [
        (b"0\n" * 5, codecs.LIBSVM, {"max_rows": 4}, "5 rows; one request may carry at most 4"),
        (b"1,2,3\n" * 5, codecs.CSV, {"max_rows": 4}, "at most 4"),
        (b"[[1,2,3],[1,2,3]]", codecs.JSON, {"max_rows": 1}, "at most 1"),
        (b"[" + b"[]," * 9 + b"[]]", codecs.JSON, {"max_rows": 4}, "11 JSON arrays and objects"),
        (b"0\n" * 5, codecs.LIBSVM, {"max_values": 14}, "5 rows of 3 features make 15 values"),
    ],
)
def test_limits_are_413(
    body: bytes, content_type: str, limits: dict[str, int], message: str
) -> None:
    from infermodes.errors import PayloadTooLarge

    with pytest.raises(PayloadTooLarge, match=message):
        codecs.decode(body, content_type, 3, **limits)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("text/csv;q=0.1, application/json;q=0.9", codecs.JSON),
        ("text/csv;q=0, */*", codecs.JSON),
        ("*/*, application/json", codecs.JSON),
        ("application/json, text/csv", codecs.JSON),
        ("text/csv, application/json", codecs.CSV),
        ("application/*;q=0.5, text/*;q=0.4", codecs.JSON),
    ],
)
def test_accept_q_values(header: str, expected: str) -> None:
    assert codecs.accept_of(header) == expected


def test_bad_q_value_and_charset() -> None:
    with pytest.raises(InvalidInput, match="q must be a number from 0 to 1"):
        codecs.accept_of("text/csv;q=2")
    with pytest.raises(NotAcceptable):
        codecs.accept_of("text/csv;q=0")
    with pytest.raises(UnsupportedContentType, match="charset 'utf-16'"):
        codecs.content_type_of("text/csv; charset=utf-16")


@pytest.mark.parametrize(
    "chunk", [b"1,inf,3\n", b"1,2,1e39\n", b"1,2,3\r4,5,6\n", b"1,\x0c2,3\n", b"1,1_0,3\n"]
)
def test_streamed_chunks_are_refused_like_request_bodies(chunk: bytes) -> None:
    """The async worker and the batch runner read chunks with numpy's parser first; what it
    reads more leniently than the codecs must still be refused, with the codecs' message."""
    from infermodes.predict.stream import decode_chunk

    with pytest.raises(InvalidInput) as whole:
        codecs.decode(chunk, codecs.CSV, 3)
    with pytest.raises(InvalidInput) as streamed:
        decode_chunk(chunk, codecs.CSV, 3, 1)
    assert str(streamed.value) == str(whole.value)


@pytest.mark.parametrize(
    ("body", "row"),
    [(b"1,2,3\r4,5,6\n7,8,9", 1), (b"1,2,3\r4,5,6", 1), (b"1,2,3\r\r\n4,5,6", 1),
     (b"1,2,3\n4,5,6\r7,8,9", 2)],
)  # fmt: skip
def test_a_lone_cr_is_named_in_any_row_by_every_reader(body: bytes, row: int) -> None:
    """With its memory known (a worker in a pod, or under ``up``) the first row's field count
    was checked before the CR: a CR in row 1 answered "expected 3 features, got 5". The
    request's reader, the native one (it hands the body back) and batch's chunk reader, with
    and without a memory budget, answer the same."""
    from infermodes.predict import fastcsv
    from infermodes.predict.stream import decode_chunk

    said = f"^row {row}: a carriage return inside a row; end rows with LF$"
    budgets = {codecs.CSV: 1 << 30}
    assert fastcsv.parse(body, 3) is None
    for memory_budgets in (None, budgets):
        with pytest.raises(InvalidInput, match=said):
            codecs.decode(body, codecs.CSV, 3, memory_budgets=memory_budgets)
        with pytest.raises(InvalidInput, match=said):
            decode_chunk(body, codecs.CSV, 3, 1, memory_budgets)
    lines = body.replace(b"\r\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    crlf = b"\r\n".join(lines)  # the same rows ended as the message asks: read
    assert codecs.decode(crlf, codecs.CSV, 3, memory_budgets=budgets).shape == (len(lines), 3)


def test_a_json_body_without_a_feature_count_is_held_to_max_values_too() -> None:
    """Found by the property test's random seed: with no feature count the first row gives
    the width, and the matrix it makes was not checked against ``max_values``."""
    body = b'{"instances":[[null,0,0,null,0,0,0,0,null,0,0,0,0,0,0,null]]}'
    with pytest.raises(PayloadTooLarge, match="1 rows of 16 features make 16 values"):
        codecs.decode(body, "application/json", None, max_rows=None, max_values=1)
    assert codecs.decode(body, "application/json", None, max_values=16).shape == (1, 16)


@pytest.mark.parametrize("content_type", [codecs.CSV, codecs.JSON, codecs.LIBSVM, codecs.RECORDIO])
def test_a_gzip_body_is_named_as_such(content_type: str) -> None:
    """A gzip body sent without Content-Encoding (which is refused) was answered 'row 1: a
    carriage return inside a row' or "'utf-8' codec can't decode byte 0x8b": the bytes, not
    the mistake."""
    import gzip

    body = gzip.compress(b"1,2,3\n")
    gzipped = r"^the body is gzip-compressed \(it starts with 1f 8b\)"
    with pytest.raises(InvalidInput, match=gzipped):
        codecs.decode(body, content_type, 3)


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"1,2,3\n4,5,caf\xe9", codecs.CSV, "row 2, column 3: 'caf\\\\xe9' is not UTF-8"),
        (b"\xe9,2,3", codecs.CSV, "row 1, column 1: '\\\\xe9' is not UTF-8"),
        (b"1 0:1 1:\xe9", codecs.LIBSVM, "row 1, feature index 1: '\\\\xe9' is not UTF-8"),
        (b"\xe9 0:1", codecs.LIBSVM, "row 1: the label '\\\\xe9' is not UTF-8"),
        (b"1 \xe9:1", codecs.LIBSVM, "row 1, column 1: '\\\\xe9:1' is not UTF-8"),
    ],
    ids=["csv", "csv-first-field", "libsvm-value", "libsvm-label", "libsvm-index"],
)
def test_bytes_that_are_not_utf8_are_named_as_an_encoding_problem(
    body: bytes, content_type: str, message: str
) -> None:
    """A Latin-1 export's 'é' is an encoding problem, not "cannot parse '\\ufffd'"."""
    with pytest.raises(InvalidInput, match=message + ".*send the body as UTF-8"):
        codecs.decode(body, content_type, 3)


def test_a_json_body_that_is_not_utf8_is_named_as_an_encoding_problem() -> None:
    """Not "malformed JSON: 'utf-8' codec can't decode...": the JSON is fine, its encoding not."""
    with pytest.raises(InvalidInput) as refused:
        codecs.decode(b'[[1, "caf\xe9"]]', codecs.JSON, 2)
    assert str(refused.value) == (
        "JSON must be UTF-8 (RFC 8259): byte 0xe9 at offset 9 is not (invalid continuation "
        "byte); send the body as UTF-8"
    )


@pytest.mark.parametrize("row", [b"[0]", b"[" + b",".join([b"7"] * 20) + b"]", b'{"features":[0]}'])
def test_decoding_json_peaks_within_its_declared_expansion(row: bytes) -> None:
    """A worker sizes its JSON cap with JSON_BYTES_EXPANSION: the costliest shapes (rows of
    one-digit numbers, one per row the worst) must stay within it."""
    body = b'{"instances":[' + b",".join([row] * 50_000) + b"]}"
    tracemalloc.start()
    try:
        codecs.decode_json(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(body) + peak < codecs.JSON_BYTES_EXPANSION * len(body)


def _decimals(rows: int, width: int, libsvm: bool = False) -> bytes:
    """Rows of six-digit decimals (a libsvm row with a label), as exports write them."""
    values = np.random.default_rng(7).random((rows, width))
    if libsvm:
        lines = ["1 " + " ".join(f"{i}:{v:.6f}" for i, v in enumerate(row)) for row in values]
    else:
        lines = [",".join(f"{v:.6f}" for v in row) for row in values]
    return ("\n".join(lines) + "\n").encode()


def _frame(tensor: bytes) -> bytes:
    return recordio_support.frame(recordio_support.record(tensor))


def _unpacked(
    values: list[float], keys: Sequence[int] = (), shape: Sequence[int] = (), kind: str = "float32"
) -> bytes:
    """A record whose tensor's values (and keys and shape) are each a field of their own."""
    return _frame(recordio_support.tensor(values, keys, shape, kind=kind, packed=False))


_SPARSE_WIDE_RECORDIO = _frame(recordio_support.tensor([1.0], [999], [1_000])) * 2_000
_SPARSE_WIDE_LIBSVM = b"0 999:1\n" * 2_000

# Each Python reader's measured shapes (with their feature counts): narrow rows, where the cost
# per row dominates (one-field CSV behind a byte order mark, which the native reader declines;
# libsvm rows of one valueless feature; empty RecordIO frames), wide rows and one long line,
# where the cost per byte does, and the realistic ones (8 decimals a row), which cost far less.
_SHAPES = [
    (codecs.CSV, codecs.UTF8_BOM + b"1\n" * 100_000, 1),
    (codecs.CSV, codecs.UTF8_BOM + b"0,0,0,0,0,0,0,0,0,0\n" * 10_000, 10),
    (codecs.CSV, codecs.UTF8_BOM + b"1," * 99_999 + b"1\n", 100_000),
    (codecs.LIBSVM, b"0:\n" * 70_000, 1),
    (codecs.LIBSVM, b"0:0\n" * 50_000, 1),
    (codecs.LIBSVM, b"0 1:1 2:1 3:1 4:1 5:1 6:1 7:1 8:1 9:1\n" * 6_000, 10),
    (codecs.LIBSVM, b"1 " + b" ".join(b"%d:1" % i for i in range(60_000)) + b"\n", 60_000),
    (codecs.RECORDIO, recordio_support.frame(b"") * 25_000, 1),
    (codecs.RECORDIO, recordio_support.dense(np.zeros((10_000, 1), dtype=np.float32)), 1),
    (codecs.RECORDIO, recordio_support.dense(np.ones((1, 100_000), dtype=np.float32)), 100_000),
    (codecs.RECORDIO, recordio_support.dense(np.ones((10_000, 8), dtype=np.float32)), 8),
    (codecs.RECORDIO, recordio_support.dense(np.ones((2_000, 100), dtype=np.float32)), 100),
    (codecs.RECORDIO, _frame(recordio_support.tensor([1.0], [0], [10])) * 20_000, 10),
    (
        codecs.RECORDIO,
        _frame(recordio_support.tensor([1.0] * 8, range(0, 16, 2), [16])) * 10_000,
        16,
    ),
    # unpacked repeated fields (a tag and a value each: valid protobuf), one long record and
    # many short ones, and packed int32 of one-byte varints: ~75, ~117 and ~25 bytes a byte when
    # the reader built a tuple, an int and an array per value
    (codecs.RECORDIO, _unpacked([1.0] * 100_000), 100_000),
    (codecs.RECORDIO, _unpacked([1.0]) * 20_000, 1),
    (codecs.RECORDIO, _unpacked([1] * 50_000, range(50_000), [50_000], "int32"), 50_000),
    (codecs.RECORDIO, _unpacked([1, 2, 3], [0, 2, 4], [5], "int32") * 20_000, 5),
    (codecs.RECORDIO, _frame(recordio_support.tensor([1] * 100_000, kind="int32")), 100_000),
    # sparse rows naming a wide matrix in a few bytes: the matrix decides (~112 a byte here)
    (codecs.RECORDIO, _SPARSE_WIDE_RECORDIO, 1_000),
    (codecs.LIBSVM, _SPARSE_WIDE_LIBSVM, 1_000),
]
_REALISTIC = [
    (codecs.CSV, codecs.UTF8_BOM + _decimals(20_000, 8), 8),
    (codecs.CSV, codecs.UTF8_BOM + _decimals(1, 60_000), 60_000),
    (codecs.LIBSVM, _decimals(20_000, 8, libsvm=True), 8),
    (codecs.LIBSVM, _decimals(1, 60_000, libsvm=True), 60_000),
    (
        codecs.RECORDIO,
        recordio_support.dense(np.random.default_rng(7).random((10_000, 8)).astype(np.float32)),
        8,
    ),
]
# what each reader's body was charged a byte before the estimate: its narrowest shape's cost
_WORST_SHAPE_FIGURE = {codecs.CSV: 88, codecs.LIBSVM: 96, codecs.RECORDIO: 26}


def _rows(body: bytes, content_type: str) -> int:
    if content_type == codecs.RECORDIO:
        return recordio.count_frames(body)[0]
    return body.removeprefix(codecs.UTF8_BOM).rstrip(b"\r\n").count(b"\n") + 1


@pytest.mark.parametrize(("content_type", "body", "width"), _SHAPES + _REALISTIC)
def test_each_python_reader_peaks_within_its_estimate(
    content_type: str, body: bytes, width: int
) -> None:
    """A model server holds what each Python reader reads to its PYTHON_READ_COST estimate:
    every measured shape's peak, the body included, stays within it (a refused body's too)."""
    tracemalloc.start()
    try:
        with contextlib.suppress(InvalidInput):
            codecs.decode(body, content_type, width, max_values=1 << 40)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rows = _rows(body, content_type)
    estimate = codecs.PYTHON_READ_COST[content_type].estimate(rows, len(body), width)
    assert len(body) + peak < estimate


@pytest.mark.parametrize(("content_type", "body", "width"), _REALISTIC)
def test_a_realistic_body_is_estimated_well_under_the_narrowest_shapes_cost(
    content_type: str, body: bytes, width: int
) -> None:
    """Rows of 8 decimals, or one long line, are charged less than half what the narrowest
    rows cost a byte: a 6 MB libsvm body fits where ~1.6 MiB did."""
    estimate = codecs.PYTHON_READ_COST[content_type].estimate(_rows(body, content_type), len(body))
    assert estimate < _WORST_SHAPE_FIGURE[content_type] * len(body) / 2


@pytest.mark.parametrize(("content_type", "body", "width"), _SHAPES)
def test_a_body_over_its_readers_budget_is_413_naming_its_estimate_and_one_within_is_decoded(
    content_type: str, body: bytes, width: int
) -> None:
    """Refused before it is read, naming the estimate and the budget; within it, read."""
    rows = _rows(body, content_type)
    estimate = codecs.PYTHON_READ_COST[content_type].estimate(rows, len(body), width)
    with pytest.raises(PayloadTooLarge) as refused:
        codecs.decode(body, content_type, width, memory_budgets={content_type: estimate - 1})
    assert f"the {content_type} body is {len(body)} bytes" in str(refused.value)
    assert f"at an estimated {estimate} bytes of memory" in str(refused.value)
    assert f"one read may take up to {estimate - 1} bytes of memory here" in str(refused.value)
    other = codecs.JSON if content_type != codecs.JSON else codecs.CSV
    for budgets in ({content_type: estimate}, {other: 1}):
        try:
            codecs.decode(body, content_type, width, max_values=1 << 40, memory_budgets=budgets)
        except InvalidInput as exc:  # the empty frames: read, and refused for what they are
            assert "no feature named 'values'" in str(exc)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [(codecs.RECORDIO, _SPARSE_WIDE_RECORDIO), (codecs.LIBSVM, _SPARSE_WIDE_LIBSVM)],
)
def test_sparse_rows_of_a_wide_model_are_estimated_at_their_matrix(
    content_type: str, body: bytes
) -> None:
    """2,000 rows of one feature of 1,000 make an 8 MB matrix from ~20-70 kB: within what their
    bytes alone are estimated at, they are refused naming the matrix (they were read, at ~112
    bytes of memory a byte where the estimate said ~6)."""
    cost = codecs.PYTHON_READ_COST[content_type]
    from_bytes = cost.estimate(2_000, len(body))
    assert from_bytes < codecs.matrix_bytes(2_000, 1_000)
    with pytest.raises(PayloadTooLarge) as refused:
        codecs.decode(body, content_type, 1_000, memory_budgets={content_type: from_bytes})
    if content_type == codecs.RECORDIO:  # its frames counted as far as the budget needs
        rows, at_least = recordio_support.frames_over(from_bytes, len(body), 1_000), "at least "
    else:
        rows, at_least = 2_000, ""
    assert f"+ a matrix of {at_least}{rows} rows x 1000 features x 4)" in str(refused.value)
    estimate = cost.estimate(rows, len(body), 1_000)
    assert f"at an estimated {at_least}{estimate} bytes of memory" in str(refused.value)


@pytest.mark.parametrize(
    ("content_type", "body", "rows"),
    [
        (codecs.CSV, b"1\n" * 300, "300"),
        (codecs.LIBSVM, b"0:1\n" * 300, "300"),
        (codecs.RECORDIO, recordio_support.frame(b"") * 300, "at least 201"),
    ],
)
def test_a_body_over_the_row_limit_and_its_budget_is_refused_for_its_rows(
    content_type: str, body: bytes, rows: str
) -> None:
    """The row limit's 413 says what to send instead; the memory's would blame the reader.
    RecordIO's frames are counted from their headers, before a view of any is built, and no
    further than one past the row limit."""
    with pytest.raises(PayloadTooLarge, match=f"the body has {rows} rows; one request may carry"):
        codecs.decode(body, content_type, 1, max_rows=200, memory_budgets={content_type: 100})


def test_a_csv_body_of_the_wrong_field_count_over_its_budget_is_the_400_naming_the_row() -> None:
    """The model's feature count is what the sender must fix: named before the memory."""
    body = codecs.UTF8_BOM + b"1,2,3\n" * 1_000
    with pytest.raises(InvalidInput, match="row 1: expected 8 features, got 3"):
        codecs.decode(body, codecs.CSV, 8, memory_budgets={codecs.CSV: 100})


def test_a_recordio_body_held_to_its_budget_has_its_frames_counted_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The count that the estimate took is the one the reader sizes its matrix by: the body's
    frame headers are not walked again to count them (they were, twice, besides the read)."""
    counted: list[int] = []
    count_frames = recordio.count_frames
    monkeypatch.setattr(
        recordio,
        "count_frames",
        lambda body, most: counted.append(len(body)) or count_frames(body, most),
    )
    body = recordio_support.dense(np.ones((3, 2), dtype=np.float32))
    decoded = codecs.decode(body, codecs.RECORDIO, 2, memory_budgets={codecs.RECORDIO: 1 << 20})
    np.testing.assert_array_equal(decoded, np.ones((3, 2), dtype=np.float32))
    assert counted == [len(body)]


def test_recordio_frames_are_counted_with_their_headers_checked() -> None:
    body = recordio_support.frame(b"") * 3
    assert recordio.count_frames(body) == (3, True)
    assert recordio.count_frames(body, 3) == recordio.count_frames(body, 2) == (3, True)
    assert recordio.count_frames(body, 1) == (2, False)  # one past its bound: no further
    assert recordio.count_frames(body + b"\0\0", 1) == (2, False)
    with pytest.raises(InvalidInput, match="record 4: 2 byte"):
        recordio.count_frames(body + b"\0\0")


def test_json_parsed_whole_is_capped_and_the_native_shapes_are_not() -> None:
    """``memory_budgets``' JSON budget (the model server's memory cap) refuses, before parsing, a
    body the native decoder does not take; a body it takes, however large, is decoded."""
    rows = [[1.5, 2.0]] * 100
    native = json.dumps({"instances": rows}).encode()
    other = json.dumps({"instances": rows, "id": "x"}).encode()
    cap = min(len(native), len(other)) - 1
    budget = cap * codecs.JSON_BYTES_EXPANSION
    with pytest.raises(PayloadTooLarge, match=f"may take up to {budget} bytes of memory here"):
        codecs.decode(other, codecs.JSON, 2, memory_budgets={codecs.JSON: budget})
    decoded = codecs.decode(native, codecs.JSON, 2, memory_budgets={codecs.JSON: budget})
    np.testing.assert_array_equal(decoded, np.array(rows, dtype=np.float32))
    np.testing.assert_array_equal(
        codecs.decode(
            other,
            codecs.JSON,
            2,
            memory_budgets={codecs.JSON: len(other) * codecs.JSON_BYTES_EXPANSION},
        ),
        decoded,
    )
