"""A waiter's InService is an invocation's InService, on the real control plane: a gateway whose
InferenceEndpoint watch has not yet delivered what the API server already answers a GET with
(DescribeEndpoint's read, a waiter's) serves the endpoint all the same.

The lag is made, not waited for: the gateway runs in this process (``Runner``, the one
``infermodes gateway`` runs) over the real API server, with its watch of InferenceEndpoints
holding back the events the test names until the end (``LaggingWatch``), in order, as a slow
watch delivers them late; nothing else is changed: the pods' watch, the GETs, the operator that
reconciles the endpoint, the model server that answers and the gateway's account (the chart's
least-privilege role) are the real ones. Without the
re-read, these invocations get the table's 400 (``Creating``) or 404 (not yet ADDED)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest

from infermodes.endpoints.spec import PLURAL
from infermodes.gateway.app import Runner, async_accept_router
from infermodes.gateway.kube import Credentials, KubeApi, KubeSource
from infermodes.gateway.table import SERVING_PHASES
from infermodes.settings import GatewaySettings
from tests.conftest import AbaloneModel
from tests.e2e.operator_support import (
    OPERATOR_NAMESPACE,
    Tools,
    endpoint_manifest,
    to_csv,
    wait_phase,
)
from tests.e2e.test_gateway import GATEWAY_ACCOUNT
from tests.support.processes import free_port, wait_until

CSV = {"content-type": "text/csv"}
HOLD_POLLS = 6000  # 0.1 s each: an event is held for ten minutes at most
T = TypeVar("T")


def serving(obj: Mapping[str, Any]) -> bool:
    """An endpoint object whose status takes invocations."""
    return (obj.get("status") or {}).get("phase") in {p.value for p in SERVING_PHASES}


class LaggingWatch(KubeApi):
    """The API server, but its InferenceEndpoint watch events for which ``holds`` is true are
    held back, with every event after them, until ``release`` is set."""

    def __init__(self, credentials: Credentials, holds: Callable[[Mapping[str, Any]], bool]):
        super().__init__(credentials)
        self.holds = holds
        self.release = threading.Event()

    async def watch(
        self, path: str, params: Mapping[str, str], version: str
    ) -> AsyncIterator[dict[str, Any]]:
        async for event in super().watch(path, params, version):
            held = path.endswith(f"/{PLURAL}") and event["type"] != "BOOKMARK"
            if held and self.holds(event.get("object") or {}):
                for _ in range(HOLD_POLLS):
                    if self.release.is_set():
                        break
                    await asyncio.sleep(0.1)
            yield event


class InThread:
    """The gateway's event loop on a thread of its own, the test's calls into it."""

    def __init__(self, runner: Runner, api: KubeApi) -> None:
        self.loop = asyncio.new_event_loop()
        self.runner, self.api = runner, api
        self.thread = threading.Thread(target=self._main, name="gateway")
        self.task: asyncio.Task[int] | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.runner.run())
        with contextlib.suppress(asyncio.CancelledError):
            self.loop.run_until_complete(self.task)
        self.loop.run_until_complete(self.api.client.aclose())
        self.loop.close()

    def call(self, function: Callable[[], T]) -> T:
        """``function()`` on the gateway's loop (its table is not for other threads)."""

        async def called() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(called(), self.loop).result(timeout=30)

    def stop(self) -> None:
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


@contextlib.contextmanager
def lagging_gateway(
    tools: Tools,
    namespace: str,
    holds: Callable[[Mapping[str, Any]], bool],
    broker_url: str | None = None,
) -> Iterator[tuple[str, LaggingWatch, InThread]]:
    """A gateway serving ``namespace`` whose endpoints' watch holds back what ``holds`` says,
    under the chart's gateway account (its least privilege), listening on loopback, and with
    ``broker_url`` accepting async invocations as ``infermodes gateway`` does; its address,
    its API and its thread."""
    token = tools.cluster.api.post(
        f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/serviceaccounts/{GATEWAY_ACCOUNT}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 600}},
    )["status"]["token"]  # fmt: skip
    credentials = Credentials(tools.cluster.server, False, lambda: token, namespace=namespace)
    api = LaggingWatch(credentials, holds)
    settings = GatewaySettings(host="127.0.0.1", port=free_port(), namespaces=[namespace])
    runner = Runner(settings, KubeSource(api, [namespace]), None, "lagging")
    closing: list[Callable[[], None]] = []
    if broker_url is not None:
        runner.app.include(async_accept_router(settings, broker_url, runner.table,
                                               runner.app.registry, closing, None,
                                               runner.app.proxy.rereads))  # fmt: skip
    running = InThread(runner, api)
    running.thread.start()
    url = f"http://127.0.0.1:{settings.port}"
    try:
        wait_until(lambda: ready(url), 60, "the lagging gateway to list the endpoints")
        yield url, api, running
    finally:
        api.release.set()
        running.stop()
        for close in closing:
            close()


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize(
    ("held", "holds"),
    [("its InService status", serving), ("the endpoint itself (its ADDED event)", lambda _: True)],
    ids=["status", "added"],
)
def test_an_endpoint_the_api_says_is_in_service_is_served_before_the_watch_says_so(
    tools: Tools,
    k8s_namespace: str,
    model_uri: str,
    abalone_model: AbaloneModel,
    held: str,
    holds: Callable[[Mapping[str, Any]], bool],
) -> None:
    with lagging_gateway(tools, k8s_namespace, holds) as (url, _, running):
        table = running.runner.table
        manifest = endpoint_manifest("lagging", model_uri)
        assert tools.apply(manifest, k8s_namespace).returncode == 0
        wait_phase(tools.cluster.api, k8s_namespace, "lagging", "InService")  # the waiter's GET
        assert running.call(lambda: table.behind("lagging")), f"the watch delivered {held}"
        rows = abalone_model.test_rows
        response = httpx.post(f"{url}/endpoints/lagging/invocations", content=to_csv(rows),
                              headers=CSV, timeout=90)  # fmt: skip
        assert response.status_code == 200, response.text
        expected = abalone_model.booster().inplace_predict(rows)
        np.testing.assert_array_equal(np.array(response.text.split(), dtype=np.float32), expected)
        assert not running.call(lambda: table.behind("lagging"))  # the read is in the table
