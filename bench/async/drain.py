"""Drain rate of N workers against N x the rate of one, repeated, with where the CPU goes.

The queue of a fresh endpoint is filled while its workers are paused (SIGSTOP); they resume and
the rate is requests / (resume -> last output written). Runs alternate 1, N, N, 1, ... so
that a change in the machine's load hits both sides; the ratio is the median rate of N
workers over N times the median rate of one. Each run also reports the CPU milliseconds per
request of every worker, the broker and this process (which lists the output folder); the
summary says how many cores one worker kept busy and the ratio those CPU costs allow at
most on this machine's cores (``ceiling``). Before each run, as many processes as it has
workers spin on pure-Python CPU work for a second (``spin_rate``): the same ratio for work
that shares nothing is the machine's own floor, in the same run. ``--worker-cpu C`` holds
every worker to C cores as the kubelet holds a pod to its CPU limit (``cpu_budget.py``; a
different question, see the README). ``--profile DIR`` records the first worker of each run
with py-spy (raw collapsed stacks).

Run from the repository root, alone on the machine::

    flock /tmp/infermodes-bench.lock .venv/bin/python bench/async/drain.py
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from run import drain, example_workers  # noqa: E402

from tests.support.abalone import trained_abalone  # noqa: E402
from tests.support.async_plane import to_csv  # noqa: E402
from tests.support.rabbitmq import rabbitmq_broker  # noqa: E402

# Pure-Python CPU work from a start to an end on the monotonic clock (shared by processes):
# prints the loop's iterations.
SPIN = """
import sys, time


def spin(start, end):
    while time.monotonic() < start:
        time.sleep(0.001)
    count = 0
    while time.monotonic() < end:
        for _ in range(1000):
            count += 1
    return count


print(spin(float(sys.argv[1]), float(sys.argv[2])))
"""


def spin_rate(processes: int, seconds: float = 1.0) -> float:
    """Iterations per second of ``processes`` processes spinning at once, sharing nothing: the
    machine's floor for N CPU-bound processes against one (a hypervisor's or a neighbour's
    share of the cores shows here as it does in the drain)."""
    start = time.monotonic() + 0.5  # after every interpreter started
    spinners = [
        subprocess.Popen(
            [sys.executable, "-c", SPIN, str(start), str(start + seconds)],
            stdout=subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    counts = [int(spinner.communicate(timeout=seconds + 30)[0]) for spinner in spinners]
    return sum(counts) / seconds


def of_shape(runs: list[dict[str, Any]], n: int, c: int) -> list[dict[str, Any]]:
    return [r for r in runs if (r["workers"], r["worker_concurrency"]) == (n, c)]


def summary(runs: list[dict[str, Any]], workers: int, concurrency: int) -> dict[str, object]:
    """Medians by shape (``NxC``: N workers of C concurrent invocations), and two ratios of N
    workers to N times one: of drain rates, and of requests per CPU-second of all our
    processes (workers, broker, bench), which says whether N workers cost more per request
    than one, whatever share of a busy machine's cores the run got; and the ratio of the spin
    rates measured before the runs (N spinning processes against N times one), what the
    machine's cores give work that shares nothing. The ``ceiling`` assumes
    workers without a CPU limit, so runs with one go without it."""
    shapes = sorted({(r["workers"], r["worker_concurrency"]) for r in runs})

    def median(key: Callable[[dict[str, Any]], float], n: int, c: int) -> float:
        return statistics.median(float(key(r)) for r in of_shape(runs, n, c))

    rate = {f"{n}x{c}": median(lambda r: r["drain_rps"], n, c) for n, c in shapes}
    per_cpu = {
        f"{n}x{c}": round(median(lambda r: r["drain_rps"] / r["cpu_cores_busy"], n, c), 1)
        for n, c in shapes
    }
    one, many = f"1x{concurrency}", f"{workers}x{concurrency}"
    spin = {n: median(lambda r: r["spin_rate"], n, concurrency) for n in (1, workers)}
    found = {
        "median_drain_rps": rate,
        "median_requests_per_cpu_second": per_cpu,
        "ratio_to_n_times_one": round(rate[many] / (workers * rate[one]), 3),
        "ratio_of_requests_per_cpu_second": round(per_cpu[many] / per_cpu[one], 3),
        "spin_ratio_to_n_times_one": round(spin[workers] / (workers * spin[1]), 3),
    }
    if all(r["worker_cpu"] is None for r in runs):
        found |= ceiling(of_shape(runs, 1, concurrency), of_shape(runs, workers, concurrency))
    return found


def ceiling(ones: list[dict[str, Any]], manys: list[dict[str, Any]]) -> dict[str, object]:
    """What the cores allow. One worker is bounded by what one process gets done (one GIL),
    not by the machine: ``one_worker_cores`` is how many cores it kept busy. N workers, the
    broker and this process share the machine's cores: at the CPU per request the N-worker
    runs measured (``cpu_ms_per_request_at_n``), all ``os.cpu_count()`` cores would give
    ``ceiling_rps``, so ``ceiling_ratio`` is the most the ratio could be. An upper bound:
    the kernel's writeback and network threads, other sessions and idle gaps take their
    part too. Under the target, no scheduling reaches it; only a lower CPU cost per request
    at N workers against what one worker gets done does."""
    workers = manys[0]["workers"]
    cpu_ms = statistics.median(sum(r["cpu_ms_per_request"].values()) for r in manys)
    most = (os.cpu_count() or 1) * 1000 / cpu_ms
    one_rate = statistics.median(r["drain_rps"] for r in ones)
    cores = statistics.median(
        r["cpu_ms_per_request"]["worker0"] * r["drain_rps"] / 1000 for r in ones
    )
    return {
        "one_worker_cores": round(cores, 2),
        "cpu_ms_per_request_at_n": round(cpu_ms, 3),
        "ceiling_rps": round(most, 1),
        "ceiling_ratio": round(most / (workers * one_rate), 3),
    }


def summarize_perf(data: Path) -> None:
    """Beside ``data``: where the samples went, by process name and library (the kernel's
    own as ``[kernel.kallsyms]``), by symbol, and the workers' by system call."""
    for suffix, sort in ((".by-process.txt", "comm,dso"), (".by-symbol.txt", "comm,dso,sym")):
        report = subprocess.run(
            ["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", sort,
             "-g", "none", "--percent-limit", "0.5"],
            capture_output=True, text=True, check=True, timeout=600,
        )  # fmt: skip
        data.with_suffix(suffix).write_text(report.stdout)
    script = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "comm,ip,sym,dso"],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    samples = worker_samples(script.stdout)
    total = len(samples) or 1
    calls = collections.Counter(call for call, _ in samples)
    lines = [
        f"{total} samples of the workers (comm infermodes), by the system call each was in "
        "(outermost), or outside any; under each of the three largest calls, the kernel "
        "functions on the stacks of its samples (inclusive: the share of the call's samples "
        "a function was on the stack of; 5-95 %, the entry path on every stack left out)"
    ]
    for rank, (call, count) in enumerate(calls.most_common()):
        lines.append(f"{count / total:6.1%}  {call}")
        if rank < 3 and call != "user":
            inside = collections.Counter(f for c, stack in samples if c == call for f in stack)
            shares = [(function, n / count) for function, n in inside.most_common(12)]
            lines += [f"          {share:6.1%}  {function}" for function, share in shares
                      if 0.05 <= share <= 0.95]  # fmt: skip
    data.with_suffix(".worker-by-syscall.txt").write_text("\n".join(lines) + "\n")


def worker_samples(script: str) -> list[tuple[str, frozenset[str]]]:
    """Each sample of the workers' processes in ``perf script -F comm,ip,sym,dso`` text as
    (the system call on its stack, the functions on its stack); the call is ``user`` when the
    sample is outside the kernel (Python and its libraries), ``kernel, no system call`` for
    interrupts and switches."""
    found: list[tuple[str, frozenset[str]]] = []
    for sample in script.split("\n\n"):
        lines = sample.strip().splitlines()
        if not lines or lines[0].split()[0] != "infermodes":
            continue
        frames = [line.split() for line in lines[1:] if len(line.split()) >= 3]
        calls = [f[1] for f in frames if f[1].startswith(("__x64_sys_", "__do_sys_"))]
        stack = frozenset(f[1] for f in frames)
        if calls:
            found.append((calls[-1].removeprefix("__x64_sys_").removeprefix("__do_sys_"), stack))
        elif frames and frames[0][-1] == "([kernel.kallsyms])":
            found.append(("kernel, no system call", stack))
        else:
            found.append(("user", stack))
    return found


def main() -> None:
    example = example_workers()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2, help="N, compared with 1")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=example.max_concurrent_invocations_per_instance,
        help="maxConcurrentInvocationsPerInstance of every worker (default: the example's)",
    )
    parser.add_argument(
        "--wide",
        action="store_true",
        help="also one worker with N times the concurrency: is the limit per worker or shared?",
    )
    parser.add_argument(
        "--worker-cpu",
        type=float,
        help="hold every worker to this many cores, as the kubelet holds a pod to its CPU "
        f"limit (cpu_budget.py; the example's resources.cpu is {example.resources.cpu}); "
        "default: no limit",
    )
    parser.add_argument(
        "--no-topic",
        action="store_true",
        help="the workers publish no notification to the topic exchange (the spec's "
        "notification.topic: false; default: they do, as every endpoint does by default)",
    )
    parser.add_argument(
        "--statistics-interval-ms",
        type=int,
        default=500,
        help="the broker's collect_statistics_interval (default: the tests' 500; RabbitMQ's "
        "own default is 5000)",
    )
    parser.add_argument(
        "--broker-conf",
        action="append",
        default=[],
        metavar="LINE",
        help="one more rabbitmq.conf line for the broker, e.g. 'management.rates_mode = none' "
        "(repeatable)",
    )
    parser.add_argument(
        "--storage-dir",
        type=Path,
        help="put the endpoints' file:// storage (inputs, outputs, claims) in a new folder "
        "under this one, e.g. a tmpfs (default: in the temporary folder, TMPDIR, where the "
        "broker's data stays)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="worker i and its threads on CPU i (the broker free): a lone worker's threads "
        "then hand its GIL over on one core, not across two",
    )
    parser.add_argument("--profile", type=Path, help="write py-spy profiles here")
    parser.add_argument(
        "--perf",
        type=Path,
        help="write a perf profile of the whole machine per run here (perf.data and a summary "
        "by process and library; needs root)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "drain_results.json")
    args = parser.parse_args()
    for folder in (args.profile, args.perf):
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {
        "cpus": os.cpu_count(),
        "worker_cpu": args.worker_cpu,
        "notify_topic": not args.no_topic,
        "broker_statistics_interval_ms": args.statistics_interval_ms,
        "broker_conf": args.broker_conf,
        "storage_dir": str(args.storage_dir) if args.storage_dir else None,
        "pinned": args.pin,
        "tmpdir": tempfile.gettempdir(),  # the broker's data (and, by default, the storage)
        "load_at_start": os.getloadavg(),
    }
    runs: list[dict[str, object]] = []
    with (
        trained_abalone("infermodes-bench-drain-") as root,
        tempfile.TemporaryDirectory(dir=args.storage_dir) as storage,
    ):
        model_uri = f"file://{root / 'model.tar.gz'}"
        one_row = to_csv(np.loadtxt(root / "test.csv", delimiter=",", dtype=np.float32)[:1])
        with rabbitmq_broker(args.statistics_interval_ms, tuple(args.broker_conf)) as broker:
            for repeat in range(args.repeats):
                shapes = [(1, args.concurrency), (args.workers, args.concurrency)]
                if args.wide:
                    shapes.append((1, args.workers * args.concurrency))
                for n, concurrency in shapes if repeat % 2 == 0 else shapes[::-1]:
                    name = f"n{n}x{concurrency}-r{repeat}"
                    profile = args.profile / f"worker-{name}.txt" if args.profile else None
                    perf = args.perf / f"{name}.data" if args.perf else None
                    bodies = [one_row] * args.requests
                    spin = spin_rate(n)
                    run = drain(
                        broker,
                        model_uri,
                        Path(storage),
                        n,
                        bodies,
                        profile,
                        concurrency,
                        args.worker_cpu,
                        notify_topic=not args.no_topic,
                        perf=perf,
                        pin=args.pin,
                    )
                    if perf:
                        summarize_perf(perf)
                    run["spin_rate"] = round(spin)
                    runs.append(run)
                    print(json.dumps(run), flush=True)
    results |= {
        "runs": runs,
        **summary(runs, args.workers, args.concurrency),
        "load_at_end": os.getloadavg(),
    }
    print(json.dumps({k: v for k, v in results.items() if k not in ("runs", "cpus")}))
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
