"""Property-based tests of every header the async API reads: any bytes in any of them give a
request to queue or a 4xx naming the problem, never another exception; what a client writes
correctly (UTF-8 attributes, ASCII digits) reads back exactly. Each property runs under a fixed
seed and a random one, with bounded examples (``tests/support/hostile.py``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers

from infermodes.errors import InfermodesError
from infermodes.gateway.async_accept import (
    CUSTOM_ATTRIBUTES,
    INFERENCE_ID_HEADER,
    INPUT_LOCATION,
    INVOCATION_TIMEOUT,
    REQUEST_TTL,
    Submission,
    asked_of,
    submission_with,
)
from infermodes.settings import AsyncEndpoint
from tests.support.hostile import HEADER_TEXT, PROFILES

profiles = pytest.mark.parametrize("profile", PROFILES.values(), ids=PROFILES.keys())
ENDPOINT = AsyncEndpoint.under("file:///srv/ep")
READ = ["content-type", "accept", INPUT_LOCATION, CUSTOM_ATTRIBUTES, REQUEST_TTL]
READ += [INVOCATION_TIMEOUT, INFERENCE_ID_HEADER]  # every header the API reads
HEADERS = st.dictionaries(
    st.sampled_from(READ),
    st.one_of(
        HEADER_TEXT,
        st.binary(max_size=40).filter(lambda raw: b"\r" not in raw and b"\n" not in raw),
        st.integers(-5, 30000).map(lambda n: str(n).encode()),
        st.sampled_from([b"\xb2", "\u0661".encode(), b"+5", b" 7 ", b"file:///srv/ep/input/x"]),
    ),
)


def submit(headers: dict[str, bytes], body: bytes) -> Submission | InfermodesError:
    raw = [(name.lower().encode(), value) for name, value in headers.items()]
    try:
        asked = asked_of(ENDPOINT, Headers(raw=raw), [])  # as the route: headers, then body
        return submission_with("ep", ENDPOINT, asked, body, 1000.0)
    except InfermodesError as exc:
        return exc


@profiles
def test_any_header_bytes_give_a_request_or_a_4xx(profile: object) -> None:
    @given(headers=HEADERS, body=st.sampled_from([b"", b"1,2\n"]))
    def check(headers: dict[str, bytes], body: bytes) -> None:
        answer = submit(headers, body)
        if isinstance(answer, InfermodesError):
            assert 400 <= answer.status_code < 500 and str(answer)

    profile(check)()  # type: ignore[operator]


@profiles
def test_well_formed_values_read_back_exactly(profile: object) -> None:
    @given(
        attributes=st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=200),
        ttl=st.integers(1, 21600),
        timeout=st.integers(1, 3600),
    )
    def check(attributes: str, ttl: int, timeout: int) -> None:
        answer = submit(
            {
                CUSTOM_ATTRIBUTES: attributes.encode(),
                REQUEST_TTL: str(ttl).encode(),
                INVOCATION_TIMEOUT: str(timeout).encode(),
            },
            b"1,2\n",
        )
        assert isinstance(answer, Submission), answer
        message = answer.message
        assert message.custom_attributes == attributes
        assert (message.expires_at - message.accepted_at, message.invocation_timeout_seconds) == (
            ttl,
            timeout,
        )

    profile(check)()  # type: ignore[operator]
