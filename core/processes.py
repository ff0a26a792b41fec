"""Whether a process is still running, by its id (server processes, topology pieces), and whether it is
still the process that was started: once a process exits its id is free, and after a crash or a reboot an
unrelated process may hold the id a state file names."""

from __future__ import annotations

import os
import subprocess


def alive(pid: int | None) -> bool:
    """True while process ``pid`` runs; a zombie (exited, not yet reaped by its parent) counts as gone,
    a process of another user (no permission to signal it) as running."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def start_time(pid: int | None) -> str | None:
    """When process ``pid`` started, as an opaque text that stays the same for the process's life: on Linux its
    start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), where there is no ``/proc`` the start
    time ``ps`` shows. None when no such process runs or the system tells no start time."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # the command name (field 2) is in parentheses and may hold ") ": the fields after its last one
            return stat.read().rsplit(") ", 1)[1].split()[19]
    except (OSError, IndexError):
        if os.path.isdir("/proc/self"):  # /proc is there: the process is gone
            return None
    try:
        shown = subprocess.run(["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, timeout=10,
                               check=False, env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return None
    return shown.stdout.strip() or None


def same_process(pid: int | None, started: str | None) -> bool | None:
    """Whether process ``pid`` still runs and is the one that started at ``started`` (what :func:`start_time`
    gave when it began): True; False when it is gone, or the id now belongs to a process that started at
    another time; None when that cannot be told (no start time was recorded, or the system tells none), so
    a caller must not signal it."""
    if not alive(pid):
        return False
    if started is None:
        return None
    now = start_time(pid)
    if now is None:
        return False if not alive(pid) else None
    return now == started
