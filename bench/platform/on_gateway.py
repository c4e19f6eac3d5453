"""``cold_warm.py`` against the gateway on the test control plane: the project's own control
plane (tests/cluster) and the chart with access keys, the platform API keeping its objects in the
release's namespace, the model on an S3 server (SeaweedFS) the endpoint pods read through the
platform's storage Secret. Requests are signed (SigV4) with the key from the chart's Secret.

The test node's capacity is the machine's 2 cores and a 2048 MB serverless replica requests one:
the operator's and the gateway's CPU requests are set to 0 here, so a fresh round's replica is
not left Pending behind the previous round's, still terminating.

    flock /tmp/infermodes-bench.lock .venv/bin/python bench/platform/on_gateway.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.cluster.controlplane import Binaries  # noqa: E402
from tests.cluster.harness import Harness  # noqa: E402
from tests.cluster.plugin import one_harness_at_a_time  # noqa: E402
from tests.e2e.operator_support import (  # noqa: E402
    OPERATOR_NAMESPACE,
    Tools,
    gateway_url,
    install_operator,
)
from tests.support.abalone import train_abalone  # noqa: E402
from tests.support.processes import wait_until  # noqa: E402
from tests.support.seaweedfs import seaweedfs_server  # noqa: E402

KEY_ID, SECRET = "AKIABENCHPLATFORM", "bench-platform-secret"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warms", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-platform-gateway-"))
    train_abalone(work / "model")
    with one_harness_at_a_time(), seaweedfs_server() as s3:
        storage: Any = s3.client()
        storage.create_bucket(Bucket="models")
        storage.upload_file(str(work / "model" / "model.tar.gz"), "models", "model.tar.gz")
        harness = Harness(work / "k8s", Binaries.from_cache())
        cluster = harness.start()
        try:
            tools = Tools(cluster)
            namespace = {"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": OPERATOR_NAMESPACE}}  # fmt: skip
            cluster.api.post("/api/v1/namespaces", namespace)
            for name, data in (("s3", s3.env), ("keys", {"accessKeys": f"{KEY_ID}:{SECRET}"})):
                cluster.api.post(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets", {
                    "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                    "stringData": data})  # fmt: skip
            install_operator(tools, resync_seconds=2, **{
                "gateway.auth.secretRef.name": "keys",
                "gateway.platform.storageSecretName": "s3",
                "gateway.resources.requests.cpu": "0",
                "operator.resources.requests.cpu": "0",
            })  # fmt: skip
            wait_until(lambda: gateway_url(tools) is not None, 120, "the gateway")
            url = gateway_url(tools)
            assert url is not None
            subprocess.run([sys.executable, str(REPO / "bench/platform/cold_warm.py"),
                            "--label", "gateway", "--endpoint-url", url,
                            "--model-url", "s3://models/model.tar.gz", "--access-key", KEY_ID,
                            "--secret-key", SECRET, "--rounds", str(args.rounds),
                            "--warms", str(args.warms)], check=True)  # fmt: skip
        finally:
            harness.stop()


if __name__ == "__main__":
    main()
