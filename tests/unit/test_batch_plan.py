"""Batch sharding and naming: pure functions of the listing."""

from __future__ import annotations

import pytest

from infermodes.predict import codecs
from infermodes.workers.batch import plan
from infermodes.workers.batch.plan import InputObject


def objects(*sizes: int) -> list[InputObject]:
    return [InputObject(f"s3://b/in/{i}.csv", f"{i}.csv", size) for i, size in enumerate(sizes)]


def test_every_object_goes_to_exactly_one_instance() -> None:
    items = objects(5, 90, 30, 30, 1, 60, 7)
    shards = plan.assign(plan.plan_units(items, 3, False, 1), 3)
    keys = sorted(u.obj.key for shard in shards for u in shard)
    assert keys == sorted(o.key for o in items)


def test_largest_first_to_the_least_loaded_instance() -> None:
    shards = plan.assign(plan.plan_units(objects(10, 40, 30, 20), 2, False, 1), 2)
    assert [[u.obj.size for u in shard] for shard in shards] == [[10, 40], [30, 20]]


def test_many_small_objects_spread_evenly_not_only_by_their_bytes() -> None:
    """Every object costs its requests: empty ones are not all the least loaded instance's."""
    items = objects(*[48 * (i % 3) for i in range(3000)])
    shards = plan.assign(plan.plan_units(items, 2, False, 1), 2)
    assert [len(shard) for shard in shards] == [1500, 1500]
    empty = [sum(1 for u in shard if u.size == 0) for shard in shards]
    assert empty == [500, 500]


def test_the_plan_is_the_same_whatever_the_listing_order() -> None:
    items = objects(8, 8, 8, 3, 3, 12)
    forward = plan.assign(plan.plan_units(items, 2, True, 1), 2)
    backward = plan.assign(plan.plan_units(list(reversed(items)), 2, True, 1), 2)
    assert forward == backward


def test_a_large_line_object_is_cut_into_one_range_per_instance() -> None:
    units = plan.plan_units(objects(1000), 4, True, 100)
    assert [(u.part, u.parts, u.start, u.end) for u in units] == [
        (0, 4, 0, 250),
        (1, 4, 250, 500),
        (2, 4, 500, 750),
        (3, 4, 750, 1000),
    ]
    shards = plan.assign(units, 4)
    assert [len(shard) for shard in shards] == [1, 1, 1, 1]


def test_only_objects_over_their_share_and_the_minimum_are_cut() -> None:
    units = plan.plan_units(objects(100, 100, 1000), 2, True, 500)
    assert [(u.obj.size, u.parts) for u in units] == [(100, 1), (100, 1), (1000, 2), (1000, 2)]
    assert [u.parts for u in plan.plan_units(objects(1000), 2, True, 2000)] == [1]
    assert [u.parts for u in plan.plan_units(objects(1000), 2, False, 1)] == [1]
    assert [u.parts for u in plan.plan_units(objects(1000), 1, True, 1)] == [1]


def test_more_instances_than_objects_leaves_some_idle() -> None:
    shards = plan.assign(plan.plan_units(objects(3, 4), 4, False, 1), 4)
    assert sorted(len(shard) for shard in shards) == [0, 0, 1, 1]


@pytest.mark.parametrize(
    ("prefix", "uri", "key"),
    [
        ("s3://b/in/", "s3://b/in/a.csv", "a.csv"),
        ("s3://b/in/", "s3://b/in/sub/a.csv", "sub/a.csv"),
        ("s3://b/in/day-", "s3://b/in/day-1.csv", "day-1.csv"),
        ("s3://b/in", "s3://b/in/a.csv", "in/a.csv"),
        ("file:///data/in/", "file:///data/in/x/y.csv", "x/y.csv"),
        # names, not pieces of URIs: a file's '%' is encoded in its URI, an S3 key's is not
        ("file:///data/in/", "file:///data/in/x%2541%23.csv", "x%41#.csv"),
        ("s3://b/in/", "s3://b/in/x%41#.csv", "x%41#.csv"),
        ("file:///data/run%231/", "file:///data/run%231/a.csv", "a.csv"),
    ],
)
def test_keys_are_relative_to_the_prefix_folder(prefix: str, uri: str, key: str) -> None:
    assert plan.relative_key(prefix, uri) == key


@pytest.mark.parametrize("output", ["file:///data/out", "s3://b/out"])
def test_an_output_is_named_by_its_input_key_in_any_store(output: str) -> None:
    """An S3 key 'x%41.csv' written to a file:// output became 'xA.csv.out' (the '%41' read as
    an escape), the output of another input; a '..' reached above the output path."""
    from infermodes.storage import parse_uri

    for key in ("x%41.csv", "h#1.csv", "%2e%2e/%2e%2e/etc/x"):
        written = parse_uri(plan.output_uri(output, key)).key
        assert written in (f"/data/out/{key}.out", f"out/{key}.out"), written


def test_output_part_and_summary_names() -> None:
    obj = InputObject("s3://b/in/a.csv", "a.csv", 1000)
    assert plan.output_uri("s3://b/out", "a.csv") == "s3://b/out/a.csv.out"
    unit = plan.ranges(obj, 4)[2]
    assert plan.part_uri("s3://b/out", unit) == "s3://b/out/a.csv.out.part-0002-of-0004-1000"
    assert plan.summary_uri("s3://b/out/", 1, 2) == (
        "s3://b/out/_infermodes-batch/summary-0001-of-0002.json"
    )


def test_a_manifest_of_plain_paths_keeps_its_prefix_a_folder() -> None:
    text = '[{"prefix": "/data/in/"}, "a.csv", "x%41#.csv"]'
    assert plan.parse_manifest(text.encode(), "/data/m.json") == [
        ("file:///data/in/a.csv", "a.csv"),
        ("file:///data/in/x%2541%23.csv", "x%41#.csv"),  # the file of that very name
    ]


def test_manifest_lists_keys_under_its_prefix_in_order() -> None:
    text = '[{"prefix": "s3://b/in/"}, "z.csv", "sub/a.csv"]'
    assert plan.parse_manifest(text.encode(), "s3://b/m.json") == [
        ("s3://b/in/z.csv", "z.csv"),
        ("s3://b/in/sub/a.csv", "sub/a.csv"),
    ]


def test_a_key_a_manifest_lists_twice_is_one_input() -> None:
    """Listed twice, an object was two units: transformed twice (by two instances at once,
    into the same .out) and its records counted twice in the job's progress."""
    text = '[{"prefix": "s3://b/in/"}, "a.csv", "b.csv", "a.csv"]'
    assert plan.parse_manifest(text.encode(), "s3://b/m.json") == [
        ("s3://b/in/a.csv", "a.csv"),
        ("s3://b/in/b.csv", "b.csv"),
    ]


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '["a.csv"]', '[{"prefix": "s3://b/"}, 3]',
     '[{"prefix": "file:///proc/self/"}, "environ"]',  # an S3 manifest naming the pod's files
     # a key that would read or write outside the prefix and the output path
     '[{"prefix": "file:///d/"}, "../elsewhere/v.csv"]', '[{"prefix": "s3://b/"}, "a/./b"]',
     '[{"prefix": "file:///d/"}, "ok.csv", "/etc/hostname"]', '[{"prefix": "s3://b/"}, "a/.."]'],
)  # fmt: skip
def test_bad_manifests_are_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match="manifest s3://b/m.json"):
        plan.parse_manifest(text.encode(), "s3://b/m.json")


def test_a_manifest_that_is_not_utf8_is_refused_naming_it_and_the_byte() -> None:
    """It failed the job as "cannot list the inputs: 'utf-8' codec can't decode byte 0xff in
    position 38: invalid start byte", naming no manifest (r60, item 4)."""
    data = b'[{"prefix":"file:///tmp/man/"}, "a\xff.csv"]'
    with pytest.raises(ValueError) as caught:
        plan.parse_manifest(data, "s3://b/m.json")
    assert str(caught.value) == (
        "manifest s3://b/m.json must be UTF-8 JSON: byte 0xff at offset 34 is not UTF-8"
    )


def test_a_manifest_starting_with_a_utf8_byte_order_mark_is_read_as_the_inputs_are() -> None:
    """Windows tools write one; it was refused as "not JSON: Unexpected UTF-8 BOM" while CSV
    and JSON inputs skip it. Only a leading one: elsewhere it is no JSON."""
    text = b'[{"prefix": "s3://b/in/"}, "a.csv"]'
    assert plan.parse_manifest(codecs.UTF8_BOM + text, "s3://b/m.json") == [
        ("s3://b/in/a.csv", "a.csv")
    ]
    with pytest.raises(ValueError, match="manifest s3://b/m.json is not JSON"):
        plan.parse_manifest(b" " + codecs.UTF8_BOM + text, "s3://b/m.json")
    with pytest.raises(ValueError, match="manifest s3://b/m.json is not JSON"):
        plan.parse_manifest(codecs.UTF8_BOM * 2 + text, "s3://b/m.json")
    with pytest.raises(ValueError) as caught:  # the offset counts the mark's bytes too
        plan.parse_manifest(codecs.UTF8_BOM + text.replace(b"a.csv", b"a\xff.csv"), "s3://b/m.json")
    assert str(caught.value).endswith("byte 0xff at offset 32 is not UTF-8")
