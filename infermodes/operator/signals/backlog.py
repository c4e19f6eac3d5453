"""An async endpoint's queue, read from the broker for the scaler."""

from __future__ import annotations

import logging

from infermodes.endpoints.scaling import scale_out_due
from infermodes.endpoints.spec import AsyncSpec
from infermodes.endpoints.status import QueueFigures
from infermodes.errors import BrokerUnavailable, BrokerUrlError
from infermodes.queueing.broker import BrokerUrl, ManagementUrl
from infermodes.queueing.rabbitmq import (
    BROKER_ERRORS,
    QueueReader,
    backlog,
    queue_name,
    waiting_webhooks,
)

log = logging.getLogger("infermodes.operator")
UNREADABLE: tuple[type[BaseException], ...] = (*BROKER_ERRORS, BrokerUrlError, BrokerUnavailable)


def read_backlog(
    endpoint: str,
    broker_url: BrokerUrl | None,
    management_url: ManagementUrl | None,
    reader: QueueReader | None = None,
    webhooks: bool = False,
) -> QueueFigures | None:
    """Ready and in-flight requests (in-flight None when only AMQP answers), and with
    ``webhooks`` the jobs ready in the outbox; None when the broker cannot be read at all,
    which the scaler treats as "keep the replicas". ``reader``: kept connections (a reconcile
    comes with every nudge: a connection each is churn)."""
    if not broker_url:
        return None
    try:
        found = backlog(endpoint, broker_url, management_url, reader)
        waiting = waiting_webhooks(endpoint, broker_url, reader) if webhooks else 0
    except UNREADABLE as exc:  # the management API's failures fall back to AMQP inside
        log.warning("cannot read the backlog of %s: %s", endpoint, exc)
        return None
    return QueueFigures(found.ready, found.unacked, found.oldest_age, found.consumers, waiting)


def read_ready(
    endpoint: str, reader: QueueReader | None, outbox: bool = False
) -> tuple[int, int, int] | None:
    """The requests waiting in the endpoint's queue now, its consumers, and with ``outbox``
    the jobs ready in its outbox (AMQP passive declares, exact, over the reader's kept
    connections), for the operator's once-a-second look; None when the broker cannot be
    read. An outbox is declared with its work queue (``declare_topology``, the outbox first):
    with no work queue it is not asked for (a passive declare of a missing queue costs the
    channel that asked) and holds nothing. Failures go to the debug log only (the reader logs
    one line when the broker stops answering and one when it is back): the reconcile
    reports an unreadable broker (status, Event, log, metric), and the look would repeat it
    every second for every async endpoint."""
    if reader is None:
        return None
    try:
        found = reader.read(queue_name(endpoint))
        read_outbox = outbox and found.exists
        waiting = waiting_webhooks(endpoint, reader.url, reader) if read_outbox else 0
        return found.ready, found.consumers, waiting
    except UNREADABLE as exc:
        log.debug("cannot read the queue of %s: %s", endpoint, exc)
        return None


def look_wants_more(
    endpoint: str, block: AsyncSpec, current: int, reader: QueueReader | None
) -> bool:
    """The once-a-second look's decision: whether the queue asks for more workers than the
    pool's ``current`` (``scaling.scale_out_due``; an unreadable broker asks for none). A pool
    at zero has its outbox read too, whatever its spec's webhooks: jobs of webhooks since
    removed from it wait there as well, and only a worker settles them (a running pool's
    outbox is the resync's to read)."""
    found = read_ready(endpoint, reader, outbox=current == 0)
    return found is not None and scale_out_due(block, current, *found)
