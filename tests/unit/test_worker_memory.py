from pathlib import Path

import pytest

from infermodes.predict import codecs, memory
from infermodes.predict.codecs import JSON_BYTES_EXPANSION, PYTHON_READ_COST
from infermodes.predict.memory import (
    MIN_INPUT_CAP,
    cgroup_memory_limit,
    input_cap,
    log_input_caps,
    process_input_caps,
)
from infermodes.workers.batch.runner import WHOLE_JSON_EXPANSION

MIB = 1 << 20


@pytest.mark.parametrize(
    ("memory", "used", "concurrency", "cap"),
    [
        (None, 80 * MIB, 4, 64 * MIB),  # no limit known: the configured cap
        (1024 * MIB, 80 * MIB, 4, 944 * MIB // (4 * JSON_BYTES_EXPANSION)),  # the default worker
        (1024 * MIB, 80 * MIB, 1, 944 * MIB // JSON_BYTES_EXPANSION),
        (64 * 1024 * MIB, 80 * MIB, 1, 64 * MIB),  # plenty: never above the configured cap
        (100 * MIB, 120 * MIB, 2, MIN_INPUT_CAP),  # nothing spare: small bodies still go
    ],
)
def test_the_json_cap_is_the_spare_memory_per_concurrent_decode(
    memory: int | None, used: int, concurrency: int, cap: int
) -> None:
    share = None if memory is None else max(memory - used, 0) // concurrency
    assert input_cap(64 * MIB, share, JSON_BYTES_EXPANSION) == cap


def test_a_configured_cap_below_the_floor_still_holds() -> None:
    assert input_cap(1000, 1, JSON_BYTES_EXPANSION) == 1000


V2_NESTED = "0::/kubepods/pod1/ctr\n"


def _tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if text == "<unreadable>":  # a directory where the file should be: reading it fails
            path.mkdir()
        else:
            path.write_text(text)


@pytest.mark.parametrize(
    ("membership", "files", "limit"),
    [
        # v2: the smallest limit on the process's own path and its parents, the root included
        (V2_NESTED, {"kubepods/pod1/ctr/memory.max": "max\n",
                     "kubepods/pod1/memory.max": "536870912\n",
                     "kubepods/memory.max": "1073741824\n"}, 1 << 29),
        (V2_NESTED, {"kubepods/pod1/ctr/memory.max": "268435456\n",
                     "kubepods/pod1/memory.max": "536870912\n"}, 1 << 28),
        (V2_NESTED, {"memory.max": "1073741824\n", "kubepods/pod1/ctr/memory.max": "max\n"},
         1 << 30),  # a namespaced mount: its root is the container's cgroup
        ("0::/\n", {"memory.max": "1073741824\n"}, 1 << 30),
        (V2_NESTED, {"kubepods/pod1/ctr/memory.max": "max\n", "kubepods/memory.max": "max\n"},
         None),
        (V2_NESTED, {"memory.max": "4096\n"} | {"kubepods/pod1/ctr/memory.max": "<unreadable>",
                                                "kubepods/pod1/memory.max": "8192\n"}, 4096),
        (V2_NESTED, {"kubepods/pod1/ctr/memory.max": "<unreadable>"}, None),
        (V2_NESTED, {"memory.max": "1073741824\n"} | {}, 1 << 30),  # the leaf's file missing
        (V2_NESTED, {"other/memory.max": "4096\n"}, None),  # another cgroup's limit
        (V2_NESTED, {}, None),
        ("0::/../../elsewhere\n", {"memory.max": "4096\n"}, None),  # outside the mount
        # v1: the memory controller's own line and hierarchy, whatever the others say
        ("12:cpu,cpuacct:/other\n4:memory:/kubepods/pod1\n0::/\n",
         {"memory/kubepods/pod1/memory.limit_in_bytes": "536870912\n",
          "memory/kubepods/memory.limit_in_bytes": "9223372036854771712\n",
          "memory.max": "4096\n"}, 1 << 29),
        ("4:memory:/docker/abc\n", {"memory/memory.limit_in_bytes": "536870912\n"},
         1 << 29),  # a container's mount of its own cgroup, the host's path in /proc
        ("4:memory:/kubepods/pod1\n",
         {"memory/kubepods/pod1/memory.limit_in_bytes": "9223372036854771712\n"}, None),
        ("", {"memory.max": "4096\n"}, None),  # /proc/self/cgroup unreadable: no cgroup known
    ],
)  # fmt: skip
def test_the_cgroup_limit_is_the_smallest_on_the_process_s_own_path(
    tmp_path: Path, membership: str, files: dict[str, str], limit: int | None
) -> None:
    _tree(tmp_path, files)
    assert cgroup_memory_limit(tmp_path, membership) == limit


def test_a_costlier_decode_lowers_the_cap_in_proportion() -> None:
    """The batch runner's whole JSON documents cost more than the codecs' decode alone."""
    assert input_cap(64 * MIB, 944 * MIB // 2, 42) == 944 * MIB // (2 * 42)


def test_the_model_servers_budgets_are_each_workers_share_of_the_spare_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every worker process may read a body in Python at once: 2 workers of 100 MiB in 1 GiB
    leave 824 MiB, which two reads share (a budget of 824 MiB each would let both together take
    twice the memory); each body's estimated cost is held to it (``codecs.decode``)."""
    from infermodes.server.runner import python_read_budgets
    from infermodes.settings import ServeSettings

    monkeypatch.setattr("infermodes.predict.memory.peak_rss_bytes", lambda: 100 * MIB)
    settings = ServeSettings(
        model_uri="m", workers=2, memory_bytes=1024 * MIB, max_payload_bytes=64 * MIB
    )
    assert python_read_budgets(settings) == dict.fromkeys(PYTHON_READ_COST, 824 * MIB // 2)


@pytest.mark.parametrize(
    ("content_type", "split_type", "expansion", "processes"),
    [
        ("text/csv", "Line", None, 1),  # the native readers take it: not capped so
        ("text/libsvm", "Line", codecs.PYTHON_READ_COST[codecs.LIBSVM].worst_per_byte, 3),
        ("text/libsvm", "None", codecs.PYTHON_READ_COST[codecs.LIBSVM].worst_per_byte, 3),
        ("application/json", "None", WHOLE_JSON_EXPANSION, 3),
        ("application/json", "Line", None, 3),  # a group of lines at a time: not capped so
        ("application/jsonlines", "Line", None, 3),
    ],
)
def test_a_batch_instance_caps_its_minibatches_by_what_python_reads_them_at(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    content_type: str,
    split_type: str,
    expansion: int | None,
    processes: int,
) -> None:
    """The mini-batches Python's readers decode are held to the instance's memory: 2
    concurrent transforms in worker processes of 100 MiB (3 processes with the runner's) in
    1 GiB leave 724 MiB, which two mini-batches share, each its estimate held to its share;
    its narrowest rows' length is capped at their type's worst cost per byte. CSV, which the
    native readers take (at about twice its size), is not capped by Python's cost."""
    import numpy as np
    import xgboost as xgb
    from prometheus_client import CollectorRegistry

    from infermodes.metrics import BatchMetrics
    from infermodes.predict.model import XGBoostModel
    from infermodes.settings import BatchSettings
    from infermodes.storage import Storage
    from infermodes.workers.batch.runner import Runner

    features = np.random.default_rng(0).random((20, 2), dtype=np.float32)
    booster = xgb.train({"nthread": 1}, xgb.DMatrix(features, features.sum(axis=1)), 2)
    booster.save_model(tmp_path / "model.json")
    settings = BatchSettings(
        model_uri=str(tmp_path / "model.json"),
        input_uri=f"file://{tmp_path}/in/",
        output_uri=f"file://{tmp_path}/out/",
        metrics_port=0,
        content_type=content_type,
        split_type=split_type,
        max_concurrent_transforms=2,
        memory_bytes=1024 * MIB,
        max_payload_in_mb=50,
    )
    model = XGBoostModel.load(str(tmp_path / "model.json"))
    runner = Runner(settings, Storage(), model, BatchMetrics(CollectorRegistry()))
    monkeypatch.setattr("infermodes.predict.memory.peak_rss_bytes", lambda: 100 * MIB)
    cap = runner.python_read_cap()
    if expansion is None:
        assert cap is None
    else:
        assert cap is not None
        spare = 1024 * MIB - processes * 100 * MIB
        assert (cap.bytes, cap.memory, cap.concurrency) == (spare // (2 * expansion), 1024 * MIB, 2)
        assert cap.budget == spare // 2  # the memory a mini-batch's estimate is held to


def test_the_caps_are_logged_only_when_asked_naming_each_type_its_memory_and_concurrency(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch runner packs libsvm by an estimate of its rows, and logs that instead: the
    length its narrowest rows may have, logged as a cap, read as the real one."""
    monkeypatch.setattr(memory, "cgroup_memory_limit", lambda: None)  # no cgroup limit either
    caplog.set_level("INFO", "infermodes")
    caps = process_input_caps(1 << 30, 1, 2, {codecs.LIBSVM: 100, codecs.JSON: 36})
    unknown = process_input_caps(1 << 20, None, 1, {codecs.CSV: 26})
    assert "capped" not in caplog.text
    log_input_caps(caps | unknown)
    assert caplog.messages == [
        "libsvm inputs capped at 65536 bytes: memory 1, concurrency 2",
        "JSON inputs capped at 65536 bytes: memory 1, concurrency 2",
        f"CSV inputs capped at {1 << 20} bytes: memory unlimited, concurrency 1",
    ]


def test_the_memory_a_process_holds_is_its_own_not_the_peak_of_the_process_that_started_it(
    tmp_path: Path,
) -> None:
    """A worker started by a large process (``up``, a test runner) measures what it holds
    itself: Linux carries ``ru_maxrss`` across ``execve``, so a worker spawned by a process of
    400 MiB measured 400 MiB and capped its inputs at the floor."""
    import subprocess
    import sys

    parent = (
        "import subprocess, sys\n"
        "held = bytearray(400 << 20)\n"
        "held[::4096] = b'\\1' * len(held[::4096])\n"
        "code = 'from infermodes.predict.memory import peak_rss_bytes; print(peak_rss_bytes())'\n"
        "print(subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,"
        " check=True).stdout)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", parent], capture_output=True, text=True, check=True, timeout=120
    )
    assert int(done.stdout) < 200 * MIB, done.stdout
