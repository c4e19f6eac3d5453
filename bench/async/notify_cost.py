"""What one confirmed notification costs the broker, published alone as fast as it goes: the
workers' way (``ChannelPool``: each thread waits for its confirm on a connection of its own)
against confirms pipelined on one connection (up to ``window`` publishes awaiting theirs).

Nothing is bound to the topic exchange, as in ``drain.py``. The broker's CPU time
(``/proc/<pid>/stat``) per message says what a publish costs it when publishes arrive
back to back; ``drain.py`` measures what they cost at a drain's rate.

Run from the repository root, alone on the machine::

    flock /tmp/infermodes-bench.lock .venv/bin/python bench/async/notify_cost.py
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import pika  # noqa: E402
from pika.channel import Channel  # noqa: E402
from pika.frame import Method  # noqa: E402
from run import broker_pid, cpu_seconds  # noqa: E402

from infermodes.queueing.broker import NOTIFICATION_EXCHANGE  # noqa: E402
from infermodes.queueing.rabbitmq import PERSISTENT, ChannelPool  # noqa: E402
from tests.support.rabbitmq import rabbitmq_broker  # noqa: E402

ROUTING_KEY = "bench.success"
# about the size of a success notification with a one-row result inline
BODY = json.dumps(
    {"inferenceId": "0" * 36, "invocationStatus": "Completed", "pad": "x" * 500}
).encode()


def declare(channel: pika.adapters.blocking_connection.BlockingChannel) -> None:
    channel.exchange_declare(NOTIFICATION_EXCHANGE, "topic", durable=True)


def blocking(url: str, messages: int, threads: int) -> None:
    """``threads`` threads publish through a pool of as many confirmed connections."""
    pool = ChannelPool(url, threads, declare, "bench")

    def publish(thread: int) -> None:
        for index in range(messages // threads):
            pool.publish(NOTIFICATION_EXCHANGE, ROUTING_KEY, BODY, f"{thread}-{index}", False)

    started = [threading.Thread(target=publish, args=(k,)) for k in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout=300)
    pool.close()


def pipelined(url: str, messages: int, window: int) -> None:
    """One connection (pika's SelectConnection), at most ``window`` publishes unconfirmed."""
    state = {"sent": 0, "confirmed": 0}
    waiting: set[int] = set()
    properties = pika.BasicProperties(delivery_mode=PERSISTENT, content_type="application/json")

    def fill(channel: Channel) -> None:
        while len(waiting) < window and state["sent"] < messages:
            channel.basic_publish(NOTIFICATION_EXCHANGE, ROUTING_KEY, BODY, properties)
            state["sent"] += 1
            waiting.add(state["sent"])  # delivery tags count from 1 on a confirm channel

    def on_confirm(channel: Channel, frame: Method) -> None:
        tag, multiple = frame.method.delivery_tag, frame.method.multiple
        done = {t for t in waiting if t <= tag} if multiple else {tag}
        waiting.difference_update(done)
        state["confirmed"] += len(done)
        if state["confirmed"] >= messages:
            channel.connection.close()
        else:
            fill(channel)

    def on_channel(channel: Channel) -> None:
        channel.confirm_delivery(
            lambda frame: on_confirm(channel, frame), callback=lambda _: fill(channel)
        )

    def on_open(connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=on_channel)

    connection = pika.SelectConnection(pika.URLParameters(url), on_open_callback=on_open)
    connection.add_on_close_callback(lambda *_: connection.ioloop.stop())
    deadline = threading.Timer(300, lambda: connection.ioloop.add_callback_threadsafe(
        connection.ioloop.stop))  # fmt: skip
    deadline.start()
    connection.ioloop.start()
    deadline.cancel()
    if state["confirmed"] < messages:
        raise RuntimeError(f"only {state['confirmed']} of {messages} confirmed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "notify_cost_results.json")
    args = parser.parse_args()
    results = []
    shapes: list[tuple[str, Callable[[str], None]]] = [
        ("blocking, 4 threads", lambda url: blocking(url, args.messages, 4)),
        ("blocking, 1 thread", lambda url: blocking(url, args.messages, 1)),
        ("pipelined, window 4", lambda url: pipelined(url, args.messages, 4)),
        ("pipelined, window 16", lambda url: pipelined(url, args.messages, 16)),
    ]
    with rabbitmq_broker() as broker:
        blocking(broker.amqp_url, 200, 1)  # declares the exchange, warms the broker
        pid = broker_pid(broker)
        for _ in range(args.repeats):
            for name, publish in shapes:
                time.sleep(1.0)
                cpu, began = cpu_seconds(pid), time.perf_counter()
                publish(broker.amqp_url)
                seconds = time.perf_counter() - began
                used = cpu_seconds(pid) - cpu
                results.append({
                    "shape": name,
                    "messages_per_s": round(args.messages / seconds),
                    "broker_cpu_ms_per_message": round(used * 1000 / args.messages, 3),
                })  # fmt: skip
                print(json.dumps(results[-1]), flush=True)
    args.out.write_text(json.dumps({"messages": args.messages, "runs": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
