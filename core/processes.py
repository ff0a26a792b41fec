"""Whether a process is still running, by its id (server processes, topology pieces)."""

from __future__ import annotations

import os


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
