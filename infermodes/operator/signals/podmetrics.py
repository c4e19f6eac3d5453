"""Pods' own ``/metrics``, read over HTTP: model servers' load, batch instances' progress."""

from __future__ import annotations

from infermodes.metrics import ServerLoad, parse_server_load


def fetch_text(ip: str, port: int, timeout: float = 2.0) -> str | None:
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
