"""Load figures read from the model servers' own ``/metrics``: the autoscaler's input."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

INVOCATIONS = "infermodes_http_request_duration_seconds"
IN_FLIGHT = "infermodes_http_requests_in_flight"


@dataclass(frozen=True)
class PodLoad:
    invocations_total: float  # all /invocations answered so far, any status
    in_flight: float


def parse_load(text: str) -> PodLoad:
    invocations = 0.0
    in_flight = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == f"{INVOCATIONS}_count"
                and sample.labels.get("route") == "/invocations"
            ):
                invocations += sample.value
            elif sample.name == IN_FLIGHT:
                in_flight += sample.value
    return PodLoad(invocations, in_flight)


def scrape(ip: str, port: int, timeout: float = 2.0) -> PodLoad | None:
    """One pod's load, or None when it cannot be read (the pod is then left out)."""
    import httpx

    host = f"[{ip}]" if ":" in ip else ip
    try:
        response = httpx.get(f"http://{host}:{port}/metrics", timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return parse_load(response.text)
