"""Where batch jobs run: this process, a local Dask cluster, or a running Dask scheduler.

``settings.compute.scheduler`` chooses: ``None`` runs a job in this process (no Dask
at all, the default); ``"local"`` starts a ``dask.distributed.LocalCluster`` of worker
processes on this machine for the job's length (dashboard off, 127.0.0.1 only);
``"tcp://host:8786"`` connects to a scheduler that is already running (a cluster the
operator runs; the job's code must be importable on its workers).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from core.errors import InvalidInput

if TYPE_CHECKING:
    from distributed import Client

    from core.service_settings import ComputeSettings

logger = logging.getLogger(__name__)

LOOPBACK_ENV = "SHOPRANK_LOOPBACK_NETNS"


def worker_count(compute: ComputeSettings) -> int:
    """Worker processes of a local cluster."""
    return compute.workers or os.cpu_count() or 1


def partition_count(compute: ComputeSettings, workers: int) -> int:
    """How many parts a job splits its input into."""
    return compute.partitions or 2 * max(1, workers)


@contextmanager
def dask_client(compute: ComputeSettings) -> Iterator[Client | None]:
    """A Dask client for the job (None: run in this process); a local cluster is closed on exit."""
    scheduler = compute.scheduler
    if scheduler is None:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler == "local":
        workers = worker_count(compute)
        logger.info("starting a local Dask cluster of %d worker processes", workers)
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                          dashboard_address=None) as cluster, Client(cluster) as client:
            yield client
        return
    scheduler_address(scheduler)
    logger.info("connecting to the Dask scheduler at %s", scheduler)
    try:
        client = Client(scheduler, timeout="30s")
    except OSError as error:  # unreachable, refused, timed out
        raise InvalidInput(f"compute.scheduler={scheduler!r}: no Dask scheduler answers there ({error}); start one "
                           "(`dask scheduler`), fix SHOPRANK_COMPUTE__SCHEDULER, or unset it to run here") from None
    with client:
        yield client


def scheduler_address(scheduler: str) -> tuple[str, int]:
    """The host and port of a scheduler address ``tcp://HOST:PORT`` (or ``tls://``; an IPv6 host in brackets,
    ``tcp://[::1]:8786``); an :class:`InvalidInput` naming it and the form it must take otherwise."""
    usage = f"compute.scheduler={scheduler!r}: use 'local' or a scheduler address 'tcp://HOST:PORT'"
    if not scheduler.startswith(("tcp://", "tls://")):
        raise InvalidInput(usage)
    host, colon, port = scheduler.split("://", 1)[1].rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"{usage}, with a port number from 1 to 65535")
    return host, int(port)


def check_scheduler(compute: ComputeSettings) -> None:
    """Before a long job builds its data: the scheduler it will use answers (a TCP connection to it), else an
    :class:`InvalidInput` naming it. Nothing to check for 'local' or no scheduler."""
    scheduler = compute.scheduler
    if scheduler is None or scheduler == "local":
        return
    host, port = scheduler_address(scheduler)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as error:
        raise InvalidInput(f"compute.scheduler={scheduler!r}: no Dask scheduler answers there ({error}); start one "
                           "(`dask scheduler`), fix SHOPRANK_COMPUTE__SCHEDULER, or unset it to run here") from None


def loopback_command(argv: list[str]) -> list[str] | None:
    """``argv`` wrapped to run in a new network namespace whose only interface is loopback, or
    None (already inside one, ``unshare``/``ip`` missing, or namespaces not allowed here).

    Dask binds to 127.0.0.1 as told, but LightGBM's distributed training (``lightgbm.dask``)
    listens on every interface and has no setting for the address; a local benchmark or test
    runs inside such a namespace so that nothing it starts is reachable from outside the
    machine. Set ``SHOPRANK_LOOPBACK_NETNS=1`` in the child's environment.
    """
    if os.environ.get(LOOPBACK_ENV) or not (shutil.which("unshare") and shutil.which("ip")):
        return None
    wrapper = ["unshare", "--net", "--map-root-user", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    if subprocess.run([*wrapper, "true"], capture_output=True, check=False).returncode != 0:
        return None  # no network namespaces here (e.g. a container without the privilege)
    return [*wrapper, *argv]
