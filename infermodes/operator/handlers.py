"""kopf handlers: thin adapters that call ``reconcile`` and write its status.

Create, update, resume and the timer share one reconcile; API failures become kopf's
temporary errors (retried with a delay); phase changes become Kubernetes Events.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from infermodes.endpoints import spec as s
from infermodes.endpoints.scaling import ScalerMemory
from infermodes.endpoints.status import Status
from infermodes.operator.kube import KubeDoor, KubeError
from infermodes.operator.reconcile import Deps, reconcile
from infermodes.operator.signals.podmetrics import scrape
from infermodes.settings import OperatorSettings

RETRY_DELAY_SECONDS = 5
RESOURCE = (s.GROUP, s.VERSION, s.PLURAL)


def configure(operator_settings: OperatorSettings) -> None:
    """Register the handlers for this process's settings (called once at start)."""

    @kopf.on.startup()
    def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.posting.level = logging.INFO
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=s.GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=s.GROUP, key="last-handled-configuration"
        )
        memo.deps = Deps(KubeDoor(), operator_settings, scrape)

    def run(body: Any, patch: Any, memo: Any, logger: Any, autoscale: bool) -> None:
        memory = memo.setdefault("scaler", ScalerMemory())
        previous = Status.from_dict(body.get("status"))
        try:
            status = reconcile(body, memory, memo.deps, autoscale=autoscale)
        except KubeError as exc:
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY_SECONDS) from exc
        generation = int(body["metadata"].get("generation", 1))
        patch.status.update(status.to_patch(generation, body.get("status")))
        if previous is None or previous.phase != status.phase or previous.reason != status.reason:
            kind = "Warning" if status.phase is s.Phase.FAILED else "Normal"
            kopf.event(body, type=kind, reason=status.phase.value,
                       message=status.message or status.reason)  # fmt: skip
            logger.info("phase %s (%s): %s", status.phase, status.reason, status.message)

    @kopf.on.create(*RESOURCE)
    @kopf.on.update(*RESOURCE, field="spec")
    @kopf.on.resume(*RESOURCE)
    def changed(body: Any, patch: Any, memo: Any, logger: Any, **_: Any) -> None:
        run(body, patch, memo, logger, autoscale=False)

    @kopf.timer(*RESOURCE, interval=operator_settings.resync_seconds, initial_delay=1)
    def tick(body: Any, patch: Any, memo: Any, logger: Any, **_: Any) -> None:
        run(body, patch, memo, logger, autoscale=True)


def run_operator(operator_settings: OperatorSettings) -> None:
    """Run until stopped; watches the configured namespaces or all of them."""
    level = operator_settings.log_level.lower()
    kopf.configure(debug=level == "debug", verbose=level in ("debug", "info"),
                   quiet=level == "error", log_prefix=True)  # fmt: skip
    configure(operator_settings)
    namespaces = operator_settings.namespaces
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces,
        memo=kopf.Memo(),
    )
