"""Benchmark the async data plane end to end, beside the synchronous model server, in one run.

Measures, with a private RabbitMQ, real ``infermodes async-api``, ``infermodes worker`` and
``infermodes serve`` processes on loopback (all sharing this machine's cores):

1. throughput: requests/s from the first 202 to the last success notification, 1 and 2 workers;
2. per-request overhead: one request at a time, async (POST until its notification arrives)
   against a synchronous ``POST /invocations`` of the same body;
3. memory: peak RSS (the kernel's VmHWM) of a worker scoring a 1 GB CSV input.

Run from the repository root: ``.venv/bin/python bench/async/run.py`` (``--help`` for sizes).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import itertools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from cpu_budget import cpu_budget, throttled_seconds  # noqa: E402

from infermodes.endpoints.plan import env_name  # noqa: E402
from infermodes.endpoints.spec import AsyncSpec  # noqa: E402
from infermodes.local.manifests import load_paths  # noqa: E402
from infermodes.queueing.rabbitmq import NOTIFICATION_EXCHANGE, connect  # noqa: E402
from infermodes.settings import WorkerSettings  # noqa: E402
from tests.support.abalone import trained_abalone  # noqa: E402
from tests.support.async_plane import Plane, plane, to_csv  # noqa: E402
from tests.support.processes import (  # noqa: E402
    BUSY_STATES,
    machine_cpu_seconds,
    running_server,
)
from tests.support.rabbitmq import Broker, rabbitmq_broker  # noqa: E402

EXAMPLE = REPO / "examples/abalone/async.yaml"


def example_workers() -> AsyncSpec:
    """The async block of the endpoint users start from: its workers' concurrency and CPU."""
    block = load_paths([EXAMPLE])[0].spec.async_
    assert block is not None, f"{EXAMPLE} is not an async endpoint"
    return block


WORKER_CONCURRENCY = example_workers().max_concurrent_invocations_per_instance
RUNS = itertools.count()  # each drain gets an endpoint (and a queue) of its own


class Subscriber:
    """Consumes an endpoint's notifications on its own thread and connection, recording when
    each inference id was first notified."""

    def __init__(self, broker: Broker, endpoint: str) -> None:
        self.arrived: dict[str, float] = {}
        self.duplicates = 0
        self.changed = threading.Condition()
        self._stop = threading.Event()
        connection = connect(broker.amqp_url)
        channel = connection.channel()
        channel.exchange_declare(NOTIFICATION_EXCHANGE, "topic", durable=True)
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, NOTIFICATION_EXCHANGE, routing_key=f"{endpoint}.*")
        channel.basic_consume(queue, self._on_message, auto_ack=True)
        self._thread = threading.Thread(target=self._run, args=(connection,), daemon=True)
        self._thread.start()

    def _on_message(self, _ch: object, _method: object, _props: object, body: bytes) -> None:
        note = json.loads(body)
        now = time.perf_counter()
        with self.changed:
            if note["inferenceId"] in self.arrived:
                self.duplicates += 1
            else:
                self.arrived[note["inferenceId"]] = now
            self.changed.notify_all()

    def _run(self, connection: object) -> None:
        while not self._stop.is_set():
            connection.process_data_events(time_limit=0.1)  # type: ignore[attr-defined]
        connection.close()  # type: ignore[attr-defined]

    def wait(self, ids: set[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not ids <= self.arrived.keys():
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = len(ids - self.arrived.keys())
                    raise TimeoutError(f"{missing} notification(s) missing after {timeout} s")
                self.changed.wait(left)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


@contextlib.contextmanager
def subscribed(broker: Broker, endpoint: str) -> Iterator[Subscriber]:
    subscriber = Subscriber(broker, endpoint)
    try:
        yield subscriber
    finally:
        subscriber.close()


@contextlib.contextmanager
def fresh_endpoint(broker: Broker, root: Path, endpoint: str) -> Iterator[tuple[Subscriber, Plane]]:
    """An endpoint with its own storage folder, its API, and a subscriber to its notifications."""
    folder = root / endpoint
    folder.mkdir()
    with (
        subscribed(broker, endpoint) as notes,
        plane(broker, endpoint, f"file://{folder}", folder) as live,
    ):
        yield notes, live


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p90_ms": round(pick(0.9) * 1000, 3),
        "p99_ms": round(pick(0.99) * 1000, 3),
    }


def throughput(
    broker: Broker, model_uri: str, root: Path, workers: int, bodies: list[bytes], clients: int
) -> dict[str, object]:
    endpoint = f"throughput-{workers}"
    with fresh_endpoint(broker, root, endpoint) as (notes, live):
        for index in range(workers):
            live.start_worker(model_uri, f"w{index}", concurrency=WORKER_CONCURRENCY)

        def send(chunk: list[bytes]) -> list[tuple[str, float]]:
            accepted = []
            with httpx.Client(base_url=live.client.base_url, timeout=30) as client:
                for body in chunk:
                    response = client.post(
                        f"/endpoints/{endpoint}/async-invocations",
                        content=body,
                        headers={"content-type": "text/csv"},
                    )
                    response.raise_for_status()
                    accepted.append((response.json()["InferenceId"], time.perf_counter()))
            return accepted

        chunks = [bodies[i::clients] for i in range(clients)]
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            accepted = [item for part in pool.map(send, chunks) for item in part]
        ids = {inference_id for inference_id, _ in accepted}
        first_202 = min(at for _, at in accepted)
        last_202 = max(at for _, at in accepted)
        notes.wait(ids, 600)
        last_note = max(notes.arrived[i] for i in ids)
    seconds = last_note - first_202
    return {
        "workers": workers,
        "worker_concurrency": WORKER_CONCURRENCY,
        "requests": len(ids),
        "clients": clients,
        "accept_rps": round(len(ids) / (last_202 - started), 1),
        "end_to_end_rps": round(len(ids) / seconds, 1),
        "first_202_to_last_notification_s": round(seconds, 2),
        "duplicate_notifications": notes.duplicates,
    }


def sync_throughput(
    model_uri: str, root: Path, bodies: list[bytes], clients: int
) -> dict[str, object]:
    """The same bodies and clients against ``infermodes serve`` (2 processes, one per core)."""
    serve_args = ["--model", model_uri, "--workers", "2"]
    with running_server(serve_args, root / "serve-throughput.log") as server:

        def send(chunk: list[bytes]) -> None:
            with httpx.Client(base_url=server.url) as client:
                for body in chunk:
                    client.post(
                        "/invocations", content=body, headers={"content-type": "text/csv"}
                    ).raise_for_status()

        began = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(send, [bodies[i::clients] for i in range(clients)]))
        seconds = time.perf_counter() - began
    return {"requests": len(bodies), "clients": clients, "rps": round(len(bodies) / seconds, 1)}


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU time a process has used so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    return sum(cpu_times(pid))


def context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of every thread of a process so far."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[1])
    return total


def broker_pid(broker: Broker) -> int:
    """The Erlang VM's pid (the wrapper script that started it uses no CPU)."""
    return int((broker.root / "rabbitmq.pid").read_text().split()[0])


def drain(
    broker: Broker,
    model_uri: str,
    root: Path,
    workers: int,
    bodies: list[bytes],
    profile: Path | None = None,
    concurrency: int = WORKER_CONCURRENCY,
    worker_cpu: float | None = None,
    notify_topic: bool = True,
    perf: Path | None = None,
    pin: bool = False,
) -> dict[str, object]:
    """Processing rate alone: workers paused (SIGSTOP) while the queue fills, then resumed,
    until the last output is written. Nothing subscribes to the notifications (a subscriber in
    this process would take a share of the cores the workers are measured on); this process
    only lists the output folder. CPU seconds and context switches per request of the
    workers, the broker and this process say where the time goes; ``profile``: py-spy records
    the first worker meanwhile. ``worker_cpu``: each worker held to that many cores, as a pod
    to its CPU limit (``cpu_budget.py``). ``notify_topic`` False: the workers publish no
    notification (the spec's ``notification.topic: false``). ``pin``: worker i and all its
    threads on CPU i (modulo the CPUs), the broker left free. ``perf``: ``perf record`` of
    the whole machine (every process and the kernel, with call graphs) meanwhile, into that
    file."""
    endpoint = f"drain-{workers}-{next(RUNS)}"
    folder = root / endpoint
    (folder / "output").mkdir(parents=True)
    env = {} if notify_topic else {env_name(WorkerSettings, "notify_topic"): "false"}
    with (
        plane(broker, endpoint, f"file://{folder}", folder, env) as live,
        contextlib.ExitStack() as held,
    ):
        started = [
            live.start_worker(model_uri, f"w{index}", concurrency=concurrency)
            for index in range(workers)
        ]
        groups = [
            held.enter_context(cpu_budget(w.proc.pid, worker_cpu, f"{endpoint}-w{i}"))
            for i, w in enumerate(started)
            if worker_cpu is not None
        ]
        for worker in started:
            worker.proc.send_signal(signal.SIGSTOP)
        if pin:
            for index, worker in enumerate(started):
                pin_threads(worker.proc.pid, index % (os.cpu_count() or 1))
        pids = {
            **{f"worker{i}": w.proc.pid for i, w in enumerate(started)},
            "broker": broker_pid(broker),
            "bench": os.getpid(),
        }
        try:
            ids = {live.invoke(body).json()["InferenceId"] for body in bodies}
            held.enter_context(recording(py_spy(started[0].proc.pid, profile) if profile else None))
            held.enter_context(recording(perf_record(perf) if perf else None))
            before = {name: cpu_times(pid) for name, pid in pids.items()}
            switches = {name: context_switches(pid) for name, pid in pids.items()}
            throttled = [throttled_seconds(group) for group in groups]
            machine = machine_cpu_seconds()
            resumed = time.perf_counter()
        finally:
            for worker in started:
                worker.proc.send_signal(signal.SIGCONT)
        seconds = wait_outputs(folder / "output", len(ids), 600, resumed) - resumed
        after = {name: cpu_times(pid) for name, pid in pids.items()}
        used = {name: sum(after[name]) - sum(before[name]) for name in pids}
        system = {name: after[name][1] - before[name][1] for name in pids}
        switched = {name: context_switches(pid) - switches[name] for name, pid in pids.items()}
        throttled = [throttled_seconds(g) - t for g, t in zip(groups, throttled, strict=True)]
        machine = {k: v - machine[k] for k, v in machine_cpu_seconds().items()}
    return {
        "workers": workers,
        "worker_concurrency": concurrency,
        "worker_cpu": worker_cpu,
        "notify_topic": notify_topic,
        "worker_throttled_s": [round(t, 2) for t in throttled],
        "requests": len(ids),
        "drain_rps": round(len(ids) / seconds, 1),
        "seconds": round(seconds, 2),
        "cpu_ms_per_request": {name: round(cpu * 1000 / len(ids), 3) for name, cpu in used.items()},
        # the kernel's part of it (file and socket calls, the output's fsync)
        "system_cpu_ms_per_request": {
            name: round(cpu * 1000 / len(ids), 3) for name, cpu in system.items()
        },
        "cpu_cores_busy": round(sum(used.values()) / seconds, 2),
        "machine_cores": {
            "busy": round(sum(machine[k] for k in BUSY_STATES) / seconds, 2),
            **{k: round(machine[k] / seconds, 2) for k in ("idle", "iowait", "steal")},
        },
        "context_switches_per_request": {
            name: round(count / len(ids), 1) for name, count in switched.items()
        },
    }


def wait_outputs(folder: Path, count: int, timeout: float, since: float) -> float:
    """When (``perf_counter``) the folder first held ``count`` outputs. Listing thousands of
    files takes CPU from the cores the workers are measured on, so the folder is listed
    rarely while far from done: next after half the time the outputs still missing take at
    the rate since ``since``, at most 0.5 s and at least 20 ms (the end's resolution)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with os.scandir(folder) as entries:
            done = sum(1 for e in entries if e.name.endswith(".out") and e.name[0] != ".")
        now = time.perf_counter()
        if done >= count:
            return now
        rate = done / max(now - since, 1e-3)
        time.sleep(min(0.5, max(0.02, 0.5 * (count - done) / rate)) if rate else 0.02)
    raise TimeoutError(f"{count} outputs not written in {timeout} s")


def py_spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """``py-spy record`` of one process into ``out`` (raw collapsed stacks by thread), not
    pausing it; ``PY_SPY_FLAGS``: more flags, e.g. ``--idle`` (where threads wait for work)
    or ``--gil`` (only the thread holding the GIL: where Python's CPU goes)."""
    spy = REPO / ".venv/bin/py-spy"
    flags = os.environ.get("PY_SPY_FLAGS", "").split()
    return subprocess.Popen(
        [str(spy), "record", "--pid", str(pid), "--nonblocking", "--threads", *flags,
         "--format", "raw", "--output", str(out), "--rate", "250"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def pin_threads(pid: int, cpu: int) -> None:
    """Every thread a process has now on one CPU; the threads it starts later (its
    invocation pool's, as work arrives) inherit the CPU from the thread that starts them."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cpu})


def perf_record(out: Path) -> subprocess.Popen[bytes]:
    """``perf record`` of every CPU, user and kernel stacks, until SIGINT (needs root or
    ``kernel.perf_event_paranoid`` <= -1; its messages go to ``out`` + ``.log``). Waits until
    it records: it takes a moment to start."""
    log = out.with_suffix(".log")
    with log.open("wb") as messages:
        recorder = subprocess.Popen(
            ["perf", "record", "-a", "-g", "-F", "499", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=messages,
        )
    time.sleep(1.0)  # perf opens its events per CPU before it samples
    if recorder.poll() is not None:
        error = log.read_text(errors="replace")[-500:]
        raise RuntimeError(f"perf record exited with {recorder.returncode}: {error}")
    return recorder


@contextlib.contextmanager
def recording(recorder: subprocess.Popen[bytes] | None) -> Iterator[None]:
    """A profiler (py-spy, perf) stopped however the run ends: SIGINT makes it write what it
    recorded."""
    try:
        yield
    finally:
        if recorder is not None:
            recorder.send_signal(signal.SIGINT)
            recorder.wait(60)


def overhead(
    broker: Broker, model_uri: str, root: Path, body: bytes, samples: int
) -> dict[str, object]:
    endpoint = "overhead"
    sync: list[float] = []
    accept: list[float] = []
    end_to_end: list[float] = []
    serve_args = ["--model", model_uri, "--workers", "1"]
    with (
        running_server(serve_args, root / "serve.log") as server,
        httpx.Client(base_url=server.url) as client,
    ):
        for _ in range(samples + 10):
            began = time.perf_counter()
            response = client.post(
                "/invocations", content=body, headers={"content-type": "text/csv"}
            )
            response.raise_for_status()
            sync.append(time.perf_counter() - began)
    with fresh_endpoint(broker, root, endpoint) as (notes, live):
        live.start_worker(model_uri, "w", concurrency=1)
        for _ in range(samples + 10):
            began = time.perf_counter()
            response = live.invoke(body)
            response.raise_for_status()
            accepted = time.perf_counter()
            inference_id = response.json()["InferenceId"]
            notes.wait({inference_id}, 60)
            accept.append(accepted - began)
            end_to_end.append(notes.arrived[inference_id] - began)
    sync, accept, end_to_end = sync[10:], accept[10:], end_to_end[10:]  # warm-up dropped
    return {
        "samples": samples,
        "sync_invocation": percentiles(sync),
        "async_202": percentiles(accept),
        "async_to_notification": percentiles(end_to_end),
        "overhead_median_ms": round(
            (statistics.median(end_to_end) - statistics.median(sync)) * 1000, 3
        ),
        "ratio_median": round(statistics.median(end_to_end) / statistics.median(sync), 1),
    }


def proc_status(pid: int, field: str) -> int:
    """A memory figure of /proc/<pid>/status in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def write_big_csv(path: Path, rows: np.ndarray, size: int) -> int:
    block = to_csv(rows) * max(1, (8 << 20) // len(to_csv(rows)))
    written = 0
    with path.open("wb") as out:
        while written < size:
            out.write(block)
            written += len(block)
    return written


def big_input(
    broker: Broker, model_uri: str, root: Path, rows: np.ndarray, size: int
) -> dict[str, object]:
    source = root / "big.csv"
    written = write_big_csv(source, rows, size)
    with fresh_endpoint(broker, root, "big") as (notes, live):
        worker = live.start_worker(model_uri, "w", concurrency=1)
        pid = worker.proc.pid
        baseline = proc_status(pid, "VmRSS")
        began = time.perf_counter()
        response = live.invoke(headers={"X-Amzn-SageMaker-InputLocation": f"file://{source}"})
        response.raise_for_status()
        notes.wait({response.json()["InferenceId"]}, 3600)
        took = time.perf_counter() - began
        peak = proc_status(pid, "VmHWM")
        output = Path(response.json()["OutputLocation"].removeprefix("file://"))
        output_bytes = output.stat().st_size
    source.unlink()
    output.unlink()
    return {
        "input_bytes": written,
        "output_bytes": output_bytes,
        "seconds": round(took, 1),
        "input_mb_per_s": round(written / took / 1e6, 1),
        "worker_rss_before_mib": round(baseline / 1024, 1),
        "worker_peak_rss_mib": round(peak / 1024, 1),
        "growth_mib": round((peak - baseline) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--big-bytes", type=int, default=1 << 30)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    results: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "load_average_at_start": os.getloadavg(),
    }
    with trained_abalone("infermodes-bench-async-") as root:
        model_uri = f"file://{root / 'model.tar.gz'}"
        rows = np.loadtxt(root / "test.csv", delimiter=",", dtype=np.float32)
        one_row = to_csv(rows[:1])
        began = time.monotonic()
        with rabbitmq_broker() as broker:
            results["broker_start_s"] = round(time.monotonic() - began, 1)
            results["throughput"] = [
                throughput(broker, model_uri, root, n, [one_row] * args.requests, args.clients)
                for n in (1, 2)
            ]
            print(json.dumps(results["throughput"], indent=1), flush=True)
            results["sync_throughput"] = sync_throughput(
                model_uri, root, [one_row] * args.requests, args.clients
            )
            print(json.dumps(results["sync_throughput"], indent=1), flush=True)
            results["drain"] = [
                drain(broker, model_uri, root, n, [one_row] * args.requests) for n in (1, 2)
            ]
            print(json.dumps(results["drain"], indent=1), flush=True)
            results["overhead_one_row"] = overhead(
                broker, model_uri, root, one_row, args.latency_samples
            )
            print(json.dumps(results["overhead_one_row"], indent=1), flush=True)
            if args.big_bytes:
                results["big_input"] = big_input(broker, model_uri, root, rows, args.big_bytes)
                print(json.dumps(results["big_input"], indent=1), flush=True)
    results["load_average_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
