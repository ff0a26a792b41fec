"""Where batch jobs run: the Dask scheduler a setting names answers, or the job stops before it starts."""

from __future__ import annotations

import socket

import pytest

from core.compute import check_scheduler
from core.errors import InvalidInput
from core.service_settings import ComputeSettings


def test_a_scheduler_is_checked_at_its_address_ipv6_included() -> None:
    for family, host, address in ((socket.AF_INET, "127.0.0.1", "127.0.0.1"), (socket.AF_INET6, "::1", "[::1]")):
        try:
            listener = socket.socket(family)
            listener.bind((host, 0))
        except OSError:
            continue  # no IPv6 on this machine
        listener.listen()
        port = listener.getsockname()[1]
        check_scheduler(ComputeSettings(scheduler=f"tcp://{address}:{port}"))  # before: [::1] named no host
        listener.close()
        with pytest.raises(InvalidInput, match="no Dask scheduler answers there"):
            check_scheduler(ComputeSettings(scheduler=f"tcp://{address}:{port}"))


@pytest.mark.parametrize("scheduler", ["tcp://127.0.0.1", "tcp://10.0.0.5:8786x", "tcp://:8786", "tcp://h:0",
                                       "tcp://h:70000", "http://h:8786"])
def test_a_scheduler_address_without_host_and_port_is_named_before_any_job_starts(scheduler: str) -> None:
    """Dask raises ValueError on such an address: a job that connected without the check (retrain, the
    index build) stopped with a traceback."""
    from core.compute import dask_client

    for start in (lambda: check_scheduler(ComputeSettings(scheduler=scheduler)),
                  lambda: dask_client(ComputeSettings(scheduler=scheduler)).__enter__()):
        with pytest.raises(InvalidInput, match=rf"compute.scheduler='{scheduler}': use 'local' or a scheduler"):
            start()
