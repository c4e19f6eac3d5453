"""Which instance transforms what: pure functions of the input listing, so every instance of a
job computes the same plan from the same listing without talking to the others (the listing its
first instance stored, ``listing_uri``, when the job has a run id).

- Objects spread over instances by size, largest first, each to the least loaded instance
  (its bytes plus ``UNIT_COST`` per unit; ties: the lower index), ordered by key among
  equals: deterministic.
- Beyond the managed platform, a ``Line`` object larger than its fair share of the job
  (total / instances) and at least ``split_min_bytes`` is cut into byte ranges, at most one per
  instance, so one 10 GB file keeps every instance busy. Range ``i`` of ``n`` holds the records
  that *start* in ``[size*i//n, size*(i+1)//n)``; the reader moves both ends to line boundaries
  (``records.line_range``), so every record lands in exactly one range.
- Each range writes ``<key>.out.part-I-of-N-SIZE``; whoever finishes a range and then sees all parts
  concatenates them into ``<key>.out`` in order and deletes them (``runner``). Parts of an
  object that failed stay until a later run of it succeeds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

from infermodes.errors import StorageError
from infermodes.predict.codecs import UTF8_BOM
from infermodes.storage import ObjectRef, join_uri, parse_uri

OUT_SUFFIX = ".out"
PART_MARK = ".part-"
SUMMARY_FOLDER = "_infermodes-batch"
# The media types of the job's records there: its summaries and its input listing are JSON;
# the run marker is empty, an object whose time alone matters
RECORD_TYPE = "application/json"
MARKER_TYPE = "text/plain"
# What a unit costs beyond its bytes (a listing's share, the existence check, a read, a write:
# on S3 some five requests), in bytes of rows an instance transforms in that time
UNIT_COST = 1024 * 1024


@dataclass(frozen=True)
class InputObject:
    uri: str
    key: str  # relative to the input prefix: the output is <output prefix>/<key>.out
    size: int


@dataclass(frozen=True)
class WorkUnit:
    """A whole object (``parts == 1``) or one byte range of it."""

    obj: InputObject
    part: int = 0
    parts: int = 1
    start: int = 0
    end: int = 0

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def is_range(self) -> bool:
        return self.parts > 1


def whole(obj: InputObject) -> WorkUnit:
    return WorkUnit(obj, 0, 1, 0, obj.size)


def ranges(obj: InputObject, parts: int) -> list[WorkUnit]:
    bounds = [obj.size * i // parts for i in range(parts + 1)]
    return [WorkUnit(obj, i, parts, bounds[i], bounds[i + 1]) for i in range(parts)]


def plan_units(
    objects: Iterable[InputObject], count: int, splittable: bool, split_min_bytes: int
) -> list[WorkUnit]:
    """Every unit of the job: whole objects, and large splittable objects as ranges."""
    items = list(objects)
    share = math.ceil(sum(o.size for o in items) / count) if items else 0
    units: list[WorkUnit] = []
    for obj in items:
        if splittable and count > 1 and obj.size > share and obj.size >= split_min_bytes:
            units.extend(ranges(obj, min(count, math.ceil(obj.size / share))))
        else:
            units.append(whole(obj))
    return units


def assign(units: Iterable[WorkUnit], count: int) -> list[list[WorkUnit]]:
    """Largest first to the least loaded instance; each instance's list in key order. A
    unit's load is its bytes and ``UNIT_COST``: by bytes alone, every empty object went to
    one instance (adding 0 keeps it the least loaded), and many small ones mostly too."""
    loads = [0] * count
    shards: list[list[WorkUnit]] = [[] for _ in range(count)]
    for unit in sorted(units, key=lambda u: (-u.size, u.obj.key, u.part)):
        target = min(range(count), key=lambda i: (loads[i], i))
        loads[target] += unit.size + UNIT_COST
        shards[target].append(unit)
    for shard in shards:
        shard.sort(key=lambda u: (u.obj.key, u.part))
    return shards


def relative_key(prefix: str, uri: str) -> str:
    """The name of ``uri`` below the prefix's folder, as the store spells it (a '%' or '#' in it
    is one): ``s3://b/in/`` + ``s3://b/in/a/x.csv`` -> ``a/x.csv``; a prefix ``s3://b/in/day-``
    keeps the name: ``day-1.csv``."""
    base, ref = parse_uri(prefix), parse_uri(uri)
    folder = base.key[: base.key.rfind("/") + 1]
    if (ref.scheme, ref.bucket) == (base.scheme, base.bucket) and ref.key.startswith(folder):
        return ref.key[len(folder) :]
    return ref.key.rsplit("/", 1)[-1]


def under(prefix: str, key: str) -> str:
    """The URI of the object named ``key`` (a name, not a piece of URI) below ``prefix``."""
    base = parse_uri(prefix)
    name = f"{base.key.rstrip('/')}/{key}" if base.key.rstrip("/") or base.scheme == "file" else key
    return ObjectRef(base.scheme, base.bucket, name).uri


def output_uri(output_prefix: str, key: str) -> str:
    return under(output_prefix, key + OUT_SUFFIX)


def part_uri(output_prefix: str, unit: WorkUnit) -> str:
    """The object's size is in the name: parts left by a failed run are reused only for an
    input of the same size (the cheap fingerprint every store has)."""
    suffix = f"{PART_MARK}{unit.part:04d}-of-{unit.parts:04d}-{unit.obj.size}"
    return output_uri(output_prefix, unit.obj.key) + suffix


def summary_uri(output_prefix: str, index: int, count: int) -> str:
    """Where instance ``index`` writes its summary (``summary.Summary``) for the operator."""
    return join_uri(output_prefix, f"{SUMMARY_FOLDER}/summary-{index:04d}-of-{count:04d}.json")


def run_marker_uri(output_prefix: str, run_id: str) -> str:
    """Created by the job's first instance to start: its time, by the store's clock, is when
    the job started, what tells the job's own outputs from older ones under the same path."""
    return join_uri(output_prefix, f"{SUMMARY_FOLDER}/run-{run_id}")


def listing_uri(output_prefix: str, run_id: str) -> str:
    """The job's input objects as its first instance to start listed them: every instance,
    and a restart, plans from this one listing, so an object added or removed meanwhile
    cannot move another between the instances' shares and leave it to none."""
    return join_uri(output_prefix, f"{SUMMARY_FOLDER}/run-{run_id}.inputs.json")


def dump_listing(objects: list[InputObject]) -> bytes:
    return json.dumps(
        {"version": 1, "objects": [[obj.uri, obj.key, obj.size] for obj in objects]}
    ).encode()


def load_listing(data: bytes) -> list[InputObject]:
    """``dump_listing``'s objects; ValueError for anything else."""
    try:
        entries = json.loads(data)["objects"]
        return [InputObject(str(uri), str(key), int(size)) for uri, key, size in entries]
    except (KeyError, TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"the job's input listing cannot be read: {exc}") from None


def dotted(key: str) -> bool:
    """Whether a key relative to the input prefix has a '.' or '..' segment. Read from the
    prefix, written under the output path (``output_uri``): a key must stay below both, and a
    ``file://`` output resolves those segments, as an S3-compatible server or a proxy may. A key
    is a name: '%2e%2e' is a folder of that name, not '..'."""
    return any(part in (".", "..") for part in key.split("/"))


def parse_manifest(data: bytes, manifest_uri: str) -> list[tuple[str, str]]:
    """The platform's manifest, UTF-8 JSON: ``[{"prefix": "s3://b/in/"}, "a.csv", "sub/b.csv"]``
    -> ``[(prefix + key, key), ...]`` in its order; a key listed again is the same input (it has
    one output), kept once. A leading UTF-8 byte order mark (Windows tools write one) is skipped,
    as the CSV and JSON readers skip it."""
    text = data.removeprefix(UTF8_BOM)
    try:
        document = json.loads(text.decode())
    except UnicodeDecodeError as exc:  # the codec's words name no file
        offset = len(data) - len(text) + exc.start
        raise ValueError(
            f"manifest {manifest_uri} must be UTF-8 JSON: byte 0x{data[offset]:02x} at "
            f"offset {offset} is not UTF-8"
        ) from None
    except ValueError as exc:
        raise ValueError(f"manifest {manifest_uri} is not JSON: {exc}") from None
    if (
        not isinstance(document, list)
        or not document
        or not isinstance(document[0], dict)
        or not isinstance(document[0].get("prefix"), str)
        or not all(isinstance(item, str) and item for item in document[1:])
    ):
        raise ValueError(f'manifest {manifest_uri} must be [{{"prefix": "s3://..."}}, "key", ...]')
    for key in document[1:]:
        if key.startswith("/") or dotted(key):
            raise ValueError(
                f"manifest {manifest_uri}: key {key[:200]!r} must lie under its prefix "
                "(no leading '/', no '.' or '..' segment)"
            )
    prefix = document[0]["prefix"]
    try:
        base, manifest = parse_uri(prefix), parse_uri(manifest_uri)
    except StorageError as exc:
        raise ValueError(f"manifest {manifest_uri}: prefix {prefix[:200]!r}: {exc}") from None
    if base.scheme != manifest.scheme:  # an S3 manifest naming the pod's own files, say
        raise ValueError(
            f"manifest {manifest_uri}: its prefix must be of its own store ({manifest.scheme}://)"
        )
    folder = base.key + ("/" if prefix.endswith("/") and not base.key.endswith("/") else "")
    keys = dict.fromkeys(document[1:])  # in order, each once
    return [(ObjectRef(base.scheme, base.bucket, folder + key).uri, key) for key in keys]
