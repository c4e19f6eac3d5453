"""Classifiers through the async worker's stream and the batch transform: the same response
shapes as the model server (``codecs.encode`` of the whole input), chunk after chunk, for
binary and multi-class fixtures of old XGBoost versions; jsonlines is written a line per row as
each chunk is scored, and selected outputs splice into one JSON document like scores."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest

from infermodes.jsonpath import JsonPath
from infermodes.predict import codecs
from infermodes.predict.model import XGBoostModel
from infermodes.predict.outputs import OutputSelection
from infermodes.predict.stream import predict_stream
from infermodes.workers.batch.records import MiniBatch
from infermodes.workers.batch.transform import JSONLINES, Transform
from tests.support import recordio

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
ROWS = np.load(FIXTURES / "rows.npy")
CSV = b"".join(b",".join(repr(float(v)).encode() for v in row) + b"\n" for row in ROWS)
CLASSIFIERS = ["1.7.6/binary.bin", "1.0.2/multiclass.bin", "1.7.6/softmax.bin"]
OUTPUTS = (codecs.CSV, codecs.JSON, codecs.JSONLINES)


class Lines:
    """A sink that records each write, to see jsonlines leave chunk by chunk."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self.writes.append(data)
        return len(data)


def stream(model: XGBoostModel, body: bytes, content_type: str, accept: str) -> Lines:
    sink = Lines()
    rows = predict_stream(
        model,
        io.BytesIO(body),
        sink,
        content_type=content_type,
        accept=accept,
        timeout=60.0,
        chunk_bytes=2048,  # several chunks of the 60 rows
        max_json_bytes=1 << 20,
    )
    assert rows == len(ROWS)
    return sink


def same(got: bytes, want: bytes, accept: str) -> None:
    if accept == codecs.JSON:
        assert json.loads(got) == json.loads(want)
    else:
        assert got == want


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("accept", OUTPUTS)
def test_the_async_stream_answers_as_the_server_does(name: str, accept: str) -> None:
    model = XGBoostModel.load(str(FIXTURES / name))
    np.testing.assert_allclose(
        model.predict(ROWS), np.load(FIXTURES / name.replace(".bin", ".npy")), rtol=1e-5, atol=1e-6
    )
    want = codecs.encode(model.predict(ROWS), accept)
    for body, content_type in [(CSV, codecs.CSV), (recordio.dense(ROWS), codecs.RECORDIO)]:
        sink = stream(model, body, content_type, accept)
        same(b"".join(sink.writes), want, accept)
    if accept == codecs.JSONLINES:
        assert len(stream(model, CSV, codecs.CSV, accept).writes) > 1  # not held to the end


def test_selected_outputs_splice_into_one_json_document() -> None:
    model = XGBoostModel.load(str(FIXTURES / "1.0.2/multiclass.bin"))
    selection = OutputSelection.for_model("predicted_label,probabilities", "multi:softprob", 3)
    model = dataclasses.replace(model, outputs=selection)
    for accept in OUTPUTS:
        want = codecs.encode(model.predict(ROWS), accept, selection)
        same(b"".join(stream(model, CSV, codecs.CSV, accept).writes), want, accept)


@pytest.mark.parametrize("name", CLASSIFIERS)
@pytest.mark.parametrize("accept", (codecs.CSV, JSONLINES))
def test_the_batch_transform_answers_as_the_server_does(name: str, accept: str) -> None:
    """CSV and jsonlines output per record (a mini-batch's JSON is the server's own encode)."""
    model = XGBoostModel.load(str(FIXTURES / name))
    transform = Transform(
        num_features=model.num_features,
        content_type=codecs.CSV,
        accept=accept,
        input_filter=JsonPath.parse("$"),
        output_filter=JsonPath.parse("$"),
        join=False,
        assemble_lines=True,
        whole_documents=False,
        predict=model.predict,
    )
    output, rows = transform(MiniBatch(1, CSV))
    assert rows == len(ROWS)
    assert output == codecs.encode(model.predict(ROWS), accept)
