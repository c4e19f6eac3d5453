from pathlib import Path

import pytest

from infermodes.predict.codecs import JSON_BYTES_EXPANSION
from infermodes.workers.memory import MIN_JSON_CAP, cgroup_memory_limit, json_input_cap

MIB = 1 << 20


@pytest.mark.parametrize(
    ("memory", "used", "concurrency", "cap"),
    [
        (None, 80 * MIB, 4, 64 * MIB),  # no limit known: the configured cap
        (1024 * MIB, 80 * MIB, 4, 944 * MIB // (4 * JSON_BYTES_EXPANSION)),  # the default worker
        (1024 * MIB, 80 * MIB, 1, 944 * MIB // JSON_BYTES_EXPANSION),
        (64 * 1024 * MIB, 80 * MIB, 1, 64 * MIB),  # plenty: never above the configured cap
        (100 * MIB, 120 * MIB, 2, MIN_JSON_CAP),  # nothing spare: small bodies still go
    ],
)
def test_the_json_cap_is_the_spare_memory_per_concurrent_decode(
    memory: int | None, used: int, concurrency: int, cap: int
) -> None:
    assert json_input_cap(64 * MIB, memory, used, concurrency) == cap


def test_a_configured_cap_below_the_floor_still_holds() -> None:
    assert json_input_cap(1000, 1, 0, 1) == 1000


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({"memory.max": "1073741824\n"}, 1 << 30),  # cgroup v2
        ({"memory.max": "max\n"}, None),
        ({"memory/memory.limit_in_bytes": "536870912\n"}, 1 << 29),  # cgroup v1
        ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None),  # v1's "no limit"
        ({}, None),
    ],
)
def test_the_cgroup_limit_is_read_from_v2_or_v1(
    tmp_path: Path, files: dict[str, str], limit: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_memory_limit(tmp_path) == limit
