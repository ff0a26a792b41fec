"""What a load benchmark reads from the server it drives: CPU and memory of the server and its
worker processes (psutil), and the counters of its ``/metrics`` (searches, sheds, cache lookups,
degraded stages), so that each level's figures are the difference of two readings."""

from __future__ import annotations

import re
from typing import NamedTuple

import httpx


def server_processes(pid: int) -> list:  # type: ignore[type-arg]
    """The server process and its children (workers), as psutil processes."""
    import psutil

    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds (user + system) the server process and its children (workers) have used."""
    import psutil

    if pid is None:
        return 0.0
    total = 0.0
    for process in server_processes(pid):
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def server_memory(pid: int) -> list[dict[str, object]]:
    """Memory of the server and each worker process in MiB: resident (RSS), proportional
    (PSS: pages shared with the other processes, such as memory-mapped index files and
    the loaded libraries, split among them) and unique (USS: freed if the process stops)."""
    import psutil

    rows = []
    for process in server_processes(pid):
        try:
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rows.append({"pid": process.pid, "rss_mib": round(info.rss / 2**20), "pss_mib": round(info.pss / 2**20),
                     "uss_mib": round(info.uss / 2**20)})
    return rows


DEGRADED = re.compile(r'^shoprank_degraded_total\{([^}]*)\} ([0-9.e+]+)$')
LABEL = re.compile(r'(\w+)="([^"]*)"')
CACHE_LOOKUP = re.compile(r'^shoprank_cache_lookups_total\{cache="([^"]+)",result="(hit|miss)"\} ([0-9.e+]+)$')


class Counted(NamedTuple):
    total: float
    shed: float
    rebalanced: float
    lookups: dict[str, float]
    degraded: dict[str, float]


def searches_counted(base: str) -> Counted:
    """Searches the server counted so far (every worker process's), those admitted over the
    shed limit (their cross-encoders scored only the top ``serving.shed_depth`` uncached pairs),
    the connections its busier processes handed back (``api.rebalance_margin``), every
    cache's lookups (``<cache>:hit`` / ``<cache>:miss``) and the stages skipped, by stage and
    reason (``<stage>: <reason>``: timeout, shed, skipped, error; a shed stage's cause after a comma: budget,
    overload, queue)."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    total = shed = rebalanced = 0.0
    lookups: dict[str, float] = {}
    degraded: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("shoprank_searches_total{"):
            value = float(line.rsplit(" ", 1)[1])
            total += value
            shed += value if 'shed="true"' in line else 0.0
        elif line.startswith("shoprank_connections_rebalanced_total "):
            rebalanced = float(line.rsplit(" ", 1)[1])
        elif match := CACHE_LOOKUP.match(line):
            key = f"{match[1]}:{match[2]}"
            lookups[key] = lookups.get(key, 0.0) + float(match[3])
        elif match := DEGRADED.match(line):
            labels = dict(LABEL.findall(match[1]))
            cause = labels.get("cause")
            key = f"{labels.get('stage')}: {labels.get('reason')}" + (f", {cause}" if cause else "")
            degraded[key] = degraded.get(key, 0.0) + float(match[2])
    return Counted(total, shed, rebalanced, lookups, degraded)


def cache_hits(before: dict[str, float], after: dict[str, float]) -> dict[str, dict[str, float]]:
    """Each cache's lookups during a level and the share that hit."""
    out = {}
    for name in sorted({key.rsplit(":", 1)[0] for key in after}):
        hits = after.get(f"{name}:hit", 0.0) - before.get(f"{name}:hit", 0.0)
        misses = after.get(f"{name}:miss", 0.0) - before.get(f"{name}:miss", 0.0)
        if hits + misses:
            out[name] = {"lookups": int(hits + misses), "hit_rate": round(hits / (hits + misses), 3)}
    return out
