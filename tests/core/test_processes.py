"""core.processes: running, exited and reaped, exited and not yet reaped (a zombie); a process told from
another that took its id by its start time."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from core.processes import alive, same_process, start_time


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


def test_a_process_is_told_from_another_that_took_its_id() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        started = start_time(child.pid)
        assert started is not None and start_time(child.pid) == started  # the same for the process's life
        assert same_process(child.pid, started) is True
        assert same_process(child.pid, f"{started}0") is False  # the id, held by a process started at another time
        assert same_process(child.pid, None) is None  # no start time recorded: cannot be told
    finally:
        child.stdin.close()  # type: ignore[union-attr]
        child.wait(timeout=10)
    assert same_process(child.pid, started) is False and start_time(child.pid) is None
