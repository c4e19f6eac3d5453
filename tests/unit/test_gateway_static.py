"""``--static-endpoints``: a file of the wrong shape is refused naming what is wrong, as the
gateway's one line at start (it said ``'spec'``, a KeyError's text, or a TypeError's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from infermodes.gateway.static import StaticSource
from infermodes.gateway.table import Table

NOT_A_LIST = '"endpoints" must be a list of objects (name, spec, replicas, ...)'
SPEC = {"mode": "realtime", "model": {"uri": "file:///unused"}, "realtime": {}}


@pytest.mark.parametrize(
    ("document", "said"),
    [
        ([1, 2], 'expected {"endpoints": [...]}, got a list'),
        ({"endpoints": {"name": "a"}}, NOT_A_LIST),
        ({"endpoints": [3]}, NOT_A_LIST),
        ({"endpoints": [{"name": "a"}]}, 'endpoint 1 ("a"): "spec" is missing'),
        ({"endpoints": [{"spec": SPEC}]}, 'endpoint 1: "name" is missing'),
        ({"endpoints": [{"name": 3, "spec": SPEC}]}, 'endpoint 1: "name" must be a string'),
        ({"endpoints": [{"name": "a", "spec": SPEC, "replicas": "127.0.0.1:1"}]},
         'endpoint 1 ("a"): "replicas" must be a list of "HOST:PORT" strings'),
    ],
)  # fmt: skip
def test_a_file_of_the_wrong_shape_names_what_is_wrong(
    tmp_path: Path, document: Any, said: str
) -> None:
    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError) as refused:
        StaticSource(str(path)).load(Table())
    assert str(refused.value) == f"static endpoints file {path}: {said}"


def test_a_file_of_the_documented_shape_fills_the_table(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    entry = {"name": "a", "spec": SPEC, "replicas": ["127.0.0.1:8080"]}
    path.write_text(json.dumps({"endpoints": [entry]}))
    table = Table()
    StaticSource(str(path)).load(table)
    assert table.lookup("a").name == "a"
