"""A fault run of the async data plane: >= 1,000 accepted requests while a worker is SIGKILLed
and the broker is restarted with a backlog; then every accepted request must have exactly one
correct output, no error object, nothing dead-lettered, and the logs no traceback.

Real processes on loopback (a private RabbitMQ, ``infermodes async-api``, two
``infermodes worker``), inline CSV bodies of 1..40 Abalone rows, each with its own inference
id; a request refused with 503 while the broker is down is sent again with the same id (the
id is the idempotency key) until accepted. Bounded: at most ``--requests`` ids, 20 tries each,
and ``--timeout`` seconds for the whole run.

Run from the repository root: ``.venv/bin/python bench/async/fault_run.py`` (a few minutes on 2
shared cores); it prints the figures as JSON and exits 1 if a promise did not hold.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from infermodes.queueing.rabbitmq import backlog  # noqa: E402
from tests.support.async_plane import Notifications, dead_letters, plane, to_csv  # noqa: E402
from tests.support.processes import wait_until  # noqa: E402
from tests.support.rabbitmq import rabbitmq_broker  # noqa: E402

ENDPOINT = "fault"
ID = "X-Amzn-SageMaker-Inference-Id"
TRIES = 20


def train(root: Path) -> tuple[str, np.ndarray, np.ndarray]:
    """The Abalone model, its held-out rows and the xgboost package's own predictions."""
    import xgboost

    from infermodes.predict.artifacts import extract_member

    script = REPO / "examples/abalone/train.py"
    subprocess.run([sys.executable, str(script), "--output", str(root)], check=True)
    rows = np.loadtxt(root / "test.csv", delimiter=",", dtype=np.float32)
    booster = xgboost.Booster()
    booster.load_model(bytearray(extract_member((root / "model.tar.gz").read_bytes())))
    return f"file://{root / 'model.tar.gz'}", rows, booster.inplace_predict(rows)


class Client:
    """Sends each request until accepted (503: broker down; the same id again), counting."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.refused = 0
        self.accepted_after_refusal = 0
        self.lock = threading.Lock()
        self.local = threading.local()

    def send(self, inference_id: str, body: bytes) -> bool:
        if not hasattr(self.local, "http"):
            self.local.http = httpx.Client(base_url=self.url, timeout=30)
        for attempt in range(TRIES):
            response = self.local.http.post(
                f"/endpoints/{ENDPOINT}/async-invocations",
                content=body,
                headers={"content-type": "text/csv", ID: inference_id},
            )
            if response.status_code == 202:
                if attempt:
                    with self.lock:
                        self.accepted_after_refusal += 1
                return True
            if response.status_code != 503:
                raise RuntimeError(f"{inference_id}: {response.status_code} {response.text}")
            with self.lock:
                self.refused += 1
            time.sleep(min(2.0, 0.5 * (attempt + 1)))  # the broker is down: back off
        return False


def tracebacks(log: str) -> int:
    return log.count("Traceback")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    began = time.monotonic()
    figures: dict[str, object] = {"requests": args.requests}
    with tempfile.TemporaryDirectory(prefix="infermodes-fault-run-") as tmp:
        root = Path(tmp)
        model_uri, rows, predicted = train(root / "model")
        rng = np.random.default_rng(7)
        picks = {
            f"req-{n:05d}": rng.choice(len(rows), size=int(rng.integers(1, 41)))
            for n in range(args.requests)
        }
        store = root / "store"
        with rabbitmq_broker() as broker:
            notes = Notifications(broker, ENDPOINT).declare()
            with plane(broker, ENDPOINT, f"file://{store}", root) as live:
                workers = [live.start_worker(model_uri, f"w{n}", concurrency=4) for n in (0, 1)]
                client = Client(str(live.client.base_url))
                ids = list(picks)
                done: list[str] = []
                events: dict[str, object] = {}

                def send(inference_id: str) -> str | None:
                    body = to_csv(rows[picks[inference_id]])
                    return inference_id if client.send(inference_id, body) else None

                with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
                    futures = [pool.submit(send, i) for i in ids]
                    third = len(ids) // 3
                    wait_until(lambda: sum(f.done() for f in futures) >= third, 300, "a third")
                    workers[0].proc.send_signal(signal.SIGKILL)
                    workers[0].proc.wait(10)
                    events["worker_killed_after_sent"] = sum(f.done() for f in futures)
                    workers.append(live.start_worker(model_uri, "w2", concurrency=4))
                    wait_until(lambda: sum(f.done() for f in futures) >= 2 * third, 300, "2/3")
                    for worker in workers[1:]:
                        worker.proc.send_signal(signal.SIGSTOP)  # let a backlog build up

                    def waiting() -> int:
                        accepted = sum(f.done() and f.result() is not None for f in futures)
                        return accepted - len(list((store / "output").glob("*.out")))

                    wait_until(lambda: waiting() >= 100, 120, "a backlog")
                    events["accepted_without_output_at_restart"] = waiting()
                    events["ready_in_queue_at_restart"] = backlog(
                        ENDPOINT, broker.amqp_url, None
                    ).ready
                    restart_began = time.monotonic()
                    broker.stop()
                    for worker in workers[1:]:
                        worker.proc.send_signal(signal.SIGCONT)
                    broker.start()
                    events["broker_down_seconds"] = round(time.monotonic() - restart_began, 1)
                    for future in concurrent.futures.as_completed(futures, timeout=600):
                        accepted = future.result()
                        if accepted is not None:
                            done.append(accepted)
                left = max(60.0, args.timeout - (time.monotonic() - began))
                notes.wait_for(set(done), "Completed", left)
                time.sleep(2)  # late duplicates, if any, arrive too
                notes.drain()
                logs = {"api": live.api.log if live.api else ""}
                logs |= {f"worker{n}": w.log for n, w in enumerate(workers)}
            dead = dead_letters(broker, ENDPOINT)
        outputs = sorted((store / "output").glob("*.out"))
        wrong = [
            p.stem
            for p in outputs
            if not np.array_equal(
                np.array(p.read_text().split(), dtype=np.float32), predicted[picks[p.stem]]
            )
        ]
        completed = notes.ids("Completed")
        traces = {name: tracebacks(log) for name, log in logs.items()}
        figures |= {
            "accepted": len(done),
            "never_accepted": args.requests - len(done),
            "refused_503": client.refused,
            "accepted_on_a_retry_with_the_same_id": client.accepted_after_refusal,
            "outputs": len(outputs),
            "outputs_of_accepted_requests": len({p.stem for p in outputs} & set(done)),
            "wrong_outputs": len(wrong),
            "error_objects": len(list((store / "failure").glob("*.error"))),
            "dead_lettered": len(dead),
            "completed_notifications": sum(completed.values()),
            "duplicate_notifications": sum(n - 1 for n in completed.values()),
            "inline_inputs_left": len(list((store / "input").glob("*.in"))),
            "partial_files_left": len(list(store.rglob(".*.partial"))),
            "tracebacks": traces,
            "error_lines": {name: len(re.findall(r" ERROR ", log)) for name, log in logs.items()},
            "warning_lines": {
                name: len(re.findall(r" WARNING ", log)) for name, log in logs.items()
            },
            "seconds": round(time.monotonic() - began, 1),
            **events,
        }
        held = (
            len(done) == args.requests
            and len(outputs) == figures["outputs_of_accepted_requests"] == len(done)
            and not wrong
            and not figures["error_objects"]
            and not dead
            and not any(traces.values())
        )
    print(json.dumps(figures, indent=1))
    sys.exit(0 if held else 1)


if __name__ == "__main__":
    main()
