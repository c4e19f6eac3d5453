"""The gateway's routing table: names, phases, the replica choice, the concurrency share, and
watch events (InferenceEndpoints, Pods) turned into table updates."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

import pytest

from infermodes.endpoints.demand import GatewayDemand, annotation_key
from infermodes.endpoints.spec import Phase, object_name
from infermodes.endpoints.status import AppliedSpec
from infermodes.gateway.errors import ValidationError
from infermodes.gateway.kube import Gone, Watched, apply_endpoint, apply_pod, replace_pods
from infermodes.gateway.table import Endpoint, Replica, Table, storage_bases

NOW = 1_000_000.0


def endpoint_object(
    name: str,
    mode: str = "serverless",
    phase: str | None = "InService",
    annotations: dict[str, str] | None = None,
    namespace: str = "ns",
    **block: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"mode": mode, "model": {"uri": "file:///m"}, mode: block}
    meta = {"name": name, "namespace": namespace, "annotations": annotations or {}}
    return {"metadata": meta, "spec": spec,
            "status": {"phase": phase} if phase else {}}  # fmt: skip


def pod(
    name: str,
    endpoint: str,
    ip: str | None = "127.0.1.1",
    ready: bool = False,
    phase: str = "Running",
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns",
                            "labels": {"infermodes.dev/endpoint": endpoint}}  # fmt: skip
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"phase": phase, "conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}]}  # fmt: skip
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "status": status}


class Hooks:
    def __init__(self) -> None:
        self.added: list[str] = []
        self.removed: list[str] = []

    def table(self, **kwargs: Any) -> Table:
        return Table(on_new_replica=lambda _, r: self.added.append(r.key),
                     on_removed_replica=lambda _, r: self.removed.append(r.key),
                     **kwargs)  # fmt: skip


@pytest.mark.parametrize(
    "written",
    [
        '{"gateway":"g","inFlight":1e999,"held":0,"lastRequestAt":0,"at":0}',
        '{"gateway":"g","inFlight":1,"held":0,"lastRequestAt":NaN,"at":0}',
        '{"gateway":"g","inFlight":1,"held":0,"lastRequestAt":0,"at":-Infinity}',
        '["gateway"]',
        '{"gateway":"g","inFlight":1' + "0" * 400 + ',"held":0,"lastRequestAt":0,"at":0}',
    ],
)
def test_a_demand_entry_anyone_may_write_wrongly_is_ignored_not_raised(written: str) -> None:
    """Anyone who may annotate an endpoint can write an entry: an infinity (``int`` raises an
    OverflowError) or a NaN must not stop the gateway's watch, nor the operator's sums."""
    table = Table()
    table.apply_endpoint(endpoint_object("e", annotations={annotation_key("g"): written}))
    assert table.get("ns", "e").peers_seen_at == ()
    assert GatewayDemand.from_annotation(written) is None


def test_an_object_the_gateway_cannot_read_takes_no_invocations_and_stops_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever a value holds, reading it must not raise: a raise would stop the watch (or
    the relist) that serves every other endpoint."""
    table = Table()
    bad = endpoint_object("odd", "async", outputPath="s3://b/odd")
    bad["status"] = ["not", "an", "object"]
    table.replace_endpoints(None, [endpoint_object("fine"), bad])
    assert table.lookup("fine").mode is not None
    with pytest.raises(ValidationError, match="has a spec the gateway cannot read"):
        table.lookup("odd").check_servable()
    assert "odd" not in table.async_layouts and not table.async_swept
    assert "endpoint ns/odd cannot be read (AttributeError" in caplog.text
    served = endpoint_object("queued", "async", outputPath="s3://b/q")
    table.apply_endpoint(served)
    assert "queued" in table.async_layouts and "ns/queued" in table.async_swept
    served["metadata"]["annotations"] = ["not", "a", "map"]  # it was served: now it is not
    table.apply_endpoint(served)
    assert "queued" not in table.async_layouts and "ns/queued" not in table.async_swept


def test_unknown_names_are_404_and_a_name_in_two_namespaces_is_409_naming_both() -> None:
    table = Table()
    with pytest.raises(ValidationError) as missing:
        table.lookup("abalone")
    assert missing.value.status_code == 404 and "abalone" in str(missing.value)
    table.apply_endpoint(endpoint_object("abalone", namespace="team-a"))
    assert table.lookup("abalone").namespace == "team-a"
    table.apply_endpoint(endpoint_object("abalone", namespace="team-b"))
    with pytest.raises(ValidationError) as clash:
        table.lookup("abalone")
    assert clash.value.status_code == 409
    assert "team-a and team-b" in str(clash.value)
    table.remove_endpoint("team-a", "abalone")
    assert table.lookup("abalone").namespace == "team-b"


def test_another_ascii_case_finds_the_endpoint_and_a_unicode_look_alike_does_not() -> None:
    table = Table()
    table.apply_endpoint(endpoint_object("kelp"))
    assert table.lookup(object_name("KeLP")).name == "kelp"  # the platform's carry upper case
    with pytest.raises(ValidationError) as kelvin:
        table.lookup(object_name("\u212aelp"))  # KELVIN SIGN, which str.lower() makes 'k'
    assert kelvin.value.status_code == 404


@pytest.mark.parametrize(
    ("mode", "use"),
    [("realtime", "/endpoints/e/invocations"), ("serverless", "/endpoints/e/invocations")],
)
def test_the_async_route_tells_an_endpoint_of_another_mode_how_to_call_it(
    mode: str, use: str
) -> None:
    """As the synchronous route tells an async endpoint: 400 naming the mode, not a 404."""
    table = Table()
    table.apply_endpoint(endpoint_object("e", mode))
    refusal = table.async_missing("e")
    assert refusal.status_code == 400
    assert f"is a {mode} endpoint: use {use}" in str(refusal)
    assert table.async_missing("other").status_code == 404


def test_the_async_route_serves_a_name_from_one_namespace_only() -> None:
    """As synchronous invocations: a name in two namespaces is a 409 naming both, never the
    layout (and output location) of whichever was written last; the retention sweep still
    sees every async endpoint."""
    table = Table()
    table.apply_endpoint(endpoint_object("s", "async", namespace="a", outputPath="s3://a/out"))
    assert table.async_layouts["s"].output_path == "s3://a/out"
    table.apply_endpoint(endpoint_object("s", "async", namespace="b", outputPath="s3://b/out"))
    assert "s" not in table.async_layouts and "s" not in table.max_attempts
    refusal = table.async_missing("s")
    assert refusal.status_code == 409 and "a and b" in str(refusal)
    assert {k: v.output_path for k, v in table.async_swept.items()} == {
        "a/s": "s3://a/out",
        "b/s": "s3://b/out",
    }
    table.apply_endpoint(endpoint_object("s", "realtime", namespace="b"))  # b's is not async
    assert "s" not in table.async_layouts and table.async_missing("s").status_code == 409
    table.remove_endpoint("b", "s")
    assert table.async_layouts["s"].output_path == "s3://a/out"
    assert set(table.async_swept) == {"a/s"}
    table.remove_endpoint("a", "s")
    assert not table.async_layouts and not table.async_swept
    assert table.async_missing("s").status_code == 404


def test_a_newcomer_the_operator_held_back_does_not_take_the_name_off_its_holder() -> None:
    """The operator gives an async name (its queue) to the oldest endpoint and fails the
    others NameInUse; the gateway answered 409 for the holder too, so anyone who could create
    an endpoint in another namespace could take a working one off the gateway."""
    table = Table()
    table.apply_endpoint(endpoint_object("s", "async", namespace="a", outputPath="s3://a/out"))
    newcomer = endpoint_object("s", "async", namespace="b", phase="Failed", outputPath="s3://b/o")
    newcomer["status"]["reason"] = "NameInUse"
    table.apply_endpoint(newcomer)
    assert table.lookup("s").namespace == "a"
    assert table.async_layouts["s"].output_path == "s3://a/out"
    table.apply_endpoint(endpoint_object("t", "realtime", namespace="a"))
    failed = endpoint_object("t", "realtime", namespace="b", phase="Failed")
    failed["status"]["reason"] = "ModelLoadFailed"  # another failure: the name is in two
    table.apply_endpoint(failed)
    with pytest.raises(ValidationError) as both:
        table.lookup("t")
    assert both.value.status_code == 409


PREFIXES = ("s3://async/{namespace}/", "FILE:///srv/async/shared")


@pytest.mark.parametrize(
    ("paths", "outside"),
    [
        ({"outputPath": "s3://async/team-a/abalone/out"}, None),
        ({"outputPath": "s3://async/team-a"}, None),  # the namespace's folder itself
        ({"outputPath": "file:///srv/async/shared/x", "failurePath": "s3://async/team-a/f"},
         None),
        ({"outputPath": "file://localhost/srv/async/shared/./x/"}, None),  # spelt otherwise
        ({"outputPath": "s3://async/team-b/out"}, "outputPath s3://async/team-b/out"),
        ({"outputPath": "s3://async/team-a-x/out"}, "outputPath s3://async/team-a-x/out"),
        ({"outputPath": "file:///srv/async/shared/../private/out"}, "outputPath file:///srv"),
        # S3 keys keep dot segments, which a server or proxy may resolve
        ({"outputPath": "s3://async/team-a/../team-b"}, "outputPath s3://async/team-a/../team-b"),
        ({"outputPath": "s3://async/team-a/./x"}, "outputPath s3://async/team-a/./x"),
        ({"outputPath": "s3://async/team-a/out", "inputPath": "s3://other/in"},
         "inputPath s3://other/in"),
        ({"outputPath": "s3://async/team-a/out", "failurePath": "s3://other/f"},
         "failurePath s3://other/f"),
        # the derived inputPath follows outputPath: the path a platform user set is named
        ({"outputPath": "s3://other/out"}, "outputPath s3://other/out"),
    ],
)  # fmt: skip
def test_the_gateway_uses_storage_only_under_its_prefixes(
    paths: dict[str, str], outside: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """The gateway stores inline inputs and sweeps with its own credentials: an endpoint whose
    paths leave its prefixes gets 403 naming the path (the prefixes and the namespace go to
    the gateway's log only), and is not swept; the others are served as before."""
    table = Table(storage_prefixes=PREFIXES)
    table.apply_endpoint(endpoint_object("e", "async", namespace="team-a", **paths))
    assert ("e" in table.async_layouts) is (outside is None)
    assert ("team-a/e" in table.async_swept) is (outside is None)
    if outside is not None:
        refusal = table.async_missing("e")
        assert refusal.status_code == 403
        assert outside in str(refusal) and "async storage prefixes" in str(refusal)
        assert "team-a" not in str(refusal).replace(paths["outputPath"], "")
        assert "s3://async/team-a" in caplog.text  # the detail, for the gateway's operator


def test_a_namespace_placeholder_does_not_widen_for_an_unnamed_namespace() -> None:
    assert storage_bases(PREFIXES, "") == ["file:///srv/async/shared"]
    assert storage_bases(PREFIXES, "ns") == ["s3://async/ns/", "file:///srv/async/shared"]


def test_an_endpoint_moved_under_the_prefixes_is_served_and_one_moved_out_is_not() -> None:
    table = Table(storage_prefixes=PREFIXES)
    table.apply_endpoint(endpoint_object("e", "async", namespace="a", outputPath="s3://x/out"))
    assert table.async_missing("e").status_code == 403 and not table.async_swept
    table.apply_endpoint(endpoint_object("e", "async", namespace="a", outputPath="s3://async/a"))
    assert table.async_layouts["e"].output_path == "s3://async/a" and "a/e" in table.async_swept
    table.apply_endpoint(endpoint_object("e", "async", namespace="a", outputPath="s3://x/out"))
    assert "e" not in table.async_layouts and not table.async_swept
    assert Table().storage_prefixes == ()  # none: anywhere, as before


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (endpoint_object("e", phase="Creating"), "is Creating, not InService"),
        (endpoint_object("e", phase="Failed"), "is Failed, not InService"),
        (endpoint_object("e", phase=None), "not reconciled yet"),
        (endpoint_object("e", mode="async", outputPath="file:///o"),
         "/endpoints/e/async-invocations"),
        ({"metadata": {"name": "e", "namespace": "ns"}, "spec": {"mode": "teleport"}},
         "a spec the gateway cannot read"),
    ],
)  # fmt: skip
def test_endpoints_that_take_no_invocations_say_why(obj: dict[str, Any], message: str) -> None:
    table = Table()
    table.apply_endpoint(obj)
    with pytest.raises(ValidationError) as refused:
        table.lookup("e").check_servable()
    assert refused.value.status_code == 400
    assert message in str(refused.value)


@pytest.mark.parametrize(("namespaced", "shown"), [(True, " (namespace ns)"), (False, "")])
def test_a_refusal_names_the_namespace_only_where_it_means_something(
    namespaced: bool, shown: str
) -> None:
    """Under up, whose one namespace is its own, every refusal said "(namespace local)"."""
    table = Table(namespaced=namespaced)
    table.apply_endpoint(endpoint_object("e", phase="Creating"))
    table.apply_endpoint(endpoint_object("q", mode="async", outputPath="file:///o"))
    with pytest.raises(ValidationError) as refused:
        table.lookup("e").check_servable()
    assert str(refused.value) == f"endpoint e{shown} is Creating, not InService"
    assert str(table.lookup("q").other_route()) == (
        f"endpoint q{shown} is an async endpoint: use /endpoints/q/async-invocations"
    )


@pytest.mark.parametrize("phase", ["InService", "Updating"])
def test_in_service_and_updating_endpoints_are_served_even_at_zero_replicas(phase: str) -> None:
    table = Table()
    table.apply_endpoint(endpoint_object("e", phase=phase))
    endpoint = table.lookup("e")
    endpoint.check_servable()
    assert endpoint.choose() is None  # held, not refused


def test_choice_is_the_ready_replica_with_the_fewest_in_flight_and_ties_rotate() -> None:
    endpoint = Endpoint("e", "ns")
    for key, in_flight, ready in [("a", 3, True), ("b", 1, True), ("c", 0, False), ("d", 1, True)]:
        endpoint.replicas[key] = Replica(key, "127.0.0.1", 1, ready=ready, in_flight=in_flight)
    chosen = {endpoint.choose().key for _ in range(4)}  # type: ignore[union-attr]
    assert chosen == {"b", "d"}  # never the busier a, never the unready c
    endpoint.replicas["d"].in_flight = 0
    assert endpoint.choose().key == "d"  # type: ignore[union-attr]


def test_the_concurrency_cap_is_shared_with_gateways_that_wrote_fresh_demand() -> None:
    table = Table(demand_key=annotation_key("me"))

    def entry(gateway: str, at: float) -> tuple[str, str]:
        return annotation_key(gateway), GatewayDemand(gateway, 1, 0, at, at).to_annotation()

    table.apply_endpoint(endpoint_object("e", maxConcurrency=10))
    assert table.lookup("e").concurrency_cap(NOW) == 10
    annotations = dict([entry("me", NOW), entry("other", NOW - 5), entry("dead", NOW - 600)])
    table.apply_endpoint(endpoint_object("e", maxConcurrency=10, annotations=annotations))
    assert table.lookup("e").concurrency_cap(NOW) == 5  # me and other; dead is stale
    assert table.lookup("e").concurrency_cap(NOW + 600) == 10  # other went quiet since
    table.apply_endpoint(endpoint_object("e", maxConcurrency=1, annotations=annotations))
    assert table.lookup("e").concurrency_cap(NOW) == 1  # never zero
    table.apply_endpoint(endpoint_object("e", mode="realtime"))
    assert table.lookup("e").concurrency_cap(NOW) is None


def test_pod_events_join_and_leave_the_rotation() -> None:
    hooks = Hooks()
    table = hooks.table()
    apply_endpoint(table, "ADDED", endpoint_object("e"))
    apply_pod(table, "ADDED", pod("p1", "e", ip=None, phase="Pending"))
    assert table.lookup("e").replicas == {}
    apply_pod(table, "MODIFIED", pod("p1", "e"))
    assert hooks.added == ["p1"]  # probed: not ready until /ping answers
    assert not table.lookup("e").replicas["p1"].ready
    apply_pod(table, "MODIFIED", pod("p1", "e", ready=True))
    assert table.lookup("e").replicas["p1"].ready  # the kubelet's Ready counts too
    assert hooks.added == ["p1"]
    apply_pod(table, "MODIFIED", pod("p1", "e", ready=True, deleting=True))
    assert table.lookup("e").replicas == {} and hooks.removed == ["p1"]
    apply_pod(table, "ADDED", pod("p2", "e", ready=True))
    apply_pod(table, "DELETED", pod("p2", "e", ready=True))
    assert table.lookup("e").replicas == {} and hooks.removed == ["p1", "p2"]


def test_a_deleted_endpoints_entry_goes_with_its_last_replica_and_request() -> None:
    """Its pods outlive the object while they terminate: the entry stayed for good once they
    were gone, one more per endpoint ever deleted."""
    table = Hooks().table()
    apply_endpoint(table, "ADDED", endpoint_object("e"))
    apply_pod(table, "ADDED", pod("p1", "e", ready=True))
    apply_endpoint(table, "DELETED", endpoint_object("e"))
    assert ("ns", "e") in table.endpoints  # its pod still finishes what it holds
    entry = table.endpoints["ns", "e"]
    entry.active = 1  # a request in flight to it
    apply_pod(table, "DELETED", pod("p1", "e", ready=True))
    assert table.endpoints["ns", "e"] is entry
    entry.active = 0
    table.forget_if_gone(entry)  # what the proxy calls as its request ends
    assert ("ns", "e") not in table.endpoints
    apply_endpoint(table, "ADDED", endpoint_object("e"))  # the same name again: a new entry
    assert table.lookup("e") is not entry


def test_a_pod_with_a_new_ip_is_a_new_replica() -> None:
    hooks = Hooks()
    table = hooks.table()
    apply_pod(table, "ADDED", pod("p", "e", ip="127.0.1.1", ready=True))
    old = table.get("ns", "e").replicas["p"]
    apply_pod(table, "MODIFIED", pod("p", "e", ip="127.0.1.2"))
    assert old.removed and hooks.removed == ["p"]
    assert table.get("ns", "e").replicas["p"].host == "127.0.1.2"


def test_a_relist_drops_what_is_gone() -> None:
    hooks = Hooks()
    table = hooks.table()
    table.replace_endpoints("ns", [endpoint_object("a"), endpoint_object("b")])
    replace_pods(table, "ns", [pod("a1", "a", ready=True), pod("b1", "b", ready=True)])
    table.replace_endpoints("ns", [endpoint_object("a")])
    replace_pods(table, "ns", [pod("a1", "a", ready=True)])
    assert table.lookup("a").replicas.keys() == {"a1"}
    with pytest.raises(ValidationError):
        table.lookup("b")
    assert hooks.removed == ["b1"]


def held_request(endpoint: Endpoint) -> asyncio.Future[None]:
    """What a held request waits on: a future among the endpoint's waiters."""
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    endpoint.waiters.append(waiter)
    return waiter


def test_a_replica_becoming_ready_wakes_held_requests() -> None:
    async def scenario() -> bool:
        table = Table()
        table.apply_endpoint(endpoint_object("e"))
        endpoint = table.lookup("e")
        waiter = held_request(endpoint)
        table.set_replica("ns", "e", Replica("p", "127.0.0.1", 1))
        assert not waiter.done()
        table.mark_ready(endpoint, endpoint.replicas["p"])
        return waiter.done() and endpoint.waiters == []

    assert asyncio.run(scenario())


def test_an_endpoint_that_fails_wakes_held_requests_and_says_why_it_takes_none() -> None:
    async def scenario() -> None:
        table = Table()
        table.apply_endpoint(endpoint_object("e"))
        endpoint = table.lookup("e")
        waiter = held_request(endpoint)
        table.apply_endpoint(endpoint_object("e", phase="Creating"))
        assert not waiter.done()  # a replica may still come
        failed = endpoint_object("e", phase="Failed")
        failed["status"].update(reason="ModelLoadFailed", message="model cannot be loaded: x")
        table.apply_endpoint(failed)
        assert waiter.done() and endpoint.waiters == []
        with pytest.raises(ValidationError) as refused:
            endpoint.check_servable()
        assert "is Failed (ModelLoadFailed), not InService" in str(refused.value)
        assert "cannot be loaded" not in str(refused.value)  # the message may quote a log
        waiter = held_request(endpoint)
        table.apply_endpoint(endpoint_object("e", mode="async", outputPath="s3://b/out"))
        assert waiter.done()  # another mode: no replica is coming either
        with pytest.raises(ValidationError, match="is an async endpoint: use"):
            endpoint.check_servable()

    asyncio.run(scenario())


def test_an_unready_replica_is_probed_again_and_a_removed_one_never_returns() -> None:
    hooks = Hooks()
    table = hooks.table()
    table.set_replica("ns", "e", Replica("p", "127.0.0.1", 1, ready=True))
    endpoint = table.get("ns", "e")
    replica = endpoint.replicas["p"]
    assert hooks.added == ["p"]  # told on arrival, ready or not (the proxy's pool)
    table.mark_unready(endpoint, replica)
    assert not replica.ready and hooks.added == ["p", "p"]  # and again: probed
    table.drop_replica("ns", "e", "p")
    table.mark_ready(endpoint, replica)
    assert not replica.ready


def test_phase_is_parsed_from_status() -> None:
    table = Table()
    table.apply_endpoint(endpoint_object("e", phase="Updating"))
    assert table.lookup("e").phase is Phase.UPDATING


def test_an_all_namespaces_relist_keeps_each_object_in_its_own_namespace() -> None:
    hooks = Hooks()
    table = hooks.table()
    table.replace_endpoints(None, [endpoint_object("a", namespace="x"),
                                   endpoint_object("b", namespace="y")])  # fmt: skip
    assert (table.lookup("a").namespace, table.lookup("b").namespace) == ("x", "y")
    table.replace_endpoints("x", [])  # a relist of x alone leaves y's endpoints
    assert table.lookup("b").namespace == "y"
    with pytest.raises(ValidationError):
        table.lookup("a")


class Stop(BaseException):
    """Ends the fake watch (the real one ends only when cancelled)."""


class FakeApi:
    """Lists and watches as the API server does: a 410 Gone after a bookmark forces a relist."""

    def __init__(self) -> None:
        self.lists: list[list[dict[str, Any]]] = [
            [endpoint_object("old")],
            [endpoint_object("new")],
        ]
        self.watched_from: list[str] = []

    async def get(self, path: str, params: Any) -> dict[str, Any]:
        version = "1" if not self.watched_from else "20"
        return {"metadata": {"resourceVersion": version}, "items": self.lists.pop(0)}

    async def watch(self, path: str, params: Any, version: str) -> Any:
        self.watched_from.append(version)
        if len(self.watched_from) == 1:  # ends normally, as after timeoutSeconds
            yield {"type": "ADDED", "object": endpoint_object("added")}
            yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "7"}}}
        elif len(self.watched_from) == 2:
            raise Gone()
        else:
            raise Stop()


def test_a_watch_applies_events_and_relists_after_410_gone() -> None:
    table = Table()
    api = FakeApi()
    synced: list[bool] = []
    watched = Watched(api, "/x", {}, partial(table.replace_endpoints, None),  # type: ignore[arg-type]
                      partial(apply_endpoint, table), lambda: synced.append(True))  # fmt: skip
    with pytest.raises(Stop):
        asyncio.run(watched.run())
    assert api.watched_from == ["1", "7", "20"]  # resumed from the bookmark, relisted on 410
    assert synced == [True, True]
    assert {name for _, name in table.known} == {"new"}  # the relist dropped old and added


def test_a_name_not_found_is_quoted_cut_short() -> None:
    """A caller's 5,000-character name is not sent back whole, on either route."""
    table = Table()
    with pytest.raises(ValidationError) as refused:
        table.lookup("x" * 5_000)
    assert refused.value.status_code == 404 and len(str(refused.value)) < 200
    assert len(str(table.async_missing("y" * 5_000))) < 200


def test_the_table_tells_its_listeners_a_name_once_no_namespace_has_it() -> None:
    """One mechanism for every metric family keyed by endpoint (the proxy's, the async accept
    route's): told once the last entry of a name is gone, never while another namespace's
    endpoint of that name is served, never the placeholder ``unknown``."""
    from prometheus_client import CollectorRegistry, generate_latest

    from infermodes.metrics import AsyncApiMetrics

    table = Table()
    registry = CollectorRegistry()
    metrics = AsyncApiMetrics(registry)
    told: list[str] = []
    table.forgotten += [told.append, metrics.forget]
    for namespace in ("a", "b"):
        apply_endpoint(table, "ADDED", endpoint_object("e", namespace=namespace))
    apply_endpoint(table, "ADDED", endpoint_object("unknown"))
    metrics.count("e", 202)
    metrics.count("e", 415)
    metrics.count("unknown", 404)
    apply_endpoint(table, "DELETED", endpoint_object("e", namespace="a"))
    assert told == []  # namespace b still serves it
    apply_endpoint(table, "DELETED", endpoint_object("e", namespace="b"))
    apply_endpoint(table, "DELETED", endpoint_object("unknown"))
    assert told == ["e"]
    text = generate_latest(registry).decode()
    assert 'endpoint="e"' not in text
    assert 'infermodes_async_requests_total{endpoint="unknown",status_code="404"} 1.0' in text


def test_an_update_the_operator_cannot_parse_keeps_the_spec_read_before_served() -> None:
    """The operator keeps such an update's endpoint Updating on the spec its replicas run
    (InvalidSpec): the gateway refused every invocation ('a spec the gateway cannot read'),
    though those replicas served. It keeps the spec it read before; one it never read takes
    none, and the operator's Failed refuses them too."""
    table = Table()
    table.apply_endpoint(endpoint_object("e", maxConcurrency=7))
    unparsable = endpoint_object("e", phase="Updating", maxConcurrency=7, provisionedConcurrency=9)
    table.apply_endpoint(unparsable)
    endpoint = table.lookup("e")
    endpoint.check_servable()
    assert endpoint.serverless is not None and endpoint.serverless.max_concurrency == 7
    fresh = Table()
    fresh.apply_endpoint({**unparsable, "metadata": {"name": "e", "namespace": "ns"}})
    with pytest.raises(ValidationError, match="a spec the gateway cannot read"):
        fresh.lookup("e").check_servable()


@pytest.mark.parametrize("mode", ["serverless", "async"])
def test_a_gateway_started_during_an_update_the_operator_cannot_parse_serves_the_applied_spec(
    mode: str,
) -> None:
    """A gateway (re)started while an endpoint is Updating on an update the operator cannot
    parse read none of its earlier specs, and refused it ('a spec the gateway cannot read')
    though its replicas served. It now serves the spec the operator recorded as applied in
    the status (``AppliedSpec``), as a gateway that read it before does."""
    block: dict[str, Any] = {"maxConcurrency": 7} if mode == "serverless" else {
        "outputPath": "s3://b/out/"}  # fmt: skip
    applied = endpoint_object("e", mode, **block)["spec"]
    unparsable = endpoint_object("e", mode, phase="Updating", **block)
    unparsable["spec"]["image"] = "registry.example/x:1\u00a0"
    unparsable["status"].update(AppliedSpec.of(3, applied).status_fields())
    fresh = Table()
    fresh.apply_endpoint(unparsable)
    endpoint = fresh.lookup("e")
    assert endpoint.mode is not None and endpoint.mode.value == mode
    if mode == "serverless":
        endpoint.check_servable()
        assert endpoint.serverless is not None and endpoint.serverless.max_concurrency == 7
    else:
        assert fresh.async_layouts["e"].output_path.startswith("s3://b/out")
