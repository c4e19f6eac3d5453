"""Log setup shared by every infermodes process (kept free of heavy imports: the model server
configures logging before anything imports prometheus_client)."""

from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT)
