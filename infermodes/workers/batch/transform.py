"""One mini-batch in, its output bytes out: decode (through the input filter), predict, encode
(with the join and the output filter). The same codecs and model as the model server.

Output shapes, by ``accept``:
- ``text/csv``: a line per input row: the prediction (joined: the input columns, then it).
- ``application/jsonlines``: a line per input record: ``{"score": x}`` (a record of several
  rows: ``{"predictions": [...]}``; joined: the input object plus ``SageMakerOutput``).
- ``application/json``: the model server's response per mini-batch, ``{"predictions": [...]}``;
  with a join or an output filter, a JSON line per record as for jsonlines.
A record's error names its line within the mini-batch's object (``BadRecord.line``).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from infermodes.errors import InvalidInput, shown
from infermodes.jsonpath import JsonPath
from infermodes.predict import codecs, fastcsv
from infermodes.predict.stream import decode_chunk
from infermodes.workers.batch.records import BadRecord, MiniBatch

JSONLINES = "application/jsonlines"
JSON_GROUP_LINES = 1024  # JSON lines decoded and predicted at once
_ROW = re.compile(r"^row (\d+)[,:]?\s*")
INPUT_RECORD = "the input record"  # what the input filter looks at, in its errors


def bad_record(exc: InvalidInput, first_line: int) -> BadRecord:
    """Codecs say ``row N`` of what they were given; the runner needs the object's line."""
    message = str(exc)
    found = _ROW.match(message)
    if not found:
        return BadRecord(first_line, message)
    return BadRecord(first_line + int(found.group(1)) - 1, message[found.end() :])


@dataclass(frozen=True)
class Transform:
    num_features: int
    content_type: str
    accept: str
    input_filter: JsonPath
    output_filter: JsonPath
    join: bool
    assemble_lines: bool
    whole_documents: bool  # application/json with SplitType None: a mini-batch is one document
    predict: Callable[[np.ndarray], np.ndarray]  # the model's, timed by the runner

    @property
    def per_record_output(self) -> bool:
        """Output made of one line per record, whatever the mini-batches: such an object's
        byte ranges may be transformed apart and their outputs concatenated."""
        return self.accept != codecs.JSON or self.join or not self.output_filter.is_identity

    @property
    def native(self) -> bool:
        """CSV in and out through ``fastcsv``: parsing and prediction release the GIL, so
        threads transform in parallel."""
        plain = self.input_filter.is_identity and self.output_filter.is_identity and not self.join
        return fastcsv.AVAILABLE and plain and self.content_type == self.accept == codecs.CSV

    def __call__(self, batch: MiniBatch) -> tuple[bytes, int]:
        """The mini-batch's output and its number of records, as ``splitType`` cuts them: a
        line (of CSV and libsvm, one row each; of JSON, a document of one row or several), or
        a whole JSON document (``splitType None``). The rows are the model's to count."""
        if self.content_type in (codecs.JSON, JSONLINES):
            return self._json(batch)
        if self.input_filter.is_identity and self.output_filter.is_identity and not self.join:
            try:
                rows = decode_chunk(
                    batch.data, self.content_type, self.num_features, batch.first_line
                )
            except InvalidInput as exc:
                raise bad_record(exc, 1) from None  # decode_chunk numbered the object's lines
            return self._encode(self.predict(rows)), rows.shape[0]
        return self._lines(batch)

    @property
    def output_record(self) -> str:
        """What the output filter looks at, in its errors."""
        joined = "the input joined with the prediction" if self.join else "the prediction"
        return f"the output record ({joined})"

    def _encode(self, predictions: np.ndarray) -> bytes:
        out = fastcsv.encode(predictions, self.accept)
        return out + b"\n" if self.assemble_lines and not out.endswith(b"\n") else out

    def _lines(self, batch: MiniBatch) -> tuple[bytes, int]:
        """CSV or libsvm line by line, each line's columns kept for the join and filters."""
        columns: list[list[bytes]] = []
        selected: list[bytes] = []
        numbers: list[int] = []
        data = batch.data.removeprefix(codecs.UTF8_BOM)  # an object's own, not a column's
        quoted = self.content_type == codecs.CSV and b'"' in data  # else the plain split
        for offset, raw in enumerate(data.split(b"\n")):
            line = raw.strip()
            if not line:
                continue
            number = batch.first_line + offset
            try:
                fields = split_csv_record(line) if quoted else line.split(b",")
                features = _selected_line(self.input_filter, fields, INPUT_RECORD)
                if quoted and b'"' in features:
                    _refuse_quoted_feature(features)
            except InvalidInput as exc:
                raise BadRecord(number, str(exc)) from None
            selected.append(features)
            columns.append(fields)
            numbers.append(number)
        if not selected:
            return b"", 0
        try:
            rows = decode_chunk(b"\n".join(selected), self.content_type, self.num_features, 1)
        except InvalidInput as exc:
            bad = bad_record(exc, 1)  # numbered within the selected lines: map back
            raise BadRecord(numbers[min(bad.line or 1, len(numbers)) - 1], bad.reason) from None
        predictions = self.predict(rows).reshape(rows.shape[0], -1).tolist()
        out = bytearray()
        for fields, number, values in zip(columns, numbers, predictions, strict=True):
            try:
                if self.accept == codecs.CSV:
                    joined = (fields if self.join else []) + _csv_fields(values)
                    out += _selected_line(self.output_filter, joined, self.output_record) + b"\n"
                else:
                    score = {"score": values[0] if len(values) == 1 else values}
                    filtered = _selected_value(self.output_filter, score, self.output_record)
                    out += json.dumps(filtered).encode() + b"\n"
            except InvalidInput as exc:
                raise BadRecord(number, str(exc)) from None
        return bytes(out), len(predictions)

    def _csv(self, batch: MiniBatch, predictions: np.ndarray) -> bytes:
        """CSV lines of JSON records' predictions, through the output filter's columns."""
        if self.output_filter.is_identity:
            return self._encode(predictions)
        out = bytearray()
        for values in predictions.reshape(predictions.shape[0], -1).tolist():
            try:
                fields = _csv_fields(values)
                out += _selected_line(self.output_filter, fields, self.output_record) + b"\n"
            except InvalidInput as exc:  # the filter's columns: the same for every row
                raise BadRecord(batch.first_line, str(exc)) from None
        return bytes(out)

    def _json(self, batch: MiniBatch) -> tuple[bytes, int]:
        """JSON records: a document per line, or the whole mini-batch as one document. Lines
        are decoded, predicted and written a group at a time: what each line's document and
        rows cost (several times its bytes, far more when a join keeps the document) is held
        for a group, not for a mini-batch of up to 100 MB."""
        if self.whole_documents:
            groups: Iterator[list[tuple[int, bytes]]] = iter([[(batch.first_line, batch.data)]])
        else:
            groups = _groups(_numbered_lines(batch), JSON_GROUP_LINES)
        out = bytearray()
        scores: list[np.ndarray] = []  # one response for the mini-batch: kept until the end
        records = 0
        for group in groups:
            documents, blocks = self._decode_documents(group)
            predictions = self.predict(np.concatenate(blocks))
            records += len(documents)
            if not self.per_record_output:
                scores.append(predictions)
            elif self.accept == codecs.CSV:  # a line per input row, whatever the records (no
                out += self._csv(batch, predictions)  # join: refused with the spec)
            else:
                out += self._records(documents, blocks, predictions)
        if scores:
            return self._encode(np.concatenate(scores)), records
        return bytes(out), records

    def _decode_documents(
        self, lines: list[tuple[int, bytes]]
    ) -> tuple[list[tuple[int, object]], list[np.ndarray]]:
        """Each numbered document (kept only for a join) and its rows."""
        documents: list[tuple[int, object]] = []
        blocks: list[np.ndarray] = []
        for number, raw in lines:
            try:  # parsed once: the filter selects from it, and the rows are read from that
                document, marked = codecs.parse_record(raw)
                selected = _selected_value(self.input_filter, document, INPUT_RECORD)
                if marked:  # a NaN or an infinity, which may lie where the model does not read
                    codecs.refuse_constants(selected)
                if not self.join:  # only a join writes it out again: its rows are let go
                    document = None
                rows = self._record_rows(selected, number)
                del selected
            except InvalidInput as exc:
                raise BadRecord(number, str(exc)) from None
            except ValueError as exc:  # json's own errors
                raise BadRecord(number, f"malformed JSON: {exc}") from None
            documents.append((number, document))
            blocks.append(rows)
        return documents, blocks

    def _record_rows(self, selected: object, number: int) -> np.ndarray:
        """A JSON record's rows. A line's record of one row is that line: its failure names the
        line alone, as a CSV row's does, where the codecs said ``row 1`` (the rows of a record
        of several keep theirs; a whole document's errors read as the model server's for that
        body). Its rows are let go as read unless a join writes the record out again."""
        try:
            return codecs.json_rows(selected, self.num_features, release=not self.join)
        except InvalidInput as exc:  # its rows counted only then: not twice for every record
            if not self.whole_documents and len(codecs.json_row_list(selected)) == 1:
                raise bad_record(exc, number) from None
            raise

    def _records(
        self,
        documents: list[tuple[int, object]],
        blocks: list[np.ndarray],
        predictions: np.ndarray,
    ) -> bytes:
        """A JSON line per record: its scores (joined: in its input document), filtered."""
        out = bytearray()
        start = 0
        for (number, document), rows in zip(documents, blocks, strict=True):
            scores = predictions[start : start + rows.shape[0]].tolist()
            start += rows.shape[0]
            result: object = (
                {"score": scores[0]}
                if len(scores) == 1
                else {"predictions": [{"score": score} for score in scores]}
            )
            if self.join:
                joined = (
                    dict(document) if isinstance(document, dict) else {"SageMakerInput": document}
                )
                joined["SageMakerOutput"] = result
                result = joined
            try:
                filtered = _selected_value(self.output_filter, result, self.output_record)
                out += json.dumps(filtered).encode() + b"\n"
            except InvalidInput as exc:
                raise BadRecord(number, str(exc)) from None
        return bytes(out)


def _selected_line(path: JsonPath, fields: list[bytes], record: str) -> bytes:
    """The CSV line of the columns ``path`` selects of ``record``. A
    selection of no column, or of blank ones only, is a blank line: an input record's the
    decoders skip as no row (it would go unpredicted, its line unmatched with the rows), an
    output record's is a record written as nothing; so it is refused."""
    columns = path.select_columns(fields, record)
    line = b",".join(columns)
    if not line.strip(b" \t"):  # what the decoders take as a blank line
        what = "only blank columns" if columns else "no column"
        raise path.refusal(f"selects {what} of {record}, which has {len(fields)} columns")
    return line


def split_csv_record(line: bytes) -> list[bytes]:
    """A CSV record's fields as RFC 4180 reads them: a field that starts with a double quote
    may hold commas and doubled quotes up to its closing quote. Each is kept as written, quotes
    included, so that a field a filter or the join passes through is valid CSV again. As
    Python's csv module and spreadsheets read them, what follows a closing quote up to the next
    comma stays part of its field (``"a" ,``), and a quote inside a field that does not start
    with one is a character of it (``5" screw``). A record is a line (records are cut at
    newlines), so a quoted field still open at its end is malformed. The fields between quoted
    ones are split at once: a line is read once, however many fields it has."""
    fields: list[bytes] = []
    start = 0
    while True:
        if line.startswith(b'"', start):
            closing = _closing_quote(line, start, len(fields) + 1)
            comma = line.find(b",", closing + 1)
            if comma < 0:
                fields.append(line[start:])
                return fields
            fields.append(line[start:comma])
            start = comma + 1
            continue
        quoted = line.find(b',"', start)  # the next field that starts with a quote
        if quoted < 0:
            fields += line[start:].split(b",")
            return fields
        fields += line[start:quoted].split(b",")
        start = quoted + 1


def _closing_quote(line: bytes, opening: int, column: int) -> int:
    """Where the quoted field opened at ``opening`` ends: the first quote not doubled."""
    at = opening + 1
    while (at := line.find(b'"', at)) >= 0:
        if not line.startswith(b'"', at + 1):
            return at
        at += 2
    raise InvalidInput(
        f"column {column}: the quote that opens the field is not closed on its line "
        f"({_field(line[opening:])}): a newline inside a quoted field is not supported (CSV "
        "records are cut at newlines); remove the newline from the field, or close its quote"
    )


def _refuse_quoted_feature(features: bytes) -> None:
    """The model reads numbers, unquoted, as the model server does: a quoted field selected
    for it is refused here, naming it, rather than split at its commas by the decoder."""
    for column, field in enumerate(split_csv_record(features), 1):
        if field.startswith(b'"'):
            raise InvalidInput(
                f"column {column}: the quoted field {_field(field)} is no number the model "
                "reads (it reads fields unquoted, as the model server does): leave it out "
                "with the input filter, as $[1:] leaves out the first column"
            )


def _field(text: bytes) -> str:
    return shown(text.decode("utf-8", "replace"))


def _selected_value(path: JsonPath, value: object, record: str) -> object:
    """The part of a JSON ``record`` that ``path`` selects. An empty list or object selected
    is no row of an input record and a record of no value in the output, so it is refused."""
    selected = path.select(value, record)
    if not path.is_identity and isinstance(selected, list | dict) and not selected:
        what = "list" if isinstance(selected, list) else "object"
        raise path.refusal(f"selects an empty {what} from {record}")
    return selected


def _numbered_lines(batch: MiniBatch) -> Iterator[tuple[int, bytes]]:
    """The mini-batch's non-blank lines and their numbers, one at a time (``split`` would
    make every line's bytes at once)."""
    data = batch.data
    start = 0
    number = batch.first_line
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            end = len(data)
        line = data[start:end]
        if line.strip():
            yield number, line
        start = end + 1
        number += 1


def _groups(lines: Iterator[tuple[int, bytes]], size: int) -> Iterator[list[tuple[int, bytes]]]:
    while group := list(itertools.islice(lines, size)):
        yield group


def _csv_fields(values: list[float]) -> list[bytes]:
    return [repr(float(value)).encode() for value in values]
