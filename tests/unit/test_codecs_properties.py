"""Property-based tests of the codecs and of every request header the server reads: any
input gives a result or a 4xx error naming the problem, never another exception; what a
client writes correctly reads back exactly. Each property runs under a fixed seed and a
random one, with bounded examples (``tests/support/hostile.py``)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from infermodes.errors import (
    InfermodesError,
    InvalidInput,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedContentType,
)
from infermodes.http import refuse_coding
from infermodes.predict import codecs
from tests.support.hostile import BODIES, HEADER_TEXT, PROFILES, matrices, write_body

profiles = pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())


def assert_4xx(exc: InfermodesError) -> None:
    assert 400 <= exc.status_code < 500 and str(exc)


@profiles
def test_any_body_decodes_or_is_a_4xx(profile: object) -> None:
    @given(
        body=BODIES,
        content_type=st.sampled_from(codecs.INPUT_TYPES),
        num_features=st.sampled_from([None, 1, 3, 10]),
        max_rows=st.sampled_from([None, 1, 4, 200_000]),
        max_values=st.sampled_from([1, 30, 1 << 24]),
    )
    def check(
        body: bytes,
        content_type: str,
        num_features: int | None,
        max_rows: int | None,
        max_values: int,
    ) -> None:
        try:
            rows = codecs.decode(
                body, content_type, num_features, max_rows=max_rows, max_values=max_values
            )
        except (InvalidInput, PayloadTooLarge) as exc:
            assert_4xx(exc)
            return
        assert rows.dtype == np.float32 and rows.ndim == 2 and rows.shape[0] >= 1
        assert num_features is None or rows.shape[1] == num_features
        assert max_rows is None or rows.shape[0] <= max_rows
        assert rows.size <= max_values
        assert not np.isinf(rows).any()

    profile(check)()  # type: ignore[operator]


@profiles
def test_what_a_client_writes_reads_back_exactly(profile: object) -> None:
    @given(
        matrix=matrices(),
        content_type=st.sampled_from(codecs.INPUT_TYPES),
        ending=st.sampled_from(["\n", "\r\n"]),
        missing=st.sampled_from(["", "nan", "NaN"]),
    )
    def check(matrix: np.ndarray, content_type: str, ending: str, missing: str) -> None:
        if matrix.shape[1] == 1:
            missing = missing or "nan"  # an empty line is a blank line, skipped, not a row
        body = write_body(matrix, content_type, ending, missing)
        got = codecs.decode(body, content_type, matrix.shape[1])
        np.testing.assert_array_equal(got, matrix)  # NaN equals NaN here

    profile(check)()  # type: ignore[operator]


@profiles
def test_any_accept_or_content_type_header_is_a_type_or_a_4xx(profile: object) -> None:
    @given(value=st.one_of(HEADER_TEXT.map(lambda b: b.decode("latin-1")), st.text(max_size=40)))
    def check(value: str) -> None:
        try:
            assert codecs.accept_of(value) in codecs.OUTPUT_TYPES
        except (NotAcceptable, InvalidInput) as exc:
            assert_4xx(exc)
        try:
            assert codecs.content_type_of(value) in codecs.INPUT_TYPES
        except UnsupportedContentType as exc:
            assert_4xx(exc)

    profile(check)()  # type: ignore[operator]


@profiles
def test_any_coding_header_is_accepted_or_a_415(profile: object) -> None:
    @given(name=st.sampled_from([b"content-encoding", b"transfer-encoding"]), value=HEADER_TEXT)
    def check(name: bytes, value: bytes) -> None:
        try:
            refuse_coding(name, value)
        except UnsupportedContentType as exc:
            assert_4xx(exc)
            return
        assert value.strip().lower() in (b"", b"identity", b"chunked")

    profile(check)()  # type: ignore[operator]
