"""Searches/s and latency for 1, 2 and 3 replicas behind HAProxy (`shoprank cluster up`), on 127.0.0.1.

For each replica count the local topology is started (HAProxy, N `shoprank serve`
replicas, Redis, the broker, the log sink) on one artifact home, real dev queries
are posted through HAProxy with wrk at each concurrency level for ``--seconds``,
and the topology is stopped. Prints per level searches/s, p50/p95/p99, failed
requests, and per replica count the CPU seconds the replicas spent per search and
each replica's resident memory: the inputs of the sizing estimate in docs/deploy.md.
Each count's levels start once the replicas' work at start (suggestions, catalog facts) is
done: their CPU idle for a second (``settled_s``: how long after ``up`` that was).
The results cache is off (``SHOPRANK_SERVING__RESULTS_CACHE_SIZE=0``): every search
is ranked.

    python benchmarks/replicas.py [--replicas 1 2 3] [--levels 8 32] [--seconds 20] [--dataset DIR]

``--home`` picks the artifact home (default: a fresh one under /tmp whose cache is
linked to ./artifacts/cache, so the catalog's vectors are reused; the pipeline is then
the first stage and the rules). Settings come from the environment (``SHOPRANK_*``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import hardware
from benchmarks.load_test import search_script
from core.settings import get_settings
from online_learning.local_broker import free_port
from shoprank.topology import Topology

DATA = ROOT.parent / "shared" / "data" / "homedepot"
RESULT = re.compile(r"RESULT requests=(\d+) seconds=([\d.]+) p50=([\d.]+) p95=([\d.]+) p99=([\d.]+) "
                    r"errors=(\d+) non2xx=(\d+)")


def replica_processes(topology: Topology) -> list[psutil.Process]:
    return [psutil.Process(p.pid) for n, p in topology.layout.pieces.items() if n.startswith("replica-") and p.pid]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        for proc in [process, *process.children(recursive=True)]:
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def settle(processes: list[psutil.Process], quiet_s: float = 0.05, longest_s: float = 180.0) -> float:
    """Seconds until the replicas' work at start (the suggestions' catalog phrases, the catalog facts) is done:
    their CPU over one second under ``quiet_s`` (at most ``longest_s``), so the first level measures searches."""
    started = time.monotonic()
    while time.monotonic() - started < longest_s:
        before = cpu_seconds(processes)
        time.sleep(1.0)
        if cpu_seconds(processes) - before < quiet_s:
            break
    return round(time.monotonic() - started, 1)


def wrk(base: str, work: Path, level: int, seconds: int) -> dict[str, float | int]:
    """Searches at ``level`` connections for ``seconds``, posting the queries of ``work``/queries.txt
    (one JSON string a line), each of wrk's threads its own share of them."""
    threads = min(level, 2)
    script = search_script(work, work / "queries.txt", threads)
    command = ["wrk", f"-t{threads}", f"-c{level}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), base]
    out = subprocess.run(command, capture_output=True, text=True, check=False).stdout
    match = RESULT.search(out)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    n, took, p50, p95, p99, errors, non2xx = match.groups()
    return {"searches_per_s": round(int(n) / float(took), 1), "p50_ms": float(p50), "p95_ms": float(p95),
            "p99_ms": float(p99), "requests": int(n), "failed": int(errors) + int(non2xx)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATA)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--levels", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="shoprank-replicas-"))
    home = args.home
    if home is None:
        home = work / "home"
        home.mkdir()
        (home / "cache").symlink_to((ROOT / "artifacts" / "cache").resolve(), target_is_directory=True)
    queries = pd.read_csv(args.dataset / "queries.csv", dtype=str)
    queries = queries[queries["split"] == "dev"]["query"] if "split" in queries else queries["query"]
    (work / "queries.txt").write_text("\n".join(json.dumps(q) for q in queries))
    os.environ.update({"SHOPRANK_HOME": str(home), "SHOPRANK_CATALOG": str(args.dataset / "products.csv"),
                       "SHOPRANK_SERVING__RESULTS_CACHE_SIZE": "0"})
    get_settings.cache_clear()
    settings = get_settings()
    results: dict[str, object] = {"benchmark": "replicas", "hardware": hardware(), "command": " ".join(sys.argv),
                                  "catalog": str(args.dataset / "products.csv"), "cores": os.cpu_count(), "runs": {}}
    for count in args.replicas:
        topology = Topology(settings, replicas=count, port=free_port())
        up = topology.up()
        try:
            base = topology.layout.base_url
            results["served"] = next(p["versions"] for n, p in up["pieces"].items() if n.startswith("replica-"))  # type: ignore[union-attr]
            processes = replica_processes(topology)
            settled = settle(processes)
            wrk(base, work, 2, args.warmup)
            levels = {}
            for level in args.levels:
                before = cpu_seconds(processes)
                figures = wrk(base, work, level, args.seconds)
                figures["replica_cpu_ms_per_search"] = round(1000 * (cpu_seconds(processes) - before)
                                                             / max(1, int(figures["requests"])), 2)
                levels[level] = figures
            rss = [round(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**30, 2)
                   for proc in processes]
            results["runs"][count] = {"levels": levels, "rss_gib_per_replica": rss,  # type: ignore[index]
                                      "startup_s": up["seconds"], "settled_s": settled}
        finally:
            topology.down()
        print(json.dumps({count: results["runs"][count]}), file=sys.stderr)  # type: ignore[index]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
