"""A batch's contentType and accept are the headers its instances send each mini-batch (the
platform's TransformInput.ContentType and TransformOutput.Accept): the spec (kubectl apply, up),
the runner's settings (``infermodes batch``) and the platform API read them as the model server
does, parameters and all; what the instances cannot read is refused naming the field, and the
CRD's pattern and CEL rules say what a schema can of the same reading."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from infermodes import media
from infermodes.endpoints import spec as s
from infermodes.settings import (
    BATCH_ACCEPT_PATTERN,
    BATCH_CONTENT_TYPE_PATTERN,
    BatchSettings,
    batch_content_type,
)

REQUIRED = {"model_uri": "m", "input_uri": "s3://b/in/", "output_uri": "s3://b/out/"}
CONTENT_TYPES = [
    ("text/csv; charset=utf-8", "text/csv"),
    ("application/json;charset=UTF-8", "application/json"),
    ('application/jsonlines; charset="utf-8"', "application/jsonlines"),
    ("Text/CSV", "text/csv"),
    (" application/csv ;foo=bar", "text/csv"),
    ("text/x-libsvm", "text/libsvm"),
    ("", "text/csv"),  # blank: a missing header, the default (the platform API took it so)
    (" \t", "text/csv"),
]
ACCEPTS = [
    ("text/csv; charset=utf-8", "text/csv"),
    ("application/json;charset=UTF-8", "application/json"),
    ("application/json;q=0.5, application/jsonlines", "application/jsonlines"),
    ("*/*", "text/csv"),
    ("image/png, application/*", "application/json"),
    ("", "text/csv"),  # an empty list asks for no type in particular
    (" , ", "text/csv"),
]
# (value, what the refusal says): each names the field it is in
BAD_CONTENT_TYPES = [
    ("text/plain", "unsupported content type 'text/plain'"),
    ("garbage", "unsupported content type 'garbage'"),
    ("text/csv; charset=latin-1", "unsupported charset 'latin-1'"),
    ("text/csv; header=present", "header=present"),
    ("text/csv\n", "must be text/csv, application/json"),
    ("text/csv; charset=utf-8" + " " * 300, "at most 256 characters"),
]
BAD_ACCEPTS = [
    ("image/png", "cannot produce 'image/png'"),
    ("text/csv;q=2", "q must be a number"),
    ("text/csv;q=0", "cannot produce"),
    ("application/csv", "cannot produce"),  # an alias of a Content-Type, not of an output
    ("text/csv\x00", "cannot produce"),
    ("text/csv, \x7f", "must be an Accept list"),
]


def batch_spec(content_type: str = "text/csv", accept: str = "text/csv") -> dict[str, Any]:
    return {
        "mode": "batch",
        "model": {"uri": "s3://b/model.tar.gz"},
        "batch": {
            "input": {"uri": "s3://b/in/", "contentType": content_type},
            "output": {"uri": "s3://b/out/", "accept": accept},
        },
    }


@pytest.mark.parametrize(("given", "read"), CONTENT_TYPES)
def test_a_content_type_with_parameters_is_the_type_it_names(given: str, read: str) -> None:
    parsed = s.parse_spec(batch_spec(content_type=given))
    assert not isinstance(parsed, str), parsed
    assert parsed.batch is not None and parsed.batch.input.content_type == read
    assert BatchSettings(**REQUIRED, content_type=given).content_type == read
    assert re.fullmatch(BATCH_CONTENT_TYPE_PATTERN, given)  # kubectl apply takes it too


@pytest.mark.parametrize(("given", "read"), ACCEPTS)
def test_an_accept_with_parameters_is_the_output_the_model_server_would_give(
    given: str, read: str
) -> None:
    parsed = s.parse_spec(batch_spec(accept=given))
    assert not isinstance(parsed, str), parsed
    assert parsed.batch is not None and parsed.batch.output.accept == read
    assert BatchSettings(**REQUIRED, accept=given).accept == read
    assert re.fullmatch(BATCH_ACCEPT_PATTERN, given)


@pytest.mark.parametrize(
    ("field", "given", "why"),
    [
        *(("contentType", *bad) for bad in BAD_CONTENT_TYPES),
        *(("accept", *bad) for bad in BAD_ACCEPTS),
    ],
)
def test_a_header_the_instances_cannot_use_is_refused_naming_the_field(
    field: str, given: str, why: str
) -> None:
    where, setting = {"contentType": ("input", "content_type"), "accept": ("output", "accept")}[
        field
    ]
    problems = s.parse_spec(batch_spec(**{setting: given}))
    assert isinstance(problems, str)
    assert problems.startswith(f"spec.batch.{where}.{field}: ") and why in problems, problems
    with pytest.raises(ValidationError, match=rf"\n{setting}\n") as caught:
        BatchSettings(**REQUIRED, **{setting: given})
    assert why in str(caught.value)


@pytest.mark.parametrize(
    "given",
    [
        "text/plain",
        "garbage",
        " ;",
        "text/csv\n",
        "text/csvx",
        "xtext/csv",
        "text/csv,",
        "text/c\u017fv",
        "application/j\u017fon",
        "text/libsvm".replace("s", "\u017f"),
    ],
)
def test_the_crd_pattern_refuses_a_content_type_of_no_batch_type(given: str) -> None:
    assert not re.fullmatch(BATCH_CONTENT_TYPE_PATTERN, given)


@pytest.mark.parametrize("given", ["image/png", "garbage", ";", "text/csvx", "text/html, x/*"])
def test_the_crd_pattern_refuses_an_accept_naming_no_output(given: str) -> None:
    assert not re.fullmatch(BATCH_ACCEPT_PATTERN, given)


def cel_matches(rule: str, header: str) -> bool:
    """A ``matches('...')`` of ``media.type_is_cel`` as the API server reads it (RE2 and
    Python's re agree on its pattern; CEL reads the string literal's \\t as a tab)."""
    pattern = re.fullmatch(r"[\w.]+\.matches\('(.*)'\)", rule)
    assert pattern is not None, rule
    return re.search(pattern[1].replace("\\t", "\t"), header) is not None


@pytest.mark.parametrize(("given", "_"), CONTENT_TYPES)
@pytest.mark.parametrize(("rule", "kind"), [(s.CSV_INPUT_CEL, media.CSV),
                                            (s.LIBSVM_INPUT_CEL, media.LIBSVM)])  # fmt: skip
def test_the_cel_rules_read_the_content_types_type_as_media_does(
    given: str, _: str, rule: str, kind: str
) -> None:
    assert cel_matches(rule, given) == (batch_content_type(given) == kind)


@pytest.mark.parametrize(("given", "read"), [a for a in ACCEPTS if not re.search("[,*]", a[0])])
def test_the_join_rule_reads_a_single_accept_as_media_does(given: str, read: str) -> None:
    assert cel_matches(s.CSV_OUTPUT_CEL, given) == (read == media.CSV)
