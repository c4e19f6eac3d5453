"""A model server pod's load, read from its own ``/metrics`` (``metrics.read_all`` reads many
at once)."""

from __future__ import annotations

from infermodes.metrics import ServerLoad, fetch_metrics_text, parse_server_load


def scrape(ip: str, port: int) -> ServerLoad | None:
    """One model server pod's load, or None when it cannot be read."""
    text = fetch_metrics_text(ip, port)
    return None if text is None else parse_server_load(text)
