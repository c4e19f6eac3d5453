"""The managed platform's API on the test control plane: the Kubernetes store keeps records and
endpoints as objects kubectl sees."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from infermodes.gateway.kube import Credentials, KubeApi
from infermodes.gateway.platform_store import KubePlatformStore
from infermodes.platform.store import AlreadyExists, NotFound, RecordKind
from tests.cluster.harness import Cluster
from tests.e2e.operator_support import Tools, endpoint_manifest, installed_chart


@pytest.fixture(scope="module")
def tools(k8s_cluster: Cluster) -> Iterator[Tools]:
    with installed_chart(k8s_cluster) as tools:
        yield tools


def test_the_kubernetes_store_keeps_records_and_endpoints_as_objects(
    tools: Tools, k8s_namespace: str, model_uri: str
) -> None:
    async def scenario() -> None:
        api = KubeApi(Credentials.from_kubeconfig(tools.cluster.kubeconfig))
        store = KubePlatformStore(api, k8s_namespace)
        model = {"ModelName": "Abalone-Model", "PrimaryContainer": {"Image": "xgboost:1.7-1",
                 "ModelDataUrl": model_uri}, "ModelArn": "arn:x", "CreationTime": 1.5}  # fmt: skip
        await store.create_record(RecordKind.MODEL, "Abalone-Model", model)
        with pytest.raises(AlreadyExists):
            await store.create_record(RecordKind.MODEL, "abalone-model", model)
        assert await store.read_record(RecordKind.MODEL, "ABALONE-model") == model
        assert await store.read_record(RecordKind.ENDPOINT_CONFIG, "abalone-model") is None
        assert await store.list_records(RecordKind.MODEL) == [model]
        assert await store.list_records(RecordKind.ENDPOINT_CONFIG) == []

        endpoint = endpoint_manifest("Abalone-Rt", model_uri)
        endpoint["metadata"]["annotations"] = {"platform.infermodes.dev/name": "Abalone-Rt"}
        await store.create_endpoint(endpoint)
        with pytest.raises(AlreadyExists):
            await store.create_endpoint(endpoint)
        demand = {"metadata": {"annotations": {"infermodes.dev/demand-abc": "{}"}}}
        await api.merge_patch(f"{store.endpoints}/abalone-rt", demand)
        endpoint["spec"]["realtime"]["maxReplicas"] = 2
        endpoint["metadata"]["annotations"] = {"platform.infermodes.dev/name": "Abalone-RT"}
        await store.replace_endpoint(endpoint)
        read = await store.read_endpoint("Abalone-Rt")
        assert read is not None and read["spec"]["realtime"]["maxReplicas"] == 2
        assert read["metadata"]["annotations"] == {
            "platform.infermodes.dev/name": "Abalone-RT",
            "infermodes.dev/demand-abc": "{}",  # the gateways' own annotations stay
        }
        assert [e["metadata"]["name"] for e in await store.list_endpoints()] == ["abalone-rt"]

        shown = tools.kubectl("get", "inferencemodels,inferenceendpoints", "-n", k8s_namespace)
        assert "abalone-model" in shown.stdout and "xgboost:1.7-1" in shown.stdout, shown
        assert "abalone-rt" in shown.stdout, shown.stdout

        await store.delete_endpoint("abalone-rt")
        await store.delete_record(RecordKind.MODEL, "Abalone-Model")
        with pytest.raises(NotFound):
            await store.delete_record(RecordKind.MODEL, "Abalone-Model")
        with pytest.raises(NotFound):
            await store.replace_endpoint(endpoint_manifest("never-created", model_uri))
        await api.client.aclose()

    asyncio.run(scenario())
