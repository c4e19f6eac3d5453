"""Names, labels and ownership shared by every mode's desired objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infermodes.endpoints import spec as s
from infermodes.endpoints.plan import LIVENESS_PORT, SERVER_PORT, ProcessPlan, env_name
from infermodes.metrics import LIVENESS_PATH
from infermodes.settings import EnvSettings, OperatorSettings, ServeSettings

MANAGED_BY = "infermodes"
ENDPOINT_LABEL = "infermodes.dev/endpoint"
IMAGE_USER = 10001  # the image's own non-root user (Dockerfile)
# the one writable place (the pod's own emptyDir): temp files, multiprocess metrics
SCRATCH = {"name": "tmp", "mountPath": "/tmp"}  # noqa: S108 - a mount point, not a temp file
# on a Deployment: the generation of the endpoint's spec it was applied from
SPEC_GENERATION = "infermodes.dev/spec-generation"


@dataclass(frozen=True)
class EndpointRef:
    """What child objects need to know about their InferenceEndpoint."""

    name: str
    namespace: str
    uid: str
    generation: int = 1

    @classmethod
    def from_body(cls, body: Any) -> EndpointRef:
        meta = body["metadata"]
        return cls(meta["name"], meta["namespace"], meta["uid"], int(meta.get("generation", 1)))

    @property
    def child_name(self) -> str:
        return f"ie-{self.name}"

    def labels(self, component: str) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "infermodes",
            "app.kubernetes.io/instance": self.name,
            "app.kubernetes.io/component": component,
            "app.kubernetes.io/managed-by": MANAGED_BY,
            ENDPOINT_LABEL: self.name,
        }

    def selector(self, component: str) -> dict[str, str]:
        return {ENDPOINT_LABEL: self.name, "app.kubernetes.io/component": component}

    def metadata(self, component: str, name: str | None = None) -> dict[str, Any]:
        """Metadata of a child: owned by the endpoint, so deleting it deletes the child."""
        return {
            "name": name or self.child_name,
            "namespace": self.namespace,
            "labels": self.labels(component),
            "ownerReferences": [
                {
                    "apiVersion": f"{s.GROUP}/{s.VERSION}",
                    "kind": s.KIND,
                    "name": self.name,
                    "uid": self.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }


@dataclass(frozen=True)
class Ingress:
    """Who may connect to an endpoint's pods (``OperatorSettings.network_policy``): the
    gateway's pods to model servers (``serving``), and whoever reads the pods' metrics, the
    operator among them, to every endpoint pod (``metrics``)."""

    serving: tuple[dict[str, Any], ...]
    metrics: tuple[dict[str, Any], ...]

    @classmethod
    def from_settings(cls, settings: OperatorSettings) -> Ingress | None:
        if not settings.network_policy:
            return None
        return cls(tuple(settings.serving_from), tuple(settings.metrics_from))


POLICY = ("networking.k8s.io/v1", "NetworkPolicy")  # (apiVersion, kind), named ``child_name``


def network_policy(
    ref: EndpointRef, component: str, port: int, peers: tuple[dict[str, Any], ...]
) -> dict[str, Any]:
    """A NetworkPolicy letting only ``peers`` reach the component's pods, on ``port`` alone.
    No peers is no rule: a rule without ``from`` would let every source in."""
    rules = [{"from": list(peers), "ports": [{"protocol": "TCP", "port": port}]}] if peers else []
    api_version, kind = POLICY
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": ref.metadata(component),
        "spec": {
            "podSelector": {"matchLabels": ref.selector(component)},
            "policyTypes": ["Ingress"],
            "ingress": rules,
        },
    }


def guarded(
    objects: list[dict[str, Any]],
    ref: EndpointRef,
    component: str,
    port: int,
    peers: tuple[dict[str, Any], ...] | None,
) -> list[dict[str, Any]]:
    """``objects`` with the NetworkPolicy of their pods first (applied before the pods exist),
    when there is one (``peers`` None: no policy)."""
    if peers is None:
        return objects
    return [network_policy(ref, component, port, peers), *objects]


def liveness_probe(port: int | str) -> dict[str, Any]:
    """The kubelet's liveness probe of ``/healthz`` on ``port`` (a model server's liveness
    port, a worker's metrics port): every 10 s, 5 s to answer, restarted after 3 failures."""
    return {
        "httpGet": {"path": LIVENESS_PATH, "port": port},
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }


def resources(spec_resources: s.Resources) -> dict[str, Any]:
    """Requests equal limits: Guaranteed QoS, predictable latency."""
    amounts = {"cpu": spec_resources.cpu, "memory": spec_resources.memory}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def env_list(
    settings: type[EnvSettings], bind_setting: str, plan: ProcessPlan
) -> list[dict[str, Any]]:
    """A container's env: the plan's variables, and the setting naming the address to bind
    set to the pod's IP (through the downward API), which is what probes and scrapes reach."""
    pod_ip = {"fieldRef": {"fieldPath": "status.podIP"}}
    return [
        {"name": env_name(settings, bind_setting), "valueFrom": pod_ip},
        *({"name": name, "value": value} for name, value in plan.env.items()),
    ]


def server_container(
    image: str,
    plan: ProcessPlan,
    spec_resources: s.Resources,
    storage_secret: s.SecretRef | None,
) -> dict[str, Any]:
    """The model server container every synchronous mode runs, from its process plan. It binds
    to its pod IP (through the downward API), which is what the probes and the gateway reach.
    Readiness is ``/ping``; liveness is the liveness port's ``/healthz``, answered off the
    workers' event loops, so a long prediction never gets a busy server restarted, and a
    stuck loop does (``server.liveness``)."""
    env = env_list(ServeSettings, "host", plan)
    # pinned (an env entry wins over the storage Secret's envFrom): the probe reaches this port
    env.append({"name": env_name(ServeSettings, "liveness_port"), "value": str(LIVENESS_PORT)})
    container: dict[str, Any] = {
        "name": "model-server",
        "image": image,
        "command": list(plan.command),
        "env": env,
        "ports": [
            {"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"},
            {"name": "liveness", "containerPort": LIVENESS_PORT, "protocol": "TCP"},
        ],
        "readinessProbe": {
            "httpGet": {"path": "/ping", "port": SERVER_PORT},
            "periodSeconds": 1,  # the probe's period is most of a cold start's wait otherwise
            "failureThreshold": 3,
        },
        # restarted after 30 s stuck (10 s of silence, then 3 failed probes), or once one
        # prediction has run past liveness_prediction_seconds (a predict call that never ends)
        "livenessProbe": liveness_probe(LIVENESS_PORT),
        "resources": resources(spec_resources),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if storage_secret is not None:
        container["envFrom"] = [{"secretRef": {"name": storage_secret.name}}]
    return container


def restricted_pod_spec(
    containers: list[dict[str, Any]], termination_grace_seconds: int
) -> dict[str, Any]:
    """A pod spec that passes the ``restricted`` Pod Security Standard: non-root, read-only
    root filesystem with an ``emptyDir`` at /tmp, no privilege escalation, no capabilities,
    the runtime's default seccomp profile, and no service account token (endpoint pods never
    call the Kubernetes API)."""
    hardened = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    return {
        "containers": [
            {**c, "securityContext": hardened, "volumeMounts": [SCRATCH]} for c in containers
        ],
        "volumes": [{"name": SCRATCH["name"], "emptyDir": {"sizeLimit": "1Gi"}}],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": IMAGE_USER,
            "runAsGroup": IMAGE_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": termination_grace_seconds,
    }


def deployment(
    ref: EndpointRef,
    component: str,
    replicas: int,
    container: dict[str, Any],
    termination_grace_seconds: int,
) -> dict[str, Any]:
    """A Deployment of restricted pods running ``container``, noting the spec's generation.
    Rollouts never remove a ready replica before its successor is ready."""
    metadata = {**ref.metadata(component), "annotations": {SPEC_GENERATION: str(ref.generation)}}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": ref.selector(component)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {"labels": ref.labels(component)},
                "spec": restricted_pod_spec([container], termination_grace_seconds),
            },
        },
    }


def model_server_objects(
    ref: EndpointRef,
    component: str,
    replicas: int,
    container: dict[str, Any],
    termination_grace_seconds: int,
    ingress: Ingress | None,
) -> list[dict[str, Any]]:
    """The Deployment of model servers and the Service in front of them, shared by the
    synchronous modes; with ``ingress``, a NetworkPolicy letting in only the gateway and the
    metrics' readers (the operator reads the servers' load on the same port)."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": ref.metadata(component),
        "spec": {
            "type": "ClusterIP",
            "selector": ref.selector(component),
            "ports": [{"name": "http", "port": 80, "targetPort": SERVER_PORT, "protocol": "TCP"}],
        },
    }
    workload = deployment(ref, component, replicas, container, termination_grace_seconds)
    peers = None if ingress is None else ingress.serving + ingress.metrics
    return guarded([workload, service], ref, component, SERVER_PORT, peers)
