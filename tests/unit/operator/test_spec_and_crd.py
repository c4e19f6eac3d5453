"""The spec models and the CRD generated from them agree, and the committed copies are current."""

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from infermodes.destinations import WEBHOOK_PATTERN
from infermodes.endpoints import spec as s
from infermodes.endpoints.spec import parse_spec
from infermodes.jsonpath import GRAMMAR
from infermodes.operator.crd import crd_files, crd_manifest, crd_yaml
from infermodes.settings import JOIN_LIKE_WITH_LIKE, LIBSVM_PROCESSING

REPO = Path(__file__).resolve().parents[3]
MODEL = {"uri": "file:///models/abalone/model.tar.gz"}


def batch_spec(**fields: object) -> dict:
    block = {"input": {"uri": "file:///i"}, "output": {"uri": "file:///o"}, **fields}
    return {"mode": "batch", "model": MODEL, "batch": block}


def test_committed_crds_are_generated_from_the_models() -> None:
    assert (REPO / "crds/inferenceendpoints.yaml").read_text() == crd_yaml()
    files = crd_files()
    assert set(files) == {"inferenceendpoints.yaml", "inferencemodels.yaml",
                          "inferenceendpointconfigs.yaml"}  # fmt: skip
    assert {p.name for p in (REPO / "crds").glob("*.yaml")} == set(files)
    for name, text in files.items():
        assert (REPO / "crds" / name).read_text() == text, name


def test_chart_carries_the_same_crds() -> None:
    for committed in (REPO / "crds").glob("*.yaml"):
        chart_copy = REPO / "charts/infermodes/crds" / committed.name
        assert chart_copy.read_text() == committed.read_text()


def walk(schema: dict, path: str = "") -> dict[str, dict]:
    found = {path: schema}
    for name, child in (schema.get("properties") or {}).items():
        found.update(walk(child, f"{path}.{name}" if path else name))
    return found


def test_schema_carries_the_platform_limits() -> None:
    root = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    nodes = walk(root["properties"]["spec"])
    assert nodes["mode"]["enum"] == ["realtime", "serverless", "async", "batch"]
    assert nodes["serverless.memorySizeInMB"]["enum"] == [1024, 2048, 3072, 4096, 5120, 6144]
    assert nodes["serverless.maxConcurrency"]["minimum"] == 1
    assert nodes["serverless.maxConcurrency"]["maximum"] == 200
    assert nodes["async.invocationTimeoutSeconds"]["maximum"] == 3600
    assert nodes["batch.maxPayloadInMB"]["maximum"] == 100
    assert nodes["batch.invocationsMaxRetries"]["maximum"] == 3
    assert nodes["batch.input.splitType"]["enum"] == ["None", "Line"]
    assert nodes["batch.input.compressionType"]["enum"] == ["None", "Gzip"]
    payload, libsvm, join, _inside, immutable = nodes["batch"]["x-kubernetes-validations"]
    assert (libsvm["message"], join["message"]) == (LIBSVM_PROCESSING, JOIN_LIKE_WITH_LIKE)
    assert payload == {"rule": "self.maxPayloadInMB * self.maxConcurrentTransforms <= 100",
                       "message": s.PAYLOAD_RULE}  # fmt: skip
    assert "self.input == oldSelf.input" in immutable["rule"]
    assert "stop" not in immutable["rule"]
    assert nodes["realtime.scaling.target"]["exclusiveMinimum"] is True
    assert "uri" in nodes["model"]["required"]
    assert set(root["properties"]["spec"]["required"]) == {"mode", "model"}


def test_every_model_field_is_in_the_schema() -> None:
    nodes = walk(crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])

    def fields(model: type, prefix: str) -> list[str]:
        names = []
        for name, field in model.model_fields.items():
            path = f"{prefix}.{field.alias or name}"
            names.append(path)
            annotation = field.annotation
            for candidate in (annotation, *getattr(annotation, "__args__", ())):
                if isinstance(candidate, type) and issubclass(candidate, s.SpecBlock):
                    names.extend(fields(candidate, path))
        return names

    missing = [path for path in fields(s.EndpointSpec, "spec") if path not in nodes]
    assert missing == []


def test_printer_columns_and_short_name() -> None:
    crd = crd_manifest()["spec"]
    assert crd["names"]["shortNames"] == ["ie"]
    columns = [c["name"] for c in crd["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Mode", "Phase", "Ready", "Desired", "Backlog", "Progress", "Age"]
    assert crd["versions"][0]["subresources"] == {"status": {}}


def test_cel_rules_mirror_the_model_validators() -> None:
    spec_node = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]
    rules = {r["rule"]: r["message"] for r in spec_node["x-kubernetes-validations"]}
    # a block's presence for each mode, a batch job's model, image and storage Secret, which
    # mode changes, where inferenceOutput applies
    assert len(rules) == 4 * 4 + 5
    for mode, block in s.MODE_BLOCKS.items():
        required = rules[f"self.mode != '{mode}' || has(self.{block})"]
        assert required == f"spec.{block} is required when mode is {mode}"
        for other in set(s.Mode) - {mode}:
            refused = rules[f"self.mode != '{other}' || !has(self.{block})"]
            assert refused == f"spec.{block} is not allowed when mode is {other}"


def test_the_crd_refuses_another_modes_block_in_the_specs_words() -> None:
    """The CRD said "spec.serverless is required when mode is serverless and not allowed
    otherwise" of a serverless block on a realtime endpoint, where the spec (up, the
    operator) says it is not allowed there."""
    spec_node = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "spec"
    ]
    messages = {r["message"] for r in spec_node["x-kubernetes-validations"]}
    said = parse_spec({"mode": "realtime", "model": MODEL, "realtime": {}, "serverless": {}})
    assert said == "spec.serverless is not allowed when mode is realtime"
    assert said in messages
    said = parse_spec({"mode": "async", "model": MODEL, "realtime": {}})
    assert isinstance(said, str) and said.startswith("spec.realtime is not allowed when mode is")
    assert {part.strip() for part in said.split(";")} <= messages


@pytest.mark.parametrize(
    ("old", "new", "allowed"),
    [
        (s.Mode.REALTIME, s.Mode.SERVERLESS, True),  # one model-server Deployment
        (s.Mode.SERVERLESS, s.Mode.REALTIME, True),
        (s.Mode.ASYNC, s.Mode.ASYNC, True),
        (s.Mode.ASYNC, s.Mode.REALTIME, False),  # workers and model servers: other selectors
        (s.Mode.SERVERLESS, s.Mode.ASYNC, False),
        (s.Mode.REALTIME, s.Mode.BATCH, False),  # a Job
        (s.Mode.BATCH, s.Mode.ASYNC, False),
    ],
)
def test_a_mode_changes_in_place_only_between_modes_of_one_workload(
    old: s.Mode, new: s.Mode, allowed: bool
) -> None:
    """The CRD's transition rule says the same (``MODE_CHANGE``), run by the API server in
    tests/e2e/test_realtime_operator.py."""
    assert s.mode_change_allowed(old, new) is allowed


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"mode": "sometimes", "model": MODEL, "realtime": {}}, "spec.mode"),
        (
            {"mode": "serverless", "model": MODEL, "serverless": {"memorySizeInMB": 1000}},
            "spec.serverless.memorySizeInMB",
        ),
        (
            {"mode": "serverless", "model": MODEL, "serverless": {"maxConcurrency": 0}},
            "greater than or equal to 1",
        ),
        (
            {"mode": "serverless", "model": MODEL, "serverless": {"maxConcurrency": 201}},
            "less than or equal to 200",
        ),
        (
            {
                "mode": "async",
                "model": MODEL,
                "async": {"outputPath": "file:///o", "invocationTimeoutSeconds": 4000},
            },
            "less than or equal to 3600",
        ),
        ({"mode": "realtime", "realtime": {}}, "spec.model: Field required"),
        ({"mode": "realtime", "model": MODEL}, "spec.realtime is required when mode is realtime"),
        (
            {
                "mode": "realtime",
                "model": MODEL,
                "realtime": {},
                "batch": {"input": {"uri": "file:///i"}, "output": {"uri": "file:///o"}},
            },
            "spec.batch is not allowed when mode is realtime",
        ),
        (
            {"mode": "realtime", "model": MODEL, "realtime": {"minReplicas": 3, "maxReplicas": 2}},
            "minReplicas must not exceed maxReplicas",
        ),
        (
            {"mode": "realtime", "model": MODEL, "realtime": {"replicas": 3}},
            "spec.realtime.replicas",
        ),
        (batch_spec(maxPayloadInMB=20, maxConcurrentTransforms=6), s.PAYLOAD_RULE),
        (batch_spec(invocationsMaxRetries=4), "less than or equal to 3"),
        (
            {
                "mode": "async",
                "model": {**MODEL, "inferenceOutput": "predicted_label"},
                "async": {"outputPath": "file:///o"},
            },
            "realtime and serverless endpoints only",
        ),
        (batch_spec(input={"uri": "file:///i", "splitType": "RecordIO"}), "'None' or 'Line'"),
        (batch_spec(input={"uri": "file:///i", "compressionType": "Zip"}), "'None' or 'Gzip'"),
        (batch_spec(output={"uri": "file:///o", "accept": "text/xml"}), "spec.batch.output.accept"),
        (batch_spec(invocationsTimeoutInSeconds=3601), "less than or equal to 3600"),
        # what every instance refused at its start, only its log saying why: refused here
        (
            batch_spec(
                output={"uri": "file:///o", "accept": "application/jsonlines"},
                dataProcessing={"joinSource": "Input"},
            ),
            "spec.batch: joinSource Input joins like with like",
        ),
        (
            batch_spec(
                input={"uri": "file:///i", "contentType": "text/libsvm"},
                dataProcessing={"inputFilter": "$[1:]"},
            ),
            "spec.batch: inputFilter and joinSource need CSV or JSON input, not libsvm",
        ),
        (  # the same prefix in two spellings: no input would be left
            batch_spec(input={"uri": "/data/in"}, output={"uri": "file:///data/in/"}),
            "spec.batch: the input prefix lies inside output.uri (or is it)",
        ),
        (  # the inputs inside the outputs: none left either
            batch_spec(input={"uri": "s3://b/out/in/"}, output={"uri": "s3://b/out"}),
            "spec.batch: the input prefix lies inside output.uri (or is it)",
        ),
        *(
            (
                {"mode": "async", "model": MODEL, "async": {"outputPath": "s3://b/o", field: path}},
                f"spec.async.{field}: must be an s3://bucket/prefix or file:///path URI, "
                "without control characters; got ",
            )
            for field in ("outputPath", "failurePath", "inputPath")
            for path in (
                "http://host/out",
                "s3://",
                "out/relative",
                "file://host/out",
                "s3://b/out?x",
                "s3://b?x",
                "file:///out#x",
            )  # a query would cut it
        ),
        *(  # a relative path would be the pod's working directory's; a NUL no path can hold
            (raw, f"{where}: must be an s3://bucket/key URI, a file:/// URI or an absolute path")
            for path in (
                "300m",
                "models/abalone/model.tar.gz",
                "https://host/m.tar.gz",
                "file:///m.tar.gz\x00x",
                "s3://b/k\x01",
                "s3://b\x7f/k",
            )
            for raw, where in (
                ({"mode": "realtime", "model": {"uri": path}, "realtime": {}}, "spec.model.uri"),
                (batch_spec(input={"uri": path}), "spec.batch.input.uri"),
                (batch_spec(output={"uri": path}), "spec.batch.output.uri"),
            )
        ),
        (
            {"mode": "realtime", "model": MODEL, "realtime": {"resources": {"cpu": "0"}}},
            "spec.realtime.resources.cpu",
        ),
        (
            {"mode": "realtime", "model": MODEL, "realtime": {"resources": {"memory": "0Mi"}}},
            "spec.realtime.resources.memory",
        ),
        ({"mode": "realtime", "model": MODEL, "realtime": {}, "image": ""}, "spec.image"),
        ({"mode": "realtime", "model": MODEL, "realtime": {}, "image": "i\x00"}, "spec.image"),
        (
            {
                "mode": "realtime",
                "model": {**MODEL, "inferenceOutput": "labels\x00"},
                "realtime": {},
            },
            "spec.model.inferenceOutput",
        ),
        (
            batch_spec(dataProcessing={"inputFilter": "$[[["}),
            "spec.batch.dataProcessing.inputFilter: unsupported JSONPath '$[[['",
        ),
        (
            batch_spec(dataProcessing={"outputFilter": "$['a',b]"}),
            "spec.batch.dataProcessing.outputFilter: unsupported JSONPath selector",
        ),
        (
            batch_spec(dataProcessing={"outputFilter": "$.x\x00"}),
            "spec.batch.dataProcessing.outputFilter: must be a JSONPath that starts with $, "
            "without control characters; got '$.x\\x00'",
        ),
        ({"mode": "realtime", "model": MODEL, "realtime": {}, "image": " img "}, "spec.image"),
        *(
            (
                {
                    "mode": "async",
                    "model": MODEL,
                    "async": {"outputPath": "s3://b/o", "notification": {field: url}},
                },
                message,
            )
            for field in ("successWebhook", "errorWebhook")
            for url, message in (
                (
                    "http://169.254.169.254/latest/meta-data/",
                    f"{field}: must not be a link-local or metadata address",
                ),
                (
                    "https://user@[fe80::1%25eth0]:80/x",
                    f"{field}: must not be a link-local or metadata address",
                ),
                ("ftp://hooks/x", f"{field}: must be an http:// or https:// URL without spaces"),
                ("http://hooks/x\x00y", f"{field}: must be an http:// or https:// URL"),
                ("http:///nohost", f"{field}: must be an http:// or https:// URL"),
                ("hooks.example/x", f"{field}: must be an http:// or https:// URL"),
                ("http://hooks:99999/x", f"{field}: its port 99999 is not one of 1 to 65535"),
                ("HTTP://hooks:0", f"{field}: its port 0 is not one of 1 to 65535"),
            )
        ),
    ],
)
def test_invalid_specs_are_named(raw: dict, message: str) -> None:
    result = parse_spec(raw)
    assert isinstance(result, str)
    assert message in result
    assert "pattern" not in result  # the regular expressions are the CRD's, not for readers


def test_a_value_failing_a_pattern_is_quoted_cut_short_and_a_webhook_not_at_all() -> None:
    long_path = "relative/" + "m" * 500
    cpu = {"mode": "realtime", "model": {"uri": long_path}, "realtime": {"resources": {"cpu": "x"}}}
    result = parse_spec(cpu)
    assert isinstance(result, str)
    assert "spec.realtime.resources.cpu: must be a quantity above zero" in result
    assert "got 'x'" in result
    assert (
        "got 'relative/mmm" in result and "(509 characters)" in result and "m" * 100 not in result
    )
    hook = "http://user:secret-token@hooks example/x"
    notification = {"errorWebhook": hook}
    webhook = {"mode": "async", "model": MODEL,
               "async": {"outputPath": "s3://b/o", "notification": notification}}  # fmt: skip
    result = parse_spec(webhook)
    assert isinstance(result, str) and "errorWebhook: must be an http" in result
    assert "secret-token" not in result


def test_defaults_fill_in() -> None:
    result = parse_spec({"mode": "realtime", "model": MODEL, "realtime": {}})
    assert isinstance(result, s.EndpointSpec)
    assert result.realtime_block().min_replicas == 1
    assert result.realtime_block().scaling.metric is s.ScalingMetric.INVOCATIONS_PER_INSTANCE


def test_payload_times_concurrency_may_reach_100() -> None:
    result = parse_spec(batch_spec(maxPayloadInMB=20, maxConcurrentTransforms=5))
    assert isinstance(result, s.EndpointSpec)
    assert result.batch is not None
    assert result.batch.input.split_type == "Line"


def test_example_manifests_are_valid() -> None:
    for path in sorted((REPO / "examples/abalone").glob("*.yaml")):
        document = yaml.safe_load(path.read_text())
        assert document["kind"] == "InferenceEndpoint"
        assert isinstance(parse_spec(document["spec"]), s.EndpointSpec), path


@pytest.mark.parametrize("path", ["/models/m.tar.gz", "file:///m.tar.gz", "s3://b/m.tar.gz"])
def test_the_model_and_batch_locations_may_be_absolute_paths_as_they_always_could(
    path: str,
) -> None:
    raw = batch_spec(input={"uri": path}, output={"uri": f"{path}-outputs/"})
    assert not isinstance(parse_spec({**raw, "model": {"uri": path}}), str)


@pytest.mark.parametrize("path", ["s3://b", "S3://b/o", "file:///o", "file://localhost/o"])
def test_async_paths_take_what_storage_reads(path: str) -> None:
    raw = {"mode": "async", "model": MODEL, "async": {"outputPath": path, "inputPath": path}}
    assert not isinstance(parse_spec(raw), str)


def test_a_quantity_may_be_a_bare_whole_number_as_in_a_pods_resources() -> None:
    """``cpu: 2`` reaches the API as an integer: the CRD refused it (a string), and users write
    it so in pods every day. The CRD takes an integer or a string; the spec reads its text."""
    spec = parse_spec({"mode": "realtime", "model": MODEL,
                       "realtime": {"resources": {"cpu": 2, "memory": "1Gi"}}})  # fmt: skip
    assert isinstance(spec, s.EndpointSpec)
    assert spec.realtime is not None and spec.realtime.resources.cpu == "2"
    for refused in (0, 0.5, True):
        result = parse_spec({"mode": "realtime", "model": MODEL,
                             "realtime": {"resources": {"cpu": refused}}})  # fmt: skip
        assert isinstance(result, str) and "spec.realtime.resources.cpu" in result, refused
    schema = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    cpu = walk(schema)["spec.realtime.resources.cpu"]
    assert cpu["x-kubernetes-int-or-string"] is True and "type" not in cpu
    assert cpu["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert cpu["pattern"] == s.QUANTITY_PATTERN  # for the strings
    # for the integers: the pattern is not theirs, and `cpu: 0` or `memory: -1` passed
    # kubectl apply for the endpoint to fail InvalidSpec after (run by the API server in
    # tests/e2e/test_realtime_operator.py)
    assert cpu["minimum"] == 1


@pytest.mark.parametrize(
    ("memory", "said"),
    [
        ("512m", "got '512m', 1 byte; 'm' is a thousandth: 512Mi is likely meant"),
        ("31Mi", "got '31Mi', 32505856 bytes"),
        (1024, "got '1024', 1024 bytes"),
        ("33554431", "got '33554431', 33554431 bytes"),
    ],
)
def test_memory_below_the_floor_is_refused_naming_it(memory: str | int, said: str) -> None:
    """``memory: 512m`` is 0.512 bytes, almost surely 512Mi mistyped: no replica starts in it,
    and it was taken. Both blocks that carry resources refuse it, on every actuator (the spec)."""
    for mode, block in (("realtime", {}), ("async", {"outputPath": "s3://b/o"})):
        raw = {"mode": mode, "model": MODEL,
               mode: {**block, "resources": {"memory": memory}}}  # fmt: skip
        result = parse_spec(raw)
        assert isinstance(result, str)
        assert f"spec.{mode}.resources.memory: must be at least 32Mi" in result, result
        assert said in result and ("likely meant" in result) == said.endswith("meant")
        # an endpoint that ran with it before an upgrade keeps running as it did
        assert isinstance(parse_spec(raw, admitted=True), s.EndpointSpec)
    for taken in ("32Mi", "33554432", "0.03125Gi", 33554432):
        raw = {"mode": "realtime", "model": MODEL, "realtime": {"resources": {"memory": taken}}}
        assert isinstance(parse_spec(raw), s.EndpointSpec), taken


@pytest.mark.parametrize(
    ("refs", "field"),
    [
        ({"storageSecretRef": {"name": "infermodes-S3_keys"}}, "spec.storageSecretRef.name"),
        ({"async": {"outputPath": "file:///o", "brokerSecretRef": {"key": "amqp url"}}},
         "spec.async.brokerSecretRef.key"),
        ({"async": {"outputPath": "file:///o", "notification": {
            "errorWebhookSecretRef": {"name": "infermodes-" + "h" * 250, "key": "url"}}}},
         "spec.async.notification.errorWebhookSecretRef.name"),
    ],
)  # fmt: skip
def test_a_secret_reference_kubernetes_cannot_resolve_is_refused_at_apply(
    refs: dict, field: str
) -> None:
    """A Secret name or key that no Secret can have (not a DNS subdomain, a key with a
    space) passed kubectl apply and the operator's prefix check, for the API server to refuse
    the workload afterwards (``ApplyRefused``): the schema now says so first, as the spec."""
    mode = "async" if "async" in refs else "realtime"
    raw = {"mode": mode, "model": MODEL, **({} if "async" in refs else {"realtime": {}}), **refs}
    problems = parse_spec(raw)
    assert isinstance(problems, str) and problems.startswith(f"{field}: "), problems
    nodes = walk(crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    for path in ("spec.storageSecretRef.name", "spec.async.brokerSecretRef.name"):
        assert nodes[path]["pattern"] == s.DNS_SUBDOMAIN_PATTERN and nodes[path]["maxLength"] == 253
    assert nodes["spec.async.brokerSecretRef.key"]["pattern"] == s.CONFIG_KEY_PATTERN


def crd_regexes() -> list[str]:
    """Every regular expression the API server runs for the endpoint CRD: the schema's patterns
    and the CEL rules' matches()."""
    found: list[str] = []

    def visit(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                found.append(node["pattern"])
            for rule in node.get("x-kubernetes-validations") or []:
                found.extend(re.findall(r"matches\(r?'([^']*)'\)", rule["rule"]))
            for child in node.values():
                visit(child)
        elif isinstance(node, list):
            for child in node:
                visit(child)

    visit(crd_manifest())
    return found


def test_the_crds_regexes_mean_what_the_models_do() -> None:
    """The API server's RE2 reads \\s, \\d, \\w and \\b as ASCII's; pydantic's regex and
    Python's as Unicode's. spec.image 'x:1<no-break space>' passed kubectl apply and failed the
    operator's own parsing: an update made the endpoint Failed. Each class is spelled out."""
    assert crd_regexes()  # the walk finds them
    assert [p for p in crd_regexes() if re.search(r"\\[sdwbSDWB]", p)] == []


@pytest.mark.parametrize("space", [chr(c) for c in range(0x110000) if chr(c).isspace()])
def test_no_white_space_passes_the_image_or_a_webhook(space: str) -> None:
    image = {"mode": "realtime", "model": MODEL, "realtime": {}, "image": f"repo/x:1{space}"}
    assert isinstance(parse_spec(image), str)
    notification = {"successWebhook": f"http://hooks.example/{space}x"}
    hook = {"mode": "async", "model": MODEL,
            "async": {"outputPath": "file:///o", "notification": notification}}  # fmt: skip
    assert isinstance(parse_spec(hook), str)
    for pattern, value in ((s.IMAGE_PATTERN, image["image"]),
                           (WEBHOOK_PATTERN, notification["successWebhook"])):  # fmt: skip
        # without Perl classes, Python reads the pattern as the API server's RE2 does
        assert re.search(r"\\[sdwbSDWB]", pattern) is None
        assert re.fullmatch(pattern, value) is None


def filter_read(text: str) -> bool:
    """Whether the spec takes ``text`` as a filter (its pattern, then the parser)."""
    spec = batch_spec(dataProcessing={"outputFilter": text})
    return not isinstance(parse_spec(spec), str)


FILTERS = [
    "$", "$ ", "$\u00a0", "$.features", "$[1:]", "$[ -2 : ]", "$[:]", "$[0,2,4]", "$[ 1 , -1 ]",
    "$['id','SageMakerOutput']", '$["a b"]', "$['a'].b[0]", "$.a-b_c",
    "$[[[", "$[]", "$[1:2:3]", "$['a,b']", "$[x]", "$.1a", "$ .a", " $", "$[1]]", "$[\u0661]",
    "$['a'\u00a0]", "$[1\t]", "$['a\x01']", "$..a", "$[*]", "$[?(@.a)]", "$.a.", "a",
]  # fmt: skip


@pytest.mark.parametrize("text", FILTERS)
def test_the_crd_takes_the_filters_the_operator_reads_and_no_other(text: str) -> None:
    """An output filter the parser cannot read ($[[[, $..a, a filter expression) passed the
    CRD's pattern (a $, then no control character) and made a batch job Failed: the CRD now
    carries the parser's grammar, and takes what it reads."""
    assert bool(re.fullmatch(GRAMMAR, text)) is filter_read(text), text


@given(st.text(alphabet="$.[]'\",:- *?@0123456789ab_\u00a0\u0661\t", max_size=14).map("$".__add__))
def test_the_filter_grammar_and_the_parser_agree(text: str) -> None:
    assert bool(re.fullmatch(GRAMMAR, text)) is filter_read(text)


def input_inside_output_rule_refuses(input_uri: str, output_uri: str, data_type: str) -> bool:
    """``s.INPUT_INSIDE_OUTPUT_CEL`` as Python reads it (RE2 and Python's re agree on its
    patterns; CEL's substring and size count code points, as Python's)."""
    plain = [re.search(s.S3_PLAIN, uri) for uri in (input_uri, output_uri)]
    if data_type != "S3Prefix" or not all(plain):
        return False
    listed, outer = ("s3://" + u[5:] + ("" if "/" in u[5:] else "/")
                     for u in (input_uri, output_uri))  # fmt: skip
    base = re.search(r"^.*[^/]", outer)
    assert base is not None
    return listed == outer or listed.startswith(base.group() + "/")


@pytest.mark.parametrize(
    ("input_uri", "output_uri", "data_type", "spec_refuses", "crd_refuses"),
    [
        ("s3://data/out/day-1/", "s3://data/out", "S3Prefix", True, True),
        ("s3://data/out", "s3://data/out/", "S3Prefix", False, False),  # lists out-2/ too
        ("S3://data/out/x", "s3://data/", "S3Prefix", True, True),
        ("s3://data", "s3://data", "S3Prefix", True, True),
        ("s3://data/out/", "s3://data/out//", "S3Prefix", True, True),
        ("s3://data/in/", "s3://data/out/", "S3Prefix", False, False),  # apart
        ("s3://data/out-2/", "s3://data/out", "S3Prefix", False, False),  # not in the folder
        ("s3://data/", "s3://data/out/", "S3Prefix", False, False),  # the output inside: fine
        ("s3://other/out/", "s3://data/out/", "S3Prefix", False, False),
        ("s3://data/out/m.json", "s3://data/out/", "ManifestFile", False, False),
        # what CEL cannot read as parse_uri does: the operator's alone
        ("s3://data//out/", "s3://data/out/", "S3Prefix", True, False),
        ("file:///data/out/x", "file:///data/out", "S3Prefix", True, False),
        ("/data/out/x", "file:///data/out", "S3Prefix", True, False),
    ],
)
def test_the_crd_refuses_an_s3_input_prefix_inside_the_output_as_the_spec_does(
    input_uri: str, output_uri: str, data_type: str, spec_refuses: bool, crd_refuses: bool
) -> None:
    """An input prefix inside output.uri passed kubectl apply and only the operator refused it
    (Failed, InvalidSpec), or none with a CRD older than its check. The CRD now refuses it at
    apply where CEL can read it (s3:// URIs), never what the spec takes."""
    block = {"input": {"uri": input_uri, "dataType": data_type}, "output": {"uri": output_uri}}
    try:
        s.EndpointSpec.model_validate({"mode": "batch", "model": MODEL, "batch": block})
    except ValidationError as exc:
        assert s.INPUT_INSIDE_OUTPUT in str(exc), exc
        refused = True
    else:
        refused = False
    assert refused is spec_refuses
    assert input_inside_output_rule_refuses(input_uri, output_uri, data_type) is crd_refuses
    rules = [rule for rule, message in s.BatchSpec.cel_rules if message == s.INPUT_INSIDE_OUTPUT]
    assert rules == [s.INPUT_INSIDE_OUTPUT_CEL]


@pytest.mark.parametrize(
    ("field", "uri", "segment"),
    [
        ("output", "file:///data/in/z/../", "'..'"),  # wrote into its own input folder
        ("output", "file:///data/zz/../out/", "'..'"),  # the output hold's prefix, respelt
        ("output", "file:///data/./out/", "'.'"),
        ("output", "file:///data/out/..", "'..'"),  # a trailing one
        ("output", "file:///data/out/%2E%2E/x/", "'..'"),  # percent-encoded: a file path's
        ("input", "file:///data/out/x/../", "'..'"),
        ("output", "s3://data/zz/../out/", "'..'"),  # S3 keeps it; the hold compared strings
        ("output", "s3://data/./out/", "'.'"),
        ("input", "s3://data/in/..", "'..'"),
        ("input", "s3://data/x/../m.json", "'..'"),  # a manifest's too
    ],
)
def test_a_batch_location_with_a_dot_segment_is_refused_naming_the_field_and_segment(
    field: str, uri: str, segment: str
) -> None:
    """file:///data/in/z/../ as output.uri passed the input-inside-output check and wrote the
    outputs among the inputs; file:///data/zz/../out/ passed the hold of a job writing
    file:///data/out/, and both wrote there at once (r60, item 2)."""
    block = {"input": {"uri": "s3://data/in/"}, "output": {"uri": "s3://data/out/"}}
    block[field] = {"uri": uri, "dataType": "ManifestFile"} if "m.json" in uri else {"uri": uri}
    problems = s.parse_spec({"mode": "batch", "model": MODEL, "batch": block})
    assert isinstance(problems, str), problems
    assert problems.startswith(f"spec.batch.{field}.uri: "), problems
    assert f"has a {segment} segment" in problems, problems


@pytest.mark.parametrize(
    "uri", ["file:///data/out/", "file:///data/..x/.y/", "s3://data/.../out", "/data/x/../out"]
)
def test_a_batch_location_without_a_dot_segment_is_taken(uri: str) -> None:
    """A name that only starts with a dot is a name; a plain path is resolved as it is read."""
    block = {"input": {"uri": "s3://data/in/"}, "output": {"uri": uri}}
    assert not isinstance(s.parse_spec({"mode": "batch", "model": MODEL, "batch": block}), str)
