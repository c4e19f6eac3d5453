"""Pods' own ``/metrics``, read over HTTP: model servers' load, async workers' in-flight
counts, batch instances' progress."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

from infermodes.metrics import ServerLoad, parse_server_load

log = logging.getLogger("infermodes.operator")
T = TypeVar("T")

FETCH_TIMEOUT_SECONDS = 2.0  # one pod's answer
READ_DEADLINE_SECONDS = 3.0  # every pod of one reading, together
READERS = 16  # pods read at once


def fetch_text(ip: str, port: int, timeout: float = FETCH_TIMEOUT_SECONDS) -> str | None:
    """A pod's exposition text, or None when it cannot be read (what that means is the
    reader's: a model server's load leaves the pod out, an async worker's in-flight count
    becomes unknown)."""
    import httpx

    host = f"[{ip}]" if ":" in ip else ip
    try:
        response = httpx.get(f"http://{host}:{port}/metrics", timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return response.text


def scrape(ip: str, port: int) -> ServerLoad | None:
    """One model server pod's load, or None when it cannot be read."""
    text = fetch_text(ip, port)
    return None if text is None else parse_server_load(text)


def read_pods(
    read: Callable[[str, int], T | None],
    ips: Iterable[str],
    port: int,
    deadline: float = READ_DEADLINE_SECONDS,
) -> dict[str, T | None]:
    """``read`` of every pod at once, by IP; a pod not answered within ``deadline`` seconds of
    the start is None, like one that cannot be read. Read one after another, a pool of silent
    pods (a NetworkPolicy that drops the port, say) would hold the endpoint's reconcile for
    seconds per pod, and with it every decision about the endpoint."""
    wanted = list(dict.fromkeys(ips))
    if not wanted:
        return {}
    pool = ThreadPoolExecutor(min(READERS, len(wanted)), thread_name_prefix="pod-metrics")
    try:
        futures = {ip: pool.submit(read, ip, port) for ip in wanted}
        wait(futures.values(), timeout=deadline)
        found: dict[str, T | None] = {}
        for ip, future in futures.items():
            failed = future.exception() if future.done() else None
            if failed is not None:
                log.warning("cannot read the metrics of pod %s: %r", ip, failed)
            found[ip] = future.result() if future.done() and failed is None else None
        return found
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a late answer is dropped
