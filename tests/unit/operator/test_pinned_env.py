"""A pod's env entries win over its storage Secret's ``envFrom``, and the Secret is the
endpoint creator's: a setting left to its default could be set by a key of that Secret
(``INFERMODES_SERVE_ALLOW_PICKLE: "true"``). Whether a pod unpickles its model is the
operator's decision (``operator.allowPickle``), so every mode's container pins it."""

from __future__ import annotations

from typing import Any

import pytest

from infermodes.endpoints import spec as s
from infermodes.operator.modes import mode_for
from tests.unit.operator.test_realtime import REF

MODEL = {"uri": "s3://models/m.tar.gz"}  # allowPickle left out: false
SECRET = {"name": "tenant-storage"}
SPECS: dict[str, dict[str, Any]] = {
    "realtime": {"realtime": {}},
    "serverless": {"serverless": {}},
    "async": {"async": {"outputPath": "s3://o/out/"}},
    "batch": {"batch": {"input": {"uri": "s3://d/in/"}, "output": {"uri": "s3://d/out/"}}},
}


@pytest.mark.parametrize("mode", sorted(SPECS))
@pytest.mark.parametrize("allowed", [False, True])
def test_every_mode_pins_whether_it_unpickles(mode: str, allowed: bool) -> None:
    body = {"mode": mode, "model": {**MODEL, "allowPickle": allowed}, "storageSecretRef": SECRET}
    spec = s.EndpointSpec.model_validate({**body, **SPECS[mode]})
    objects = mode_for(spec.mode).desired_objects(REF, spec, 1, "img:1")
    pod = next(o for o in objects if o["kind"] in ("Deployment", "Job"))["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": SECRET}]
    pinned = {e["name"]: e.get("value") for e in container["env"] if "ALLOW_PICKLE" in e["name"]}
    assert list(pinned.values()) == [str(allowed).lower()], pinned
