"""Batch filters, joins and output shapes, with a stand-in predict (the sum of each row) so
that expected outputs are plain arithmetic."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from dataclasses import replace
from typing import TypeVar
from unittest import mock

import numpy as np
import pytest

from infermodes.errors import InvalidInput
from infermodes.jsonpath import JsonPath
from infermodes.predict import codecs
from infermodes.workers.batch.records import BadRecord, MiniBatch
from infermodes.workers.batch.transform import INPUT_RECORD, Transform, split_csv_record

T = TypeVar("T")


def row_sums(rows: np.ndarray) -> np.ndarray:
    return rows.sum(axis=1)


def transform(
    content_type: str = "text/csv",
    accept: str = "text/csv",
    input_filter: str = "$",
    output_filter: str = "$",
    join: bool = False,
    assemble_lines: bool = True,
    whole_documents: bool = False,
    num_features: int = 2,
) -> Transform:
    return Transform(
        num_features=num_features,
        content_type=content_type,
        accept=accept,
        input_filter=JsonPath.parse(input_filter, "inputFilter"),
        output_filter=JsonPath.parse(output_filter, "outputFilter"),
        join=join,
        assemble_lines=assemble_lines,
        whole_documents=whole_documents,
        predict=row_sums,
    )


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("$", [1, 2], [1, 2]),
        ("$[1:]", ["id", "1", "2"], ["1", "2"]),
        ("$[:-1]", ["1", "2", "label"], ["1", "2"]),
        ("$[0,2,4]", ["a", "b", "c", "d", "e"], ["a", "c", "e"]),
        ("$[1]", ["a", "b"], "b"),
        ("$.features", {"id": 7, "features": [1, 2]}, [1, 2]),
        ("$.data.features", {"data": {"features": [3]}}, [3]),
        ("$['id','SageMakerOutput']", {"id": 1, "x": 2, "SageMakerOutput": 3},
         {"id": 1, "SageMakerOutput": 3}),
        ('$["id"]', {"id": 1}, 1),
        ("$.features[0:2]", {"features": [1, 2, 3]}, [1, 2]),
    ],
)  # fmt: skip
def test_jsonpath_subset(path: str, value: object, expected: object) -> None:
    assert JsonPath.parse(path).select(value) == expected


@pytest.mark.parametrize("path", ["features", "$..x", "$[?(@.a)]", "$[*]", "$.a[", "$['a"])
def test_unsupported_jsonpath_is_refused_when_parsed(path: str) -> None:
    with pytest.raises(ValueError, match="JSONPath"):
        JsonPath.parse(path)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("$.features", [1, 2], "f $.features: selects keys, but the row is not a JSON object"),
        ("$.features", {"id": 1}, "f $.features: the row has no 'features'"),
        ("$[5]", ["a"], "f $[5]: the row has 1 columns, fewer than the filter selects"),
        ("$[1:]", {"a": 1}, "f $[1:]: selects positions, but the row is not a list"),
        ("$.a.b[1]", {"a": {"c": 1}}, "f $.a.b[1]: $.a of the row has no 'b'"),
        ("$.a['b'][3]", {"a": {"b": [1]}},
         "f $.a['b'][3]: $.a['b'] of the row has 1 columns, fewer than the filter selects"),
        ("$['a', 'b'].c", {"a": 1, "b": 2},
         "f $['a', 'b'].c: $['a', 'b'] of the row has no 'c'"),
    ],
)  # fmt: skip
def test_a_filter_that_does_not_fit_the_record_names_why(
    path: str, value: object, message: str
) -> None:
    """The filter's field and text, then what it looked at: the record, or a part of it."""
    with pytest.raises(InvalidInput) as caught:
        JsonPath.parse(path, "f").select(value, "the row")
    assert str(caught.value) == message
    assert str(JsonPath.parse(path).refusal("x")) == f"{path}: x"  # no field: the text alone


@pytest.mark.parametrize(
    ("content_type", "accept", "filters", "join", "batch", "message"),
    [
        ("application/jsonlines", "application/jsonlines", ("$.nope", "$"), False,
         MiniBatch(1, b"[1, 2]\n{}\n"),
         "line 1: inputFilter $.nope: selects keys, but the input record is not a JSON object"),
        ("application/jsonlines", "application/jsonlines", ("$.x.nope", "$"),
         False, MiniBatch(1, b'{"x": {"nope": [1, 2]}}\n{"x": {}}\n'),
         "line 2: inputFilter $.x.nope: $.x of the input record has no 'nope'"),
        ("application/jsonlines", "application/jsonlines", ("$", "$.nope"), False,
         MiniBatch(1, b"[1, 2]\n"),
         "line 1: outputFilter $.nope: the output record (the prediction) has no 'nope'"),
        ("application/jsonlines", "application/jsonlines", ("$", "$.nope"), True,
         MiniBatch(1, b"[1, 2]\n"),
         "line 1: outputFilter $.nope: the output record (the input joined with the "
         "prediction) has no 'nope'"),
        ("application/jsonlines", "text/csv", ("$", "$[1]"), False,
         MiniBatch(3, b"[1, 2]\n"),
         "line 3: outputFilter $[1]: the output record (the prediction) has 1 columns, fewer "
         "than the filter selects"),
        ("text/csv", "text/csv", ("$[1:]", "$[1]"), False,
         MiniBatch(1, b"a,1,2\n"),
         "line 1: outputFilter $[1]: the output record (the prediction) has 1 columns, fewer "
         "than the filter selects"),
        ("text/csv", "text/csv", ("$[1:]", "$[4]"), True,
         MiniBatch(1, b"a,1,2\n"),
         "line 1: outputFilter $[4]: the output record (the input joined with the "
         "prediction) has 4 columns, fewer than the filter selects"),
        ("text/csv", "application/jsonlines", ("$", "$.nope"), False,
         MiniBatch(1, b"1,2\n"),
         "line 1: outputFilter $.nope: the output record (the prediction) has no 'nope'"),
        ("text/csv", "text/csv", ("$[3,1]", "$"), False,
         MiniBatch(1, b"a,1,2,3\nb,1,2\n"),
         "line 2: inputFilter $[3,1]: the input record has 3 columns, fewer than the filter "
         "selects"),
    ],
)  # fmt: skip
def test_a_filter_failure_names_the_filter_and_the_record_it_looked_at(
    content_type: str,
    accept: str,
    filters: tuple[str, str],
    join: bool,
    batch: MiniBatch,
    message: str,
) -> None:
    """Which of the job's two filters failed, and whether on the input record or on the
    output (an output filter's failure read as the input's: the same words)."""
    with pytest.raises(BadRecord) as caught:
        transform(content_type, accept, *filters, join=join)(batch)
    assert str(caught.value) == message


def test_csv_to_csv_one_line_per_row() -> None:
    assert transform()(MiniBatch(1, b"1,2\n\n3,4\n")) == (b"3.0\n7.0\n", 2)


def test_csv_input_filter_drops_an_id_column() -> None:
    out, rows = transform(input_filter="$[1:]")(MiniBatch(1, b"a,1,2\nb,3,4\n"))
    assert (out, rows) == (b"3.0\n7.0\n", 2)


def test_csv_join_appends_the_prediction_and_output_filter_selects() -> None:
    batch = MiniBatch(1, b"a,1,2\nb,3,4\n")
    joined = transform(input_filter="$[1:]", join=True)(batch)
    assert joined == (b"a,1,2,3.0\nb,3,4,7.0\n", 2)
    picked = transform(input_filter="$[1:]", join=True, output_filter="$[0,-1]")(batch)
    assert picked == (b"a,3.0\nb,7.0\n", 2)


def test_a_byte_order_mark_before_the_first_record_is_no_part_of_its_columns() -> None:
    batch = MiniBatch(1, b"\xef\xbb\xbfa,1,2\nb,3,4\n")
    joined = transform(input_filter="$[1:]", join=True)(batch)
    assert joined == (b"a,1,2,3.0\nb,3,4,7.0\n", 2)
    assert transform(input_filter="$[2,1]")(MiniBatch(1, b"\xef\xbb\xbf1,2,3\n")) == (b"5.0\n", 1)
    assert transform()(MiniBatch(1, b"\xef\xbb\xbf1,2\n3,4\n")) == (b"3.0\n7.0\n", 2)


@pytest.mark.parametrize(
    ("line", "fields"),
    [
        (b"a,1,2", [b"a", b"1", b"2"]),  # no quote: split at every comma
        (b",1,", [b"", b"1", b""]),
        (b'"Smith, John",1,2', [b'"Smith, John"', b"1", b"2"]),
        (b'1,"a, b, c"', [b"1", b'"a, b, c"']),
        (b'"say ""hi"", then go",1', [b'"say ""hi"", then go"', b"1"]),
        (b'"""",1', [b'""""', b"1"]),  # one quote, quoted
        (b'"",1,""', [b'""', b"1", b'""']),  # empty quoted fields
        (b'"a",', [b'"a"', b""]),
        # as the csv module and spreadsheets read them (each worked before quotes were read)
        (b'5" screw,1,2', [b'5" screw', b"1", b"2"]),  # a quote inside an unquoted field
        (b'"a" ,1,2', [b'"a" ', b"1", b"2"]),  # text after the closing quote
        (b'"Smith, J"r,1', [b'"Smith, J"r', b"1"]),
        (b'id 1, "x",1,2', [b"id 1", b' "x"', b"1", b"2"]),  # a space before the quote
        (b'1,Smith "J",2', [b"1", b'Smith "J"', b"2"]),
    ],
)  # fmt: skip
def test_a_csv_record_is_split_as_rfc_4180_reads_it_each_field_kept_as_written(
    line: bytes, fields: list[bytes]
) -> None:
    assert split_csv_record(line) == fields


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'id,"Smith, John,1', "column 2: the quote that opens the field is not closed on its "
         "line ('\"Smith, John,1'): a newline inside a quoted field is not supported (CSV "
         "records are cut at newlines); remove the newline from the field, or close its quote"),
        (b'"a""",1,"b""', "column 3: the quote that opens the field is not closed on its line "
         "('\"b\"\"')"),  # the last quote is a doubled one: still open
    ],
)  # fmt: skip
def test_a_quoted_field_left_open_is_refused_naming_its_column(line: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        split_csv_record(line)
    assert str(caught.value).startswith(message)


def test_a_quoted_id_column_is_filtered_out_and_joined_back_as_written() -> None:
    """The platform's recipe, ``$[1:]`` and a join, over ids with commas and quotes in them:
    they were split at their commas, so the model got the id's second half as a feature."""
    batch = MiniBatch(1, b'"Smith, John",1,2\n"say ""hi""",3,4\n"",5,6\nplain,7,8\n')
    joined = transform(input_filter="$[1:]", join=True)(batch)
    assert joined == (
        b'"Smith, John",1,2,3.0\n"say ""hi""",3,4,7.0\n"",5,6,11.0\nplain,7,8,15.0\n',
        4,
    )
    picked = transform(input_filter="$[1:]", join=True, output_filter="$[0,-1]")(batch)
    assert picked == (b'"Smith, John",3.0\n"say ""hi""",7.0\n"",11.0\nplain,15.0\n', 4)
    dropped = transform(input_filter="$[0,1]", num_features=2)(MiniBatch(1, b'1,2,"a, b"\n'))
    assert dropped == (b"3.0\n", 1)


@pytest.mark.parametrize(
    ("data", "line", "reason"),
    [
        (b'"a",1,2\n"Smith\nJohn",3,4\n', 2, "column 1: the quote that opens the field is not "
         "closed on its line ('\"Smith'): a newline inside a quoted field is not supported"),
        (b'a,1,2\n"b","1,5",3\n', 2, "column 1: the quoted field '\"1,5\"' is no number the "
         "model reads (it reads fields unquoted, as the model server does): leave it out with "
         "the input filter, as $[1:] leaves out the first column"),
    ],
)  # fmt: skip
def test_a_malformed_or_quoted_feature_is_its_records_bad_input(
    data: bytes, line: int, reason: str
) -> None:
    """Its line is named, not retried as an internal error; a quoted field the filter passes
    to the model is named as such, not split at its commas into one feature too many."""
    with pytest.raises(BadRecord) as caught:
        transform(input_filter="$[1:]", join=True)(MiniBatch(1, data))
    assert caught.value.line == line
    assert caught.value.reason.startswith(reason)


def test_csv_errors_name_the_line_of_the_object() -> None:
    with pytest.raises(BadRecord) as caught:
        transform()(MiniBatch(10, b"1,2\n\n3,x\n"))
    assert caught.value.line == 12
    assert "column 2" in caught.value.reason
    with pytest.raises(BadRecord) as filtered:
        transform(input_filter="$[1:]", join=True)(MiniBatch(10, b"a,1,2\n\nb,3\n"))
    assert filtered.value.line == 12
    assert "expected 2 features, got 1" in filtered.value.reason


@pytest.mark.parametrize(
    ("batch", "join", "accept", "line", "reason"),
    [
        (MiniBatch(1, b"a,1,2\nid1\nb,3,4\n"), False, "text/csv", 2,
         "inputFilter $[1:]: selects no column of the input record, which has 1 columns"),
        (MiniBatch(1, b"a,1,2\nid1\n"), True, "text/csv", 2,
         "inputFilter $[1:]: selects no column of the input record, which has 1 columns"),
        (MiniBatch(1, b"a,1,2\nid1\n"), False, "application/jsonlines", 2,
         "inputFilter $[1:]: selects no column of the input record, which has 1 columns"),
        (MiniBatch(2, b"id1\n"), False, "text/csv", 2,  # SingleRecord
         "inputFilter $[1:]: selects no column of the input record, which has 1 columns"),
        (MiniBatch(5, b"a,1,2\n\nid1, \t\n"), False, "text/csv", 7,
         "inputFilter $[1:]: selects only blank columns of the input record, which has 2 columns"),
    ],
)  # fmt: skip
def test_a_csv_input_filter_selecting_no_column_of_a_row_is_that_rows_bad_input(
    batch: MiniBatch, join: bool, accept: str, line: int, reason: str
) -> None:
    """The empty selection was a blank line the decoders skip: one row short of the lines,
    a ValueError (retried as an internal failure) or "empty request body"."""
    with pytest.raises(BadRecord) as caught:
        transform(accept=accept, input_filter="$[1:]", join=join)(batch)
    assert (caught.value.line, caught.value.reason) == (line, reason)


@pytest.mark.parametrize(
    ("records", "input_filter"),
    [
        (b'{"features": [1, 2]}\n{"features": []}\n', "$.features"),
        (b'{"features": [1, 2]}\n{"features": [3, 4]}\n', "$.features[2:]"),
    ],
)
@pytest.mark.parametrize("content_type", ["application/jsonlines", "application/json"])
def test_a_json_input_filter_selecting_an_empty_list_names_the_filter(
    records: bytes, input_filter: str, content_type: str
) -> None:
    lines = transform(content_type, "application/jsonlines", input_filter)
    with pytest.raises(BadRecord) as caught:
        lines(MiniBatch(1, records))
    expected = f"inputFilter {input_filter}: selects an empty list from the input record"
    assert (caught.value.line, caught.value.reason) == (
        2 if input_filter == "$.features" else 1,
        expected,
    )


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (b'{"features": []}', "expected 2 features, got 0"),
        (b"[1]", "expected 2 features, got 1"),
        (b"[[]]", "expected 2 features, got 0"),
        (b'{"instances": [[1, 2, 3]]}', "expected 2 features, got 3"),
        (b'[1, "x"]', 'column 2: expected a number, got "x"'),
        (b"[[1, 2], [1]]", "row 2: expected 2 features, got 1"),  # a row of the record
        (b'{"instances": [[1, 2], {"x": 1}]}', "row 2: an object row needs a 'features' list"),
    ],
)
@pytest.mark.parametrize("content_type", ["application/jsonlines", "application/json"])
def test_a_json_record_of_one_row_fails_naming_its_line_alone(
    record: bytes, reason: str, content_type: str
) -> None:
    """A record of one row failed as ``line 2: row 1: ...``: the codecs' row, where the CSV
    path names the object's line alone. (A whole document's errors stay the model server's:
    ``test_a_whole_json_document_gives_the_rows_and_errors_of_two_parses``.)"""
    with pytest.raises(BadRecord) as caught:
        transform(content_type, "application/jsonlines")(MiniBatch(1, b"[1, 2]\n" + record))
    assert (caught.value.line, caught.value.reason) == (2, reason)


PREDICTION = "the output record (the prediction)"
JOINED = "the output record (the input joined with the prediction)"


@pytest.mark.parametrize(
    ("made", "batch", "line", "reason"),
    [
        (transform(output_filter="$[5:]"), MiniBatch(4, b"1,2\n3,4\n"), 4,
         f"outputFilter $[5:]: selects no column of {PREDICTION}, which has 1 columns"),
        (transform(input_filter="$[1:]", output_filter="$[5:]", join=True),
         MiniBatch(1, b"a,1,2\n"), 1,
         f"outputFilter $[5:]: selects no column of {JOINED}, which has 4 columns"),
        (transform(input_filter="$[2:]", output_filter="$[1]", join=True),
         MiniBatch(1, b"a,b,1,2\nc, ,3,4\n"), 2,
         f"outputFilter $[1]: selects only blank columns of {JOINED}, which has 5 columns"),
        (transform("application/jsonlines", output_filter="$[1:]"),
         MiniBatch(3, b"[1, 2]\n"), 3,
         f"outputFilter $[1:]: selects no column of {PREDICTION}, which has 1 columns"),
        (transform("application/jsonlines", "application/jsonlines", join=True,
                   output_filter="$.SageMakerInput[5:]"),
         MiniBatch(1, b"[1, 2]\n[3, 4]\n"), 1,
         f"outputFilter $.SageMakerInput[5:]: selects an empty list from {JOINED}"),
        (transform("application/jsonlines", "application/json", "$.features", join=True,
                   output_filter="$.meta"),
         MiniBatch(1, b'{"features": [1, 2], "meta": {"id": 1}}\n'
                      b'{"features": [3, 4], "meta": {}}\n'), 2,
         f"outputFilter $.meta: selects an empty object from {JOINED}"),
        (replace(transform(accept="application/jsonlines", output_filter="$.score[5:]"),
                 predict=lambda rows: rows),
         MiniBatch(1, b"1,2\n"), 1,
         f"outputFilter $.score[5:]: selects an empty list from {PREDICTION}"),
    ],
)  # fmt: skip
def test_an_output_filter_selecting_nothing_of_a_record_is_that_records_bad_input(
    made: Transform, batch: MiniBatch, line: int, reason: str
) -> None:
    """The empty selection was written as the record's output, a blank line, ``[]`` or
    ``{}``, without a word."""
    with pytest.raises(BadRecord) as caught:
        made(batch)
    assert (caught.value.line, caught.value.reason) == (line, reason)


@pytest.mark.parametrize("input_filter", ["$", "$[1:]"])
def test_a_row_joined_by_another_delimiter_is_named_so_on_its_line(input_filter: str) -> None:
    """Batch decodes through the model server's codecs: its reason names the delimiter (it
    blamed a header row), on the object's line, filtered or not."""
    row = b"1;0;0.455;0.365;0.095;0.514;0.2245;0.101;0.15"
    batch = MiniBatch(40, b"\n" + (b"id," if input_filter != "$" else b"") + row + b"\n")
    with pytest.raises(BadRecord) as caught:
        transform(input_filter=input_filter, num_features=9)(batch)
    assert str(caught.value) == (
        "line 41: expected 9 features, got 1; the row looks separated by ';', and CSV fields "
        "are separated by ','"
    )


def test_jsonlines_input_filter_and_join_keep_the_record() -> None:
    batch = MiniBatch(1, b'{"id": 1, "features": [1, 2]}\n{"id": 2, "features": [3, 4]}\n')
    out, rows = transform(
        content_type="application/jsonlines",
        accept="application/jsonlines",
        input_filter="$.features",
        join=True,
        output_filter="$['id','SageMakerOutput']",
    )(batch)
    assert rows == 2
    assert [json.loads(line) for line in out.splitlines()] == [
        {"id": 1, "SageMakerOutput": {"score": 3.0}},
        {"id": 2, "SageMakerOutput": {"score": 7.0}},
    ]


def test_json_join_of_a_non_object_keeps_it_as_sagemaker_input() -> None:
    out, _ = transform(content_type="application/jsonlines", accept="application/json", join=True)(
        MiniBatch(1, b"[1, 2]\n")
    )
    assert json.loads(out) == {"SageMakerInput": [1, 2], "SageMakerOutput": {"score": 3.0}}


def test_json_accept_without_join_is_the_servers_response_per_minibatch() -> None:
    lines = transform(content_type="application/jsonlines", accept="application/json")
    out, rows = lines(MiniBatch(1, b"[1, 2]\n[3, 4]\n"))
    assert rows == 2
    assert out == b'{"predictions": [{"score": 3.0}, {"score": 7.0}]}\n'
    unassembled = transform(accept="application/json", assemble_lines=False)
    assert unassembled(MiniBatch(1, b"1,2\n")) == (b'{"predictions": [{"score": 3.0}]}', 1)


@pytest.mark.parametrize("content_type", ["application/json", "application/jsonlines"])
def test_json_records_with_csv_accept_give_a_csv_line_per_row(content_type: str) -> None:
    """As the docs say of text/csv: a line per input row (it wrote ``{"score": 3.0}``). The
    records are counted as splitType cuts them: a line of several rows is one (it counted
    the rows)."""
    batch = MiniBatch(1, b"[1, 2]\n[[3, 4], [5, 6]]\n")
    out, records = transform(content_type=content_type)(batch)
    assert (out, records) == (b"3.0\n7.0\n11.0\n", 2)  # the second record holds two rows
    filtered = transform(content_type=content_type, input_filter="$.features")
    assert filtered(MiniBatch(1, b'{"features": [1, 2]}\n')) == (b"3.0\n", 1)
    whole = transform(content_type="application/json", whole_documents=True)
    assert whole(MiniBatch(1, b'{"instances": [[1, 2],\n [3, 4]]}')) == (b"3.0\n7.0\n", 1)
    assert transform(content_type=content_type, output_filter="$[0]")(batch)[0] == (
        b"3.0\n7.0\n11.0\n"
    )


def test_a_whole_json_document_with_instances() -> None:
    document = b'{"instances": [[1, 2],\n [3, 4]]}'
    out, records = transform(
        content_type="application/json", accept="application/jsonlines", whole_documents=True
    )(MiniBatch(1, document))
    assert records == 1  # one document, of two rows
    assert json.loads(out) == {"predictions": [{"score": 3.0}, {"score": 7.0}]}


def two_parses(raw: bytes, input_filter: str) -> np.ndarray | str:
    """The rows (or the error) of the path the transform used to take: parse, select, write
    the selection back and decode that."""
    try:
        document = json.loads(raw)
    except ValueError as exc:
        return f"malformed JSON: {exc}"
    try:
        selected = json.dumps(
            JsonPath.parse(input_filter, "inputFilter").select(document, INPUT_RECORD)
        ).encode()
        return codecs.decode(selected, codecs.JSON, 2)
    except InvalidInput as exc:
        return str(exc)


WHOLE_DOCUMENTS = [
    (b'{"instances": [[1, 2],\n [3, 4]]}', "$"),
    (b"[[1, 2], [3, 4.5]]", "$"),
    (b"[1, 2]", "$"),
    (b'{"features": [1, 2]}', "$"),
    (b'{"id": 7, "x": {"instances": [[1, 2], [null, 0.1]]}}', "$.x"),
    (b"\xef\xbb\xbf[[1, 2]]", "$"),
    ("[[1, 2]]".encode("utf-16"), "$"),
    (b"[[1, 123456789012345678901234567890123456789012]]", "$"),
    (b"[[1, 16777217], [1e-50, -0.0]]", "$"),
    (b'{"id": NaN, "x": [[1, 2]]}', "$.x"),
    (b'{"instances": [[1, 2]]', "$"),
    (b"", "$"),
    (b'[[1, "x"]]', "$"),
    (b"[[1, true]]", "$"),
    (b'{"rows": []}', "$"),
    (b"[[1, NaN]]", "$"),
    (b'{"instances": [[1, 2]], "meta": NaN}', "$"),
    (b'[[1, "x"], [NaN, 2]]', "$"),
    (b'{"x": {"instances": [[1, 2]], "m": Infinity}, "y": NaN}', "$.x"),
    (b"[[1, -Infinity]]", "$"),
    (b"[[1, 2]] \xe9", "$"),
    (b"[[1, 2, 3]]", "$"),
    (b'{"id": 7}', "$.x"),
    (b"[[1, " + b"9" * 5000 + b"]]", "$"),
    (b"[]", "$"),
    (b"7", "$"),
]


@pytest.mark.parametrize(("raw", "input_filter"), WHOLE_DOCUMENTS)
def test_a_whole_json_document_gives_the_rows_and_errors_of_two_parses(
    raw: bytes, input_filter: str
) -> None:
    """Parsed once, a document gives the predictions, or the error, that parsing it, writing
    the selection back and decoding that gave."""
    whole = transform("application/json", "application/json", input_filter,
                      whole_documents=True)  # fmt: skip
    expected = two_parses(raw, input_filter)
    if isinstance(expected, str):
        with pytest.raises(BadRecord) as caught:
            whole(MiniBatch(3, raw))
        assert (caught.value.line, caught.value.reason) == (3, expected)
    else:
        out, records = whole(MiniBatch(3, raw))
        assert records == 1
        assert out == codecs.encode(row_sums(expected), codecs.JSON) + b"\n"


def test_a_whole_json_document_is_parsed_once() -> None:
    """The document was parsed, its selection written back and parsed again: twice the time
    of the parse, which is most of a whole document's transform."""
    whole = transform("application/json", "application/json", "$.x", whole_documents=True)
    with mock.patch.object(json, "loads", wraps=json.loads) as loads:
        out, records = whole(MiniBatch(1, b'{"id": 7, "x": {"instances": [[1, 2], [3, 4]]}}'))
    assert (out, records) == (b'{"predictions": [{"score": 3.0}, {"score": 7.0}]}\n', 1)
    assert loads.call_count == 1


def test_a_number_beyond_float64_is_named_as_the_model_server_names_it() -> None:
    """Written back, 1e400 became ``Infinity``, which the second parse refused as a constant
    nobody wrote; read once, it is the number it is."""
    whole = transform("application/json", whole_documents=True)
    with pytest.raises(BadRecord) as caught:
        whole(MiniBatch(1, b"[[1, 1e400]]"))
    assert caught.value.reason == "row 1, column 2: the number is beyond the range of float32"
    with pytest.raises(InvalidInput, match=r"^row 1, column 2: the number is beyond"):
        codecs.decode(b"[[1, 1e400]]", codecs.JSON, 2)


def test_a_document_nested_too_deeply_fails_its_record() -> None:
    """The parser's RecursionError escaped the transform, not a bad record."""
    whole = transform("application/json", whole_documents=True)
    with pytest.raises(BadRecord) as caught:
        whole(MiniBatch(4, b"[" * 100_000 + b"]" * 100_000))
    assert (caught.value.line, caught.value.reason) == (4, "malformed JSON: nested too deeply")


def test_a_join_writes_the_document_as_it_was_read() -> None:
    """Integers stay integers and the rows the model read are the document's: the rows are
    not let go while the document is still to be written."""
    joined = transform("application/json", "application/jsonlines", "$.x", join=True,
                       whole_documents=True)  # fmt: skip
    raw = b'{"id": 7, "x": [[1, 2], [3, 4]], "note": NaN}'
    out, records = joined(MiniBatch(1, raw))
    assert records == 1
    written = {"id": 7, "x": [[1, 2], [3, 4]], "note": float("nan"),
               "SageMakerOutput": {"predictions": [{"score": 3.0}, {"score": 7.0}]}}  # fmt: skip
    assert out == json.dumps(written).encode() + b"\n"


def test_malformed_json_names_its_line() -> None:
    with pytest.raises(BadRecord) as caught:
        transform(content_type="application/jsonlines")(MiniBatch(5, b"[1, 2]\n{oops\n"))
    assert caught.value.line == 6
    assert "malformed JSON" in caught.value.reason


def test_libsvm_to_jsonlines() -> None:
    out, rows = transform(content_type="text/libsvm", accept="application/jsonlines")(
        MiniBatch(1, b"0 0:1 1:2\n1 0:4 1:5\n")
    )
    assert (out, rows) == (b'{"score": 3.0}\n{"score": 9.0}\n', 2)


def test_only_per_record_outputs_may_be_cut_into_ranges() -> None:
    assert transform().per_record_output
    assert transform(accept="application/jsonlines").per_record_output
    assert not transform(accept="application/json").per_record_output
    joined = transform(content_type="application/jsonlines", accept="application/json", join=True)
    assert joined.per_record_output


def test_only_plain_csv_is_native_and_runs_in_threads() -> None:
    """Native CSV transforms run concurrently in threads; what holds the GIL (JSON, filtered
    or joined lines) in worker processes."""
    assert transform().native
    assert not transform(accept="application/jsonlines").native
    assert not transform(content_type="application/jsonlines").native
    assert not transform(input_filter="$[1:]").native
    assert not transform(output_filter="$[0]").native
    assert not transform(join=True).native


def traced_peak(call: Callable[[], T]) -> tuple[T, int]:
    """What ``call`` returns, and the most memory Python held for it meanwhile."""
    tracemalloc.start()
    try:
        return call(), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_native_csv_output_is_what_the_codecs_write() -> None:
    """Values with 17 digits, few digits, and beyond the native range, as repr writes them."""
    pairs = [(0.1, 0.2), (1e-12, 0.0), (3.0, 4.25), (1e30, 1e30)]
    data = b"".join(b"%r,%r\n" % pair for pair in pairs) + b"\n"
    out, rows = transform()(MiniBatch(1, data))
    assert rows == 4
    sums = [np.float32(a) + np.float32(b) for a, b in pairs]
    assert out == "".join(f"{float(value)!r}\n" for value in sums).encode()


def test_a_whole_json_mini_batch_peaks_within_the_codecs_declared_expansion() -> None:
    """Without a join the parsed document is let go before the selected rows are decoded:
    a mini-batch (up to 100 MB) costs what decoding it costs, not that twice over."""
    body = b'{"instances":[' + b",".join([b"[7]"] * 100_000) + b"]}"
    whole = transform("application/json", whole_documents=True, num_features=1)
    (_, records), peak = traced_peak(lambda: whole(MiniBatch(1, body)))
    assert records == 1
    assert len(body) + peak < codecs.JSON_BYTES_EXPANSION * len(body)


@pytest.mark.parametrize(
    ("content_type", "join"), [("application/jsonlines", False), ("application/json", True)]
)
def test_a_mini_batch_of_json_lines_peaks_at_a_few_times_its_size(
    content_type: str, join: bool
) -> None:
    """Each line's document, rows and numbering were held until the whole mini-batch (up to
    100 MB) was decoded: ~9 times its size, ~21 with a join (in the runner). Lines are decoded
    and predicted a group at a time, so what remains is the output (with a join, twice the input).
    """
    lines = [json.dumps({"id": i, "features": [i % 7, 0.25]}).encode() for i in range(30_000)]
    body = b"\n".join(lines) + b"\n"
    lined = transform(content_type, "application/jsonlines", "$.features", join=join)
    (out, count), peak = traced_peak(lambda: lined(MiniBatch(1, body)))
    assert count == 30_000
    assert out.splitlines()[7] == (
        b'{"id": 7, "features": [0, 0.25], "SageMakerOutput": {"score": 0.25}}'
        if join
        else b'{"score": 0.25}'
    )
    assert peak < 2 * len(out) + len(body)  # the output, copied once from its buffer
