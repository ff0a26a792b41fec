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
