"""Each model server pod's load, read over HTTP from its own ``/metrics``."""

from __future__ import annotations

from infermodes.metrics import ServerLoad, parse_server_load


def scrape(ip: str, port: int, timeout: float = 2.0) -> ServerLoad | None:
    """One pod's load, or None when it cannot be read (the pod is then left out)."""
    import httpx

    host = f"[{ip}]" if ":" in ip else ip
    try:
        response = httpx.get(f"http://{host}:{port}/metrics", timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError:
        return None
    return parse_server_load(response.text)
