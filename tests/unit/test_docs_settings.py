"""The settings tables of README.md and docs/async.md name flags the commands take and
variables the processes read, and every variable a process reads is in its table or named
elsewhere in the docs: a user sets what the tables say, and nothing the code reads is hidden.
The README's spec field and chart value tables are held to the CRD's fields and values.yaml
the same way, defaults included."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from infermodes import settings
from infermodes.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = "".join(
    path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
)
CODE = re.compile(r"`([^`]*)`")
VARIABLE = re.compile(r"(?<![A-Za-z0-9])[A-Z][A-Z0-9_]{2,}(?![A-Za-z0-9])")


def table_after(path: str, marker: str) -> list[list[str]]:
    """The rows (cells) of the first Markdown table after ``marker`` in ``path``."""
    text = (ROOT / path).read_text()
    start = text.rindex("\n", 0, text.index(marker)) + 1  # the marker's line: a header too
    return tables_at(text, text.index("\n|", start - 1) + 1)


def tables_at(text: str, start: int) -> list[list[str]]:
    """The rows of the Markdown table whose header line starts at ``start``."""
    rows: list[list[str]] = []
    for line in text[start:].splitlines():
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows[2:]  # past the header and its rule


def flags(cell: str) -> list[str]:
    return [code.split()[0] for code in CODE.findall(cell) if code.startswith("--")]


def variables(cell: str, prefix: str) -> list[str]:
    """The variables a cell names: whole, ``..._NAME`` or a bare ``NAME`` under ``prefix``."""
    found = []
    for code in CODE.findall(cell):
        for name in VARIABLE.findall(code):
            whole = name if name.startswith(("INFERMODES_", "SAGEMAKER_", "JOB_")) else None
            found.append(whole or prefix + name.removeprefix("_"))
    return found


def setting_default(cell: str) -> str | None:
    """The literal default a settings table's cell writes: backticked, with at most a note in
    parentheses, or a bare word (`3`, `info`), not a phrase (`16 MiB`, `none: open`)."""
    if match := re.fullmatch(r"`([^`]*)`(?: \(.*\))?", cell):
        return match[1]
    return cell if re.fullmatch(r"[\w.]+", cell) and cell not in {"none", "required"} else None


def read_by(cls: type[settings.EnvSettings]) -> dict[str, str]:
    """Every variable ``cls`` reads, to its field."""
    return {env: name for name in cls.model_fields for env in cls.env_names(name)}


def options(command: str) -> set[str]:
    return {opt for param in main.commands[command].params for opt in param.opts}


# (file, the text before the table, command, class, the column of variables (None: the
# flag's own name under the prefix), fields documented outside the table)
TABLES = [
    ("README.md", "Every flag also reads an environment variable `INFERMODES_SERVE_<NAME>`",
     "serve", settings.ServeSettings, 1, set()),
    ("README.md", "Every flag also reads `INFERMODES_BATCH_<NAME>`", "batch",
     settings.BatchSettings, None, {"run_id", "keep_existing"}),
    ("README.md", "**Settings.** Flags also read `INFERMODES_GATEWAY_<NAME>`", "gateway",
     settings.GatewaySettings, 1, set(settings.AsyncAcceptSettings.model_fields)),
    ("README.md", "reads `INFERMODES_OPERATOR_<NAME>` (lists as JSON)", "operator",
     settings.OperatorSettings, 1, set()),
    ("docs/async.md", "| `infermodes async-api` | env |", "async-api",
     settings.AsyncApiSettings, 1, set()),
    ("docs/async.md", "| `infermodes worker` | env |", "worker", settings.WorkerSettings, 1,
     set()),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "marker", "command", "cls", "column", "elsewhere"),
    TABLES,
    ids=[table[2] for table in TABLES],
)
def test_a_settings_table_is_what_the_command_reads(
    path: str,
    marker: str,
    command: str,
    cls: type[settings.EnvSettings],
    column: int | None,
    elsewhere: set[str],
) -> None:
    prefix = cls.model_config["env_prefix"]
    read = read_by(cls)
    rows = table_after(path, marker)
    assert rows, f"no table after {marker!r} in {path}"
    documented: set[str] = set()
    for row in rows:
        named = variables(row[column] if column is not None else " ".join(row[1:]), prefix)
        for flag in flags(row[0]):
            assert flag in options(command), f"{path}: {command} has no {flag}"
            # without a column, the heading's rule: a flag reads <prefix><its name>, unless
            # its row names the variable
            own = prefix + flag.removeprefix("--").replace("-", "_").upper()
            if column is None and (own in read or not named):
                named.append(own)
        unknown = [name for name in named if name not in read]
        assert not unknown, f"{path}: {command} reads no {unknown} (row {row[0]!r})"
        fields = {read[name] for name in named}
        documented |= fields
        written = setting_default(row[2 if column is not None else 1])
        if len(fields) == 1 and written is not None:
            name = fields.pop()
            field = cls.model_fields[name]
            default = None if field.is_required() else field.get_default(call_default_factory=True)
            if isinstance(default, (bool, int, float, str, list)) and default != "":
                assert same(written, default), f"{path}: {command}'s {name} is {default!r}"
    hidden = set(cls.model_fields) - documented - elsewhere
    assert not hidden, f"{path}: the {command} table lacks {sorted(hidden)}"
    for name in elsewhere & set(cls.model_fields) - documented:
        assert any(env in DOCS for env in cls.env_names(name)) or name in DOCS, name


def test_ups_flags_are_its_table_and_reach_its_gateway_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """How long up holds a request for a cold start was settable only by an environment
    variable the README did not name for up; its flags are now its table, and the timeout's
    flag (or the gateway's variable) reaches the settings up's gateway runs with."""
    from click.testing import CliRunner

    import infermodes.local.up

    rows = table_after("README.md", "`infermodes up`'s flags (`infermodes up --help`)")
    documented = {flag for row in rows for flag in flags(row[0])} | {"-f"}
    assert documented == options("up") - {"--help"}
    given: list[settings.GatewaySettings] = []
    monkeypatch.setattr(infermodes.local.up, "serve", lambda s, *rest: given.append(s) or 0)
    for args, env, expected in (
        (["--invocation-timeout-seconds", "5"], {}, 5.0),
        ([], {"INFERMODES_GATEWAY_INVOCATION_TIMEOUT_SECONDS": "7"}, 7.0),
        ([], {}, 60.0),
    ):
        CliRunner().invoke(main, ["up", "--port", "9011", *args], env=env)
        assert (given[-1].invocation_timeout_seconds, given[-1].port) == (expected, 9011)
    refused = CliRunner().invoke(main, ["up", "--invocation-timeout-seconds", "0"])
    assert refused.exit_code == 2 and "--invocation-timeout-seconds" in refused.output


def test_invoke_waits_as_long_as_up_may_hold_a_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """`infermodes invoke` gave up after 70 s, whatever `up --invocation-timeout-seconds` said:
    a cold start or a slow model under a longer timeout ended in a client-side timeout. It
    waits as long as the largest timeout up takes (up answers by then: 503 or 504)."""
    import httpx
    from click.testing import CliRunner

    waited: list[float] = []

    def answer(method: str, url: str, timeout: float, **options: object) -> httpx.Response:
        waited.append(timeout)
        return httpx.Response(200, text="9.96\n")

    monkeypatch.setattr(httpx, "request", answer)
    done = CliRunner().invoke(main, ["invoke", "abalone", "--data", "1,2"])
    assert done.exit_code == 0 and done.output == "9.96\n"
    longest = settings.GatewaySettings.model_fields["invocation_timeout_seconds"].metadata
    assert waited[0] > max(rule.le for rule in longest if hasattr(rule, "le"))


# The field and chart value tables: each row names one or more keys (`a.b.c` / `d` / `.e`:
# the later ones relative to the first's parent) and their defaults in the same order.
SEPARATOR = re.compile(r" / |, ")


def names(cell: str) -> list[str]:
    """The dotted keys a row's first cell names, relative ones made whole."""
    found: list[str] = []
    for code in CODE.findall(cell):
        if found and "." in found[-1] and "." not in code.lstrip("."):
            code = found[-1].rsplit(".", 1)[0] + "." + code.lstrip(".")
        found.append(code)
    return found


def default_parts(cell: str, count: int) -> list[str | None]:
    """The literal default of each of ``count`` keys (the first backticked word of its part,
    None where the part gives none): only when the cell has one part per key."""
    parts = SEPARATOR.split(cell) if count > 1 else [cell]
    if len(parts) != count:
        return [None] * count
    literal = re.compile(r"^`([^`]*)`")
    return [match[1] if (match := literal.match(part)) else None for part in parts]


def leaves(tree: object, prefix: str) -> dict[str, object]:
    """Every key under ``tree`` (a mapping of mappings) to its value."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree}
    return {
        key: value
        for name, child in tree.items()
        for key, value in leaves(child, f"{prefix}.{name}").items()
    }


REQUIRED = object()


def spec_fields() -> dict[str, object]:
    """Every field of the InferenceEndpoint spec, camelCase and dotted, to its default
    (``REQUIRED`` for one without)."""
    from pydantic import BaseModel

    from infermodes.endpoints import spec

    def walk(model: type[BaseModel], prefix: str) -> dict[str, object]:
        found: dict[str, object] = {}
        for name, field in model.model_fields.items():
            key = f"{prefix}.{field.alias or name}"
            nested = [
                kind
                for kind in (field.annotation, *getattr(field.annotation, "__args__", ()))
                if isinstance(kind, type) and issubclass(kind, BaseModel)
            ]
            if nested:
                found |= walk(nested[0], key)
            else:
                found[key] = (
                    REQUIRED
                    if field.is_required()
                    else field.get_default(call_default_factory=True)
                )
        return found

    return walk(spec.EndpointSpec, "spec")


def same(documented: str, default: object) -> bool:
    """Whether a documented literal is the code's default."""
    import yaml

    written = yaml.safe_load(documented)
    if hasattr(default, "value"):  # an enum
        default = default.value
    return bool(written == default or str(written) == str(default))


def check_table(rows: list[list[str]], code: dict[str, object], where: str) -> set[str]:
    """Asserts each row names keys the code has, with its defaults; the keys documented (a
    row naming a block documents every key under it)."""
    documented: set[str] = set()
    for row in rows:
        keys = names(row[0])
        for key, literal in zip(keys, default_parts(row[1], len(keys)), strict=True):
            under = [name for name in code if name == key or name.startswith(key + ".")]
            assert under, f"{where}: {key} is no key of the code's"
            documented |= set(under)
            if key in code and row[1].strip() == "required":
                assert code[key] is REQUIRED, f"{where}: {key} is not required"
            # a block's row (`spec.async.resources`: `1` / `1Gi`) gives its keys' defaults
            given = [literal] if key in code else default_parts(row[1], len(under))
            for name, written in zip(under, given, strict=True):
                if written is not None and code[name] not in (None, REQUIRED):
                    assert same(written, code[name]), f"{where}: {name} is {code[name]!r}"
    return documented


def test_the_spec_field_tables_are_the_crds_fields() -> None:
    """The README's `spec.*` tables (realtime, serverless, async and the common fields) name
    fields the CRD has, with its defaults, and every field of those blocks; batch's fields are
    the platform's, listed in prose."""
    code = spec_fields()
    text = (ROOT / "README.md").read_text()
    rows = []
    offset = 0
    while (found := text.find("\n| field | default | meaning |", offset)) >= 0:
        rows += tables_at(text, found + 1)
        offset = found + 1
    documented = check_table(rows, code, "README.md")
    hidden = sorted(
        name for name in code if name not in documented and not name.startswith("spec.batch.")
    )
    assert not hidden, f"README.md: no table documents {hidden}"


def test_the_chart_values_table_is_values_yaml() -> None:
    """The README's chart values table names every value of values.yaml and no other, with
    its default where it writes one as a literal."""
    import yaml

    values = yaml.safe_load((ROOT / "charts/infermodes/values.yaml").read_text())
    code = {key.removeprefix("."): value for key, value in leaves(values, "").items()}
    rows = table_after("README.md", "| value | default | meaning |")
    documented = check_table(rows, code, "README.md chart values")
    hidden = sorted(set(code) - documented)
    assert not hidden, f"README.md: the chart values table lacks {hidden}"


def test_every_status_reason_is_named_in_the_docs() -> None:
    """A reason an endpoint's status can carry (`kubectl get ie -o yaml`, `infermodes
    describe`) is one the docs explain: the batch job's `ObjectsFailed` and `JobFailed` were
    named nowhere."""
    from infermodes.endpoints import status

    reasons = {
        value
        for name, value in vars(status).items()
        if name.isupper() and isinstance(value, str) and re.fullmatch(r"[A-Z][a-z]+[A-Z]\w+", value)
    }
    assert reasons, "no reasons found in endpoints/status.py"
    unnamed = sorted(reason for reason in reasons if f"`{reason}`" not in DOCS)
    assert not unnamed, f"the docs name no status reason {unnamed}"
