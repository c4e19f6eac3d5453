"""A private RabbitMQ broker for one test run: Debian's ``rabbitmq-server`` on loopback ports.

Everything the broker writes (data, logs, Erlang cookie, config) lives in one temporary folder,
the node name carries our PID, and the broker finds its peers through its own ``epmd`` on a
private port, which we start and stop by PID. A broker someone else runs on this machine is
never touched. Start takes 5 to 14 s and stop about 6 s on 2 cores; data survives a stop, so
``restart`` is a real broker restart with durable queues intact.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx

from infermodes.queueing.rabbitmq import CONSUMER_TIMEOUT_MS
from tests.support.processes import lasting_port, stop_process, wait_until

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
START_TIMEOUT = 90.0
STOP_GRACE = 60.0


def ensure_installed() -> None:
    """Install Debian's rabbitmq-server when absent. We start our own node; the package's
    system service stays down where policy-rc.d forbids starting services (as on our
    machines), and would not collide with ours anyway (other ports, node name and epmd)."""
    if SERVER.exists():
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, capture_output=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "rabbitmq-server"],
        check=True,
        capture_output=True,
        env=env,
    )


class Broker:
    """One broker node; ``stop`` and ``start`` keep its data folder."""

    def __init__(
        self,
        root: Path,
        statistics_interval_ms: int = 500,
        config: tuple[str, ...] = (),
        erl_args: tuple[str, ...] = (),
    ) -> None:
        self.root = root
        self.erl_args = erl_args
        # kept across stop and start: out of the range outgoing connections are given ports from
        self.amqp_port = lasting_port()
        self.management_port = lasting_port()
        self.dist_port = lasting_port()
        self.epmd_port = lasting_port()
        self.node = f"infermodes-test-{os.getpid()}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None
        (root / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.amqp_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            f"management.tcp.port = {self.management_port}\n"
            f"collect_statistics_interval = {statistics_interval_ms}\n"
            f"consumer_timeout = {CONSUMER_TIMEOUT_MS}\n"
            "log.console = false\n" + "".join(f"{line}\n" for line in config)
        )
        (root / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (root / "rabbitmq-env.conf").write_text("")

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def management_url(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    @property
    def log(self) -> str:
        return (self.root / "server.out").read_text(errors="replace")

    def _env(self) -> dict[str, str]:
        root = str(self.root)
        return {
            **os.environ,
            "HOME": root,  # the Erlang cookie is private to this node
            "RABBITMQ_CONF_ENV_FILE": f"{root}/rabbitmq-env.conf",
            "RABBITMQ_CONFIG_FILE": f"{root}/rabbitmq.conf",
            "RABBITMQ_ENABLED_PLUGINS_FILE": f"{root}/enabled_plugins",
            "RABBITMQ_MNESIA_BASE": f"{root}/mnesia",
            "RABBITMQ_LOG_BASE": f"{root}/log",
            "RABBITMQ_PID_FILE": f"{root}/rabbitmq.pid",
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": " ".join(
                ("-kernel inet_dist_use_interface {127,0,0,1}", *self.erl_args)
            ),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def ready(self) -> bool:
        try:
            response = httpx.get(
                f"http://127.0.0.1:{self.management_port}/api/overview",
                auth=("guest", "guest"),
                timeout=2.0,
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def start(self) -> None:
        if self.epmd is None:
            self.epmd = subprocess.Popen(
                ["epmd", "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        with (self.root / "server.out").open("ab") as out:
            self.proc = subprocess.Popen(
                [str(SERVER)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env(),
                start_new_session=True,
            )
        proc = self.proc
        wait_until(lambda: proc.poll() is not None or self.ready(), START_TIMEOUT, "RabbitMQ")
        if proc.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited with {proc.returncode}:\n{self.log}")

    def stop(self) -> None:
        """A clean shutdown: the wrapper script turns SIGTERM into a graceful broker stop."""
        if self.proc is not None:
            stop_process(self.proc, grace=STOP_GRACE)
            self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self.epmd is not None:
            stop_process(self.epmd)
            self.epmd = None


@contextlib.contextmanager
def rabbitmq_broker(
    statistics_interval_ms: int = 500,
    config: tuple[str, ...] = (),
    erl_args: tuple[str, ...] = (),
) -> Iterator[Broker]:
    """``statistics_interval_ms``: how often the broker samples the figures its management
    API reports (RabbitMQ's default is 5000; ours is short, for scalers that follow them);
    ``config``: more ``rabbitmq.conf`` lines; ``erl_args``: more of the node's Erlang arguments
    (``-rabbit KEY VALUE`` sets what ``rabbitmq.conf`` has no key for)."""
    ensure_installed()
    root = Path(tempfile.mkdtemp(prefix="infermodes-rabbitmq-"))
    broker = Broker(root, statistics_interval_ms, config, erl_args)
    try:
        broker.start()
        yield broker
    finally:
        broker.close()
        shutil.rmtree(root, ignore_errors=True)
