"""bench/batch: rows/s of `infermodes batch` end to end against its floors and against the
script a user would write, peak RSS on a 1 GB object, and scaling from 1 to 2 instances.

    .venv/bin/python bench/batch/run.py [--rows 2000000] [--repeats 3] [--profile]

Needs pandas (the user's script) and, with --profile, py-spy in the environment; neither is a
project dependency: `.venv/bin/pip install pandas py-spy`. See README.md beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
INFERMODES = str(Path(PYTHON).parent / "infermodes")

# The floor: the same booster predicting the same rows, already float32 in memory.
RAW = """
import sys, time, numpy as np, xgboost as xgb
from infermodes.predict.artifacts import extract_member
booster = xgb.Booster()
booster.load_model(bytearray(extract_member(open(sys.argv[1], "rb").read())))
booster.set_param({"nthread": int(sys.argv[3])})
rows = np.load(sys.argv[2])
if len(sys.argv) > 4:  # the 1 GB object's rows: its copies of the data, in order
    rows = np.concatenate([rows] * int(sys.argv[4]))
booster.inplace_predict(rows[:1000])
started, cpu = time.perf_counter(), time.process_time()
booster.inplace_predict(rows)
print(time.perf_counter() - started, time.process_time() - cpu)
"""

# What a user would write: pandas in, Booster.predict, pandas out.
USER_SCRIPT = """
import sys, tarfile
import pandas as pd, xgboost as xgb
model, source, target, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with tarfile.open(model) as tar:
    raw = tar.extractfile("xgboost-model").read()
booster = xgb.Booster()
booster.load_model(bytearray(raw))
booster.set_param({"nthread": threads})
frame = pd.read_csv(source, header=None)
predictions = booster.predict(xgb.DMatrix(frame, nthread=threads))
pd.DataFrame(predictions).to_csv(target, header=False, index=False)
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(
    command: list[str], env: dict[str, str] | None = None, watch_memory: bool = False
) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds (user + system of the process and the children it waited for,
    such as worker processes), peak RSS (bytes, the process tree summed, polled every 20 ms;
    0 unless ``watch_memory``: the poller's own CPU, a scan of /proc 50 times a second, would
    be taken from the contender it times) and output of a command. On a shared machine CPU
    seconds are the steadier figure."""
    with tempfile.TemporaryFile() as out:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})  # fmt: skip
        tree = psutil.Process(proc.pid)
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if watch_memory else 0)
            if pid:
                break
            try:
                members = [tree, *tree.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in members))
            except psutil.Error:
                pass
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{command[:3]} exited {proc.returncode}:\n{output[-3000:]}")
    return seconds, usage.ru_utime + usage.ru_stime, peak, output


def larger_model(model_dir: Path, trees: int, depth: int) -> Path:
    """The Abalone regression with more and deeper trees, packaged like train.py's."""
    sys.path.insert(0, str(REPO / "examples/abalone"))
    import xgboost as xgb
    from train import load_abalone, write_model_tar

    features, labels = load_abalone(REPO / "examples/abalone/abalone.csv")
    params = {"objective": "reg:squarederror", "max_depth": depth, "eta": 0.05, "seed": 0}
    booster = xgb.train(params, xgb.DMatrix(features, label=labels), num_boost_round=trees)
    path = model_dir / f"model-{trees}x{depth}.tar.gz"
    write_model_tar(booster, path)
    return path


def make_data(
    work: Path, rows: int, trees: int | None = None, depth: int = 8
) -> tuple[Path, Path, Path]:
    """Abalone-like rows (resampled from the data set, measurements jittered) as CSV and .npy."""
    model_dir = work / "model"
    subprocess.run(
        [PYTHON, str(REPO / "examples/abalone/train.py"), "--output", str(model_dir)],
        check=True,
        capture_output=True,
    )
    model = model_dir / "model.tar.gz"
    if trees:
        model = larger_model(model_dir, trees, depth)
    base = np.loadtxt(model_dir / "test.csv", delimiter=",", dtype=np.float64)
    rng = np.random.default_rng(0)
    data = base[rng.integers(0, len(base), rows)]
    data[:, 3:] *= rng.uniform(0.9, 1.1, size=data[:, 3:].shape)
    (work / "in").mkdir(exist_ok=True)
    csv = work / "in" / "data.csv"
    with csv.open("w") as handle:
        np.savetxt(handle, data, delimiter=",", fmt="%.6g")
    parsed = np.loadtxt(csv, delimiter=",", dtype=np.float32)  # the rows as a parser sees them
    npy = work / "rows.npy"
    np.save(npy, parsed)
    return model, csv, npy


def batch(model: Path, source: str, output: Path, *args: str) -> list[str]:
    return [INFERMODES, "batch", "--model", str(model), "--input", source, "--output",
            str(output), "--metrics-port", "0", *args]  # fmt: skip


def run_ours(model: Path, work: Path, threads: int, tag: str) -> tuple[float, float, float, float]:
    """(wall seconds of the process, its CPU seconds, then what the runner reports for its
    work, from listing to the last output, without interpreter start and model load: wall
    seconds and CPU seconds)."""
    output = work / f"out-{tag}"
    subprocess.run(["rm", "-rf", str(output)], check=True)
    args = ["--predict-threads", "1", "--max-concurrent-transforms", str(threads)]
    seconds, cpu, _, _ = timed(batch(model, str(work / "in"), output, *args))
    summary = json.loads((output / "_infermodes-batch/summary-0000-of-0001.json").read_text())
    return seconds, cpu, float(summary["seconds"]), float(summary["cpuSeconds"])


def throughput(args: argparse.Namespace, work: Path, model: Path, csv: Path, npy: Path) -> dict:
    results: dict[str, dict[str, list[float]]] = {}
    script = work / "user.py"
    script.write_text(USER_SCRIPT)
    names = (
        "raw", "raw_cpu", "ours_wall", "ours_cpu", "ours_work", "ours_work_cpu", "user", "user_cpu"
    )  # fmt: skip
    for repeat in range(args.repeats):
        for threads in (1, 2):
            key = f"threads={threads}"
            entry = results.setdefault(key, {name: [] for name in names})
            raw = subprocess.run(
                [PYTHON, "-c", RAW, str(model), str(npy), str(threads)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            raw_wall, raw_cpu = map(float, raw.stdout.split())
            entry["raw"].append(raw_wall)
            entry["raw_cpu"].append(raw_cpu)
            wall, cpu, work_seconds, work_cpu = run_ours(model, work, threads, key)
            entry["ours_wall"].append(wall)
            entry["ours_cpu"].append(cpu)
            entry["ours_work"].append(work_seconds)
            entry["ours_work_cpu"].append(work_cpu)
            user, user_cpu, _, _ = timed(
                [PYTHON, str(script), str(model), str(csv), str(work / "user.out"), str(threads)]
            )
            entry["user"].append(user)
            entry["user_cpu"].append(user_cpu)
            log(f"  repeat {repeat} {key}: raw {raw_wall:.2f} s ({raw_cpu:.2f} CPU), ours "
                f"{wall:.2f} s ({cpu:.2f} CPU; work {work_seconds:.2f} s, {work_cpu:.2f} CPU), "
                f"user {user:.2f} s ({user_cpu:.2f} CPU)")  # fmt: skip
    return results


def big_object(work: Path, csv: Path, size: int) -> Path:
    """A ~``size``-byte CSV object made of copies of the data."""
    folder = work / "big"
    folder.mkdir(exist_ok=True)
    target = folder / "big.csv"
    block = csv.read_bytes()
    with target.open("wb") as handle:
        written = 0
        while written < size:
            handle.write(block)
            written += len(block)
    return target


def large(args: argparse.Namespace, work: Path, model: Path, csv: Path, npy: Path) -> dict:
    target = big_object(work, csv, args.big_bytes)
    with target.open("rb") as handle:
        rows = sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 24), b""))
    results: dict[str, object] = {"bytes": target.stat().st_size, "rows": rows}
    copies = rows // np.load(npy, mmap_mode="r").shape[0]
    for threads in (1, 2):
        output = work / f"big-out-{threads}"
        subprocess.run(["rm", "-rf", str(output)], check=True)
        args_ = ["--max-concurrent-transforms", str(threads)]
        seconds, cpu, peak, _ = timed(
            batch(model, str(target.parent), output, *args_), watch_memory=True
        )
        # the floor on the same rows, in memory (the object is ``copies`` copies of the data)
        raw = subprocess.run(
            [PYTHON, "-c", RAW, str(model), str(npy), str(threads), str(copies)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        raw_wall, raw_cpu = map(float, raw.stdout.split())
        results[f"concurrency={threads}"] = {
            "seconds": seconds, "cpu": cpu, "peak_rss": peak, "raw": raw_wall, "raw_cpu": raw_cpu,
            "ours_wall_vs_raw": round(raw_wall / seconds, 3),
            "ours_cpu_vs_raw_cpu": round(raw_cpu / cpu, 3),
        }  # fmt: skip
        log(f"  1 GB object, concurrency {threads}: {seconds:.1f} s ({cpu:.1f} CPU), "
            f"peak RSS {peak / 2**20:.0f} MiB; raw inplace_predict with {threads} thread(s) on "
            f"its {rows:,} rows in memory {raw_wall:.1f} s ({raw_cpu:.1f} CPU): "
            f"{raw_wall / seconds:.3f} of the floor (CPU {raw_cpu / cpu:.3f})")  # fmt: skip
    # scaling: the same object split over two instances, both at once, against one instance
    for count in (1, 2):
        output = work / f"scale-{count}"
        subprocess.run(["rm", "-rf", str(output)], check=True)
        commands = [
            shlex.join(batch(model, str(target.parent), output, "--instance-index", str(i),
                             "--instance-count", str(count)))
            for i in range(count)
        ]  # fmt: skip
        # one shell starts them all and fails if any fails; its CPU time covers all of them
        script = " ".join(f"{c} & p{i}=$!;" for i, c in enumerate(commands))
        script += " s=0;" + "".join(f" wait $p{i} || s=1;" for i in range(count)) + " exit $s"
        seconds, cpu, _, _ = timed(["sh", "-c", script])
        results[f"instances={count}"] = {"seconds": seconds, "cpu": cpu}
        log(f"  1 GB object over {count} instance(s): {seconds:.1f} s ({cpu:.1f} CPU)")
    same = (work / "scale-1/big.csv.out").read_bytes() == (
        work / "scale-2/big.csv.out"
    ).read_bytes()
    results["split_output_equal"] = same
    return results


def profile(work: Path, model: Path) -> list[tuple[str, float]]:
    """py-spy's samples of one single-threaded run, by innermost Python function."""
    raw = work / "profile.txt"
    output = work / "out-profile"
    subprocess.run(["rm", "-rf", str(output)], check=True)
    command = batch(model, str(work / "in"), output, "--max-concurrent-transforms", "1")
    subprocess.run(
        [str(Path(PYTHON).parent / "py-spy"), "record", "-r", "250", "-f", "raw", "-o", str(raw),
         "--", *command],
        check=True, capture_output=True,
    )  # fmt: skip
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        leaf = frames[-1].split(" (")[0] if frames else "?"
        # attribute time to the first frame of ours or numpy/xgboost below the leaf
        for frame in reversed(frames):
            if any(part in frame for part in ("infermodes", "numpy", "xgboost", "storage")):
                leaf = frame.split(" (")[0] + " [" + frame.split("(")[-1].rstrip(")") + "]"
                break
        leaves[leaf] += int(count)
        total += int(count)
    return [(name, count / total) for name, count in leaves.most_common(12)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--big-bytes", type=int, default=2**30)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--only", choices=("throughput", "large"), help="one part of the run")
    parser.add_argument(
        "--trees", type=int, help="a larger model: this many trees (default: the example's 50)"
    )
    parser.add_argument("--depth", type=int, default=8, help="their depth, with --trees")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--work-dir", type=Path)
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-batch-"))
    work.mkdir(parents=True, exist_ok=True)
    log(f"work dir {work}; data: {args.rows:,} rows")
    model, csv, npy = make_data(work, args.rows, args.trees, args.depth)
    report: dict[str, object] = {
        "rows": args.rows, "csv_bytes": csv.stat().st_size, "model": model.name
    }  # fmt: skip
    if args.only in (None, "throughput"):
        log("throughput (each repeat: raw inplace_predict, infermodes batch, user script)")
        speeds = throughput(args, work, model, csv, npy)
        summary = {}
        for key, entry in speeds.items():
            median = {name: statistics.median(values) for name, values in entry.items()}
            rate = {name: args.rows / seconds for name, seconds in median.items()}
            summary[key] = {
                "rows_per_s": {name: round(value) for name, value in rate.items()},
                "ours_wall_vs_raw": round(rate["ours_wall"] / rate["raw"], 3),
                "ours_work_vs_raw": round(rate["ours_work"] / rate["raw"], 3),
                "ours_cpu_vs_raw_cpu": round(rate["ours_cpu"] / rate["raw_cpu"], 3),
                "ours_work_cpu_vs_raw_cpu": round(rate["ours_work_cpu"] / rate["raw_cpu"], 3),
                "ours_wall_vs_user_script": round(rate["ours_wall"] / rate["user"], 3),
                "ours_cpu_vs_user_script_cpu": round(rate["ours_cpu"] / rate["user_cpu"], 3),
            }
            log(f"{key}: {json.dumps(summary[key])}")
        report["throughput"] = summary
        report["raw_seconds"] = speeds
    if args.only in (None, "large"):
        log("1 GB object: peak RSS and scaling")
        report["large"] = large(args, work, model, csv, npy)
    if args.profile:
        report["profile"] = profile(work, model)
        for name, share in report["profile"]:  # type: ignore[union-attr]
            log(f"  {share:6.1%}  {name}")
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
