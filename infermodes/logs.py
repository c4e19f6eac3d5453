"""Log setup shared by every infermodes process (kept free of heavy imports: the model server
configures logging before anything imports prometheus_client)."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
    quiet_client_logs(level)


def quiet_client_logs(level: str) -> None:
    """pika logs every lost connection at ERROR with a traceback, also the idle ones we reopen
    without the caller noticing, and each channel it opens or the broker closes at INFO; our
    own code logs one line per real outage instead. Every process, since any may reach a
    broker (``up --broker-url``, a gateway with one)."""
    if level.lower() != "debug":
        logging.getLogger("pika").setLevel(logging.CRITICAL)


def redacted_url(url: str, keep_path: bool = True) -> str:
    """``url`` fit for a log line, an error message or a status: never its password, query or
    fragment, and with ``keep_path=False`` neither its path nor its user name (where webhooks
    keep their tokens)."""
    if not url:
        return "<an empty URL>"
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        return "<a URL that cannot be parsed>"
    if "@" in parts.path + parts.query + parts.fragment:  # where the password ends is a guess
        return f"{parts.scheme}:..." if parts.scheme else "..."
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    if parts.username and keep_path:  # a webhook's user name may be its token
        netloc = f"{parts.username}@{netloc}"
    path = parts.path if keep_path else "/..." if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{netloc}{path}"
