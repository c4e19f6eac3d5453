"""The one module that talks to the Kubernetes API: get, list, server-side apply, delete.

Server-side apply with one field manager makes reconciling idempotent: applying the same
desired object twice changes nothing (not even the resourceVersion). API failures surface as
``KubeError`` for the handler to turn into a retry with a delay; nothing is swallowed.
"""

from __future__ import annotations

from typing import Any

FIELD_MANAGER = "infermodes-operator"


class KubeError(Exception):
    """The API server failed or refused; worth retrying later."""


class ApplyRefused(KubeError):
    """The API server refused an object as it is (invalid, or forbidden by a quota or an
    admission policy): retrying the same object will not do until something changes."""


REFUSED_STATUSES = frozenset({400, 403, 422})


def write_failed(status: int | None, message: str) -> KubeError:
    """A write the API server failed: ``ApplyRefused`` where writing the same again cannot
    mend it (invalid, forbidden: the endpoint's status says so), a ``KubeError`` retried later
    otherwise (a conflict, throttling, the server's own failure, an object gone meanwhile)."""
    return (ApplyRefused if status in REFUSED_STATUSES else KubeError)(message)


class KubeDoor:
    def __init__(self, api_client: Any = None) -> None:
        from kubernetes import client, config
        from kubernetes.dynamic import DynamicClient

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self._dynamic = DynamicClient(api_client)

    def _resource(self, api_version: str, kind: str) -> Any:
        return self._dynamic.resources.get(api_version=api_version, kind=kind)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or update ``obj`` to match; fields we do not set are left to others."""
        from kubernetes.client.exceptions import ApiException

        meta = obj["metadata"]
        try:
            result = self._dynamic.server_side_apply(
                self._resource(obj["apiVersion"], obj["kind"]),
                body=obj,
                name=meta["name"],
                namespace=meta.get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )
        except ApiException as exc:
            said = f"applying {obj['kind']} {meta['name']}: {_reason(exc)}"
            raise write_failed(exc.status, said) from exc
        return result.to_dict()

    def patch_spec(
        self, api_version: str, kind: str, namespace: str, name: str, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """Set only these fields of a workload's spec (a merge patch): what can still change
        where an apply of its whole object is refused (a Deployment's replicas while its new
        spec is, a Job's ``suspend``: the rest of a Job is immutable once created)."""
        from kubernetes.client.exceptions import ApiException

        try:
            result = self._dynamic.patch(
                self._resource(api_version, kind),
                body={"spec": fields},
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
                field_manager=FIELD_MANAGER,
            )
        except ApiException as exc:
            said = f"patching {kind} {namespace}/{name}: {_reason(exc)}"
            raise write_failed(exc.status, said) from exc
        return dict(result.to_dict())

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        """Merge-patch an object's status subresource (for reconciles kopf did not start)."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._dynamic.patch(
                self._resource(api_version, kind).status,
                body={"status": status},
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            raise KubeError(f"patching the status of {kind} {namespace}/{name}: "
                            f"{_reason(exc)}") from exc  # fmt: skip

    def annotate(
        self, api_version: str, kind: str, namespace: str, name: str, annotations: dict[str, str]
    ) -> None:
        """Merge these annotations into an object; one that is gone already is left alone."""
        from kubernetes.client.exceptions import ApiException

        try:
            self._dynamic.patch(
                self._resource(api_version, kind),
                body={"metadata": {"annotations": annotations}},
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status != 404:
                raise KubeError(f"annotating {kind} {namespace}/{name}: {_reason(exc)}") from exc

    def delete(
        self, api_version: str, kind: str, namespace: str, name: str, uid: str | None = None
    ) -> None:
        """Delete an object, only the one of ``uid`` when given (one made again since is left
        alone); one that is gone already is left alone too."""
        from kubernetes.client.exceptions import ApiException

        body = {"preconditions": {"uid": uid}} if uid else None
        try:
            self._resource(api_version, kind).delete(name=name, namespace=namespace, body=body)
        except ApiException as exc:
            if exc.status not in (404, 409):  # 409: the uid's object is gone, another is there
                raise KubeError(f"deleting {kind} {namespace}/{name}: {_reason(exc)}") from exc

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            found = self._resource(api_version, kind).get(name=name, namespace=namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"reading {kind} {namespace}/{name}: {_reason(exc)}") from exc
        return found.to_dict()

    def list_everywhere(self, api_version: str, kind: str) -> list[dict[str, Any]]:
        """Every object of a kind, in every namespace."""
        from kubernetes.client.exceptions import ApiException

        try:
            found = self._resource(api_version, kind).get()
        except ApiException as exc:
            raise KubeError(f"listing {kind} in every namespace: {_reason(exc)}") from exc
        return [item.to_dict() for item in found.items]

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        selector: dict[str, str],
        fields: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The objects of a kind in a namespace whose labels are ``selector`` (and whose
        fields are ``fields``: an Event's ``involvedObject.name``, say)."""
        from kubernetes.client.exceptions import ApiException

        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        field_selector = ",".join(f"{k}={v}" for k, v in sorted((fields or {}).items()))
        try:
            found = self._resource(api_version, kind).get(
                namespace=namespace, label_selector=label_selector, field_selector=field_selector
            )
        except ApiException as exc:
            raise KubeError(f"listing {kind} in {namespace}: {_reason(exc)}") from exc
        return [item.to_dict() for item in found.items]


def _reason(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body)["message"])
    except (TypeError, ValueError, KeyError):
        return f"{exc.status} {exc.reason}"
