"""core.processes.alive: running, exited and reaped, exited and not yet reaped (a zombie)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from core.processes import alive


def test_a_running_process_is_alive_and_an_exited_one_is_not() -> None:
    assert alive(os.getpid())
    assert not alive(None) and not alive(0)
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    assert alive(child.pid)
    child.stdin.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while alive(child.pid) and time.monotonic() < deadline:  # exited, not reaped yet: a zombie
        time.sleep(0.02)
    assert not alive(child.pid), "a zombie counted as running"
    child.wait(timeout=10)
    assert not alive(child.pid)
