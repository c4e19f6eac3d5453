"""The CustomResourceDefinition, generated from the spec models (``crds/`` holds the output).

Pydantic's JSON schema is close to a Kubernetes structural schema; the differences handled here:
``$ref`` is inlined, optional fields (``X | None``) become plain optional properties, ``const``
and one-value enums stay enums, titles are dropped, an int-or-string field (a quantity) gets
its ``anyOf`` of both types, and each model's ``cel_rules`` become ``x-kubernetes-validations``
so cross-field rules are enforced by the API server too.
"""

from __future__ import annotations

from typing import Any

from infermodes.endpoints import spec as s

_DROPPED = {"title", "$defs"}


def _models_by_name() -> dict[str, type[s.SpecBlock]]:
    found: dict[str, type[s.SpecBlock]] = {}
    pending: list[type[s.SpecBlock]] = [s.EndpointSpec]
    while pending:
        model = pending.pop()
        found[model.__name__] = model
        for field in model.model_fields.values():
            for candidate in _model_types(field.annotation):
                if candidate.__name__ not in found:
                    pending.append(candidate)
    return found


def _model_types(annotation: Any) -> list[type[s.SpecBlock]]:
    if isinstance(annotation, type) and issubclass(annotation, s.SpecBlock):
        return [annotation]
    return [t for arg in getattr(annotation, "__args__", ()) for t in _model_types(arg)]


def re2_escaped(pattern: str) -> str:
    """``pattern`` with each character beyond ASCII as RE2's ``\\x{...}``: the same class to the
    API server, and a CRD a reader can see (a no-break space, written as itself, is not seen;
    Python's own regex, which the models' patterns also serve, has no such escape)."""
    return "".join(c if c.isascii() else f"\\x{{{ord(c):x}}}" for c in pattern)


def _structural(node: Any, defs: dict[str, Any], models: dict[str, type[s.SpecBlock]]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs, models) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return _structural(merged, defs, models)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            rest = {k: v for k, v in node.items() if k not in ("anyOf", "default")}
            if node.get("default") is not None:
                rest["default"] = node["default"]
            return _structural({**options[0], **rest}, defs, models)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):  # OpenAPI 3.0 wants booleans
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: _structural(v, defs, models) for name, v in value.items()}
        elif key == "pattern":
            out[key] = re2_escaped(value)
        else:
            out[key] = _structural(value, defs, models)
    if out.get("type") == "object" and "properties" in out:
        out.pop("additionalProperties", None)
        model = models.get(node.get("title", ""))
        if model is not None:
            _add_object_defaults(model, out["properties"])
            if model.cel_rules:
                out["x-kubernetes-validations"] = [
                    {"rule": rule, "message": message} for rule, message in model.cel_rules
                ]
    if out.get("x-kubernetes-int-or-string"):  # a structural schema's form for it
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "enum" in out and "type" not in out:
        sample = out["enum"][0]
        out["type"] = "integer" if isinstance(sample, int) else "string"
    if out.get("type") == "number" and isinstance(out.get("default"), int):
        out["default"] = float(out["default"])
    return out


def _add_object_defaults(model: type[s.SpecBlock], properties: dict[str, Any]) -> None:
    """Sub-blocks with defaults (``default_factory``) default to ``{}``, so the API server
    fills in their fields and ``kubectl get -o yaml`` shows every value in force."""
    for name, field in model.model_fields.items():
        alias = field.alias or name
        if field.default_factory is not None and alias in properties:
            properties[alias]["default"] = {}


def spec_schema() -> dict[str, Any]:
    raw = s.EndpointSpec.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _structural(raw, raw.get("$defs", {}), _models_by_name())
    return schema


STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "phase": {"type": "string"},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "replicas": {"type": "integer"},
        "readyReplicas": {"type": "integer"},
        "desiredReplicas": {"type": "integer"},
        "observedGeneration": {"type": "integer"},
        "url": {"type": "string"},
        "appliedGeneration": {"type": "integer"},
        "appliedSpec": {"type": "string"},
        "loadedTemplate": {"type": "string"},
        "backlog": {
            "type": "object",
            "properties": {
                "ready": {"type": "integer", "nullable": True},
                "inFlight": {"type": "integer", "nullable": True},
                "total": {"type": "integer", "nullable": True},
                "oldestAgeSeconds": {"type": "number", "nullable": True},
                "waitingWebhookJobs": {"type": "integer"},
            },
        },
        "progress": {
            "type": "object",
            "properties": {
                "objectsTotal": {"type": "integer"},
                "objectsDone": {"type": "integer"},
                "objectsFailed": {"type": "integer"},
                "recordsDone": {"type": "integer"},
                "text": {"type": "string"},
            },
        },
        "conditions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "status"],
                "properties": {
                    "type": {"type": "string"},
                    "status": {"type": "string"},
                    "reason": {"type": "string"},
                    "message": {"type": "string"},
                    "lastTransitionTime": {"type": "string", "format": "date-time"},
                },
            },
        },
    },
}


def crd_manifest() -> dict[str, Any]:
    """The whole CRD object, ready to dump as YAML."""
    name_rule = (
        f"self.metadata.name.matches('{s.NAME_PATTERN}') && "
        f"size(self.metadata.name) <= {s.MAX_NAME_LENGTH}"
    )
    columns = [
        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
        {"name": "Desired", "type": "integer", "jsonPath": ".status.desiredReplicas"},
        {"name": "Backlog", "type": "integer", "jsonPath": ".status.backlog.total"},
        {"name": "Progress", "type": "string", "jsonPath": ".status.progress.text"},
    ]
    schema = {
        "type": "object",
        "required": ["spec"],
        "x-kubernetes-validations": [
            {
                "rule": name_rule,
                "message": "metadata.name must be a DNS-1035 label of at "
                f"most {s.MAX_NAME_LENGTH} characters",
            }
        ],
        "properties": {**_OBJECT_FIELDS, "spec": spec_schema(), "status": STATUS_SCHEMA},
    }
    return _definition(s.KIND, s.PLURAL, s.SHORT_NAME, columns, schema, {"status": {}})


_OBJECT_FIELDS = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object"},
}


def _definition(
    kind: str,
    plural: str,
    short_name: str,
    columns: list[dict[str, str]],
    schema: dict[str, Any],
    subresources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A namespaced CRD of one served and stored version, its columns followed by Age."""
    version: dict[str, Any] = {"name": s.VERSION, "served": True, "storage": True}
    if subresources is not None:
        version["subresources"] = subresources
    version["additionalPrinterColumns"] = [
        *columns,
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    version["schema"] = {"openAPIV3Schema": schema}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{s.GROUP}"},
        "spec": {
            "group": s.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short_name],
                "listKind": f"{kind}List",
            },
            "versions": [version],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `infermodes crd` from infermodes/endpoints/spec.py. Do not edit.\n"
    return header + _dump(crd_manifest())


def _dump(manifest: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(manifest, sort_keys=False, width=100)


def _column(name: str, path: str) -> dict[str, str]:
    return {"name": name, "type": "string", "jsonPath": path}


# The managed platform API's records (``gateway/platform_store.py``): kind -> (plural, short
# name, printer columns). Their spec is the platform request as accepted, in its own field names.
RECORD_CRDS: dict[str, tuple[str, str, list[dict[str, str]]]] = {
    "InferenceModel": (
        "inferencemodels",
        "imodel",
        [
            _column("Name", ".spec.ModelName"),
            _column("Image", ".spec.PrimaryContainer.Image"),
            _column("ModelData", ".spec.PrimaryContainer.ModelDataUrl"),
        ],
    ),
    "InferenceEndpointConfig": (
        "inferenceendpointconfigs",
        "iec",
        [
            _column("Name", ".spec.EndpointConfigName"),
            _column("Model", ".spec.ProductionVariants[0].ModelName"),
            _column("Serverless", ".spec.ProductionVariants[0].ServerlessConfig"),
            _column("Instances", ".spec.ProductionVariants[0].InitialInstanceCount"),
            _column("Async", ".spec.AsyncInferenceConfig.OutputConfig.S3OutputPath"),
        ],
    ),
}


def record_crd_manifest(kind: str) -> dict[str, Any]:
    """The CRD of one kind of platform record: a spec of any shape (the API validated it)."""
    plural, short_name, columns = RECORD_CRDS[kind]
    schema = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            **_OBJECT_FIELDS,
            "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    return _definition(kind, plural, short_name, columns, schema)


def record_crd_yaml(kind: str) -> str:
    header = f"# Generated by `infermodes crd --kind {kind}`. Do not edit.\n"
    return header + _dump(record_crd_manifest(kind))


def crd_files() -> dict[str, str]:
    """Every CRD by its file name in ``crds/`` (and the chart's ``crds/``)."""
    files = {f"{s.PLURAL}.yaml": crd_yaml()}
    files.update({f"{RECORD_CRDS[k][0]}.yaml": record_crd_yaml(k) for k in RECORD_CRDS})
    return files
