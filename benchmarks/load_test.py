"""HTTP load test of /v1/search with wrk (Debian package ``wrk``), on 127.0.0.1.

Starts ``shoprank serve`` on the configured home and catalog (default: the
Home Depot catalog), posts real dev queries at concurrency 1, 8 and 32 for
``--seconds`` each, and prints QPS and p50/p95/p99 latency per level, plus
non-2xx counts. ``--swap`` activates another reranker / LambdaMART version and
back during the last level (hot swap under load: the count of failed requests
must stay 0).

    python benchmarks/load_test.py [--levels 1 8 32] [--seconds 30] [--swap ltr:v2]

Settings come from the environment as for the server (``SHOPRANK_*``), e.g. the
ranking depths.
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
import threading
import time
from pathlib import Path

import httpx
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import command, hardware, wait_ready  # noqa: E402
from online_learning.local_broker import free_port  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "homedepot"
TOKEN = "load-admin"

LUA = r"""
local queries = {}
for line in io.lines("%(queries)s") do queries[#queries + 1] = line end
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
local counter = 0
request = function()
  -- each wrk thread walks its own stride of the queries (and users): no two threads send the same bodies
  local n = counter * %(threads)d + id
  counter = counter + 1
  local q = queries[(n %% #queries) + 1]
  local body = '{"query": ' .. q .. ', "k": 10, "user_id": "load-' .. (n %% 500) .. '"}'
  return wrk.format("POST", "/v1/search", {["Content-Type"] = "application/json"}, body)
end
local bad = 0
response = function(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT requests=%%d seconds=%%.3f p50=%%.3f p95=%%.3f p99=%%.3f errors=%%d non2xx=%%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, summary.errors.status))
end
"""


def search_script(work: Path, queries: Path, threads: int) -> Path:
    """The wrk script posting ``queries`` (one JSON string a line) for a run with ``threads`` wrk threads
    (``-t``, which must match: each thread sends every ``threads``-th query)."""
    script = work / f"search-{threads}.lua"
    script.write_text(LUA % {"queries": queries, "threads": threads})
    return script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATA)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--swap", default=None, help="ROLE:VERSION to activate and roll back during the last level")
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SHOPRANK_CATALOG": os.environ.get("SHOPRANK_CATALOG", str(args.dataset / "products.csv")),
           "SHOPRANK_API__ADMIN_TOKEN": TOKEN, "SHOPRANK_PROGRESS": "false", "PYTHONPATH": str(ROOT)}
    work = Path(tempfile.mkdtemp(prefix="shoprank-load-"))
    queries = pd.read_csv(args.dataset / "queries.csv", dtype=str)
    queries = queries[queries.get("split", "dev") == "dev"]["query"] if "split" in queries else queries["query"]
    queries_txt = work / "queries.txt"
    queries_txt.write_text("\n".join(json.dumps(q) for q in queries))
    server = subprocess.Popen([sys.executable, "-m", "shoprank.cli", "serve", "--port", str(port)], env=env,
                              stdout=open(work / "server.log", "wb"), stderr=subprocess.STDOUT)
    results: dict[str, object] = {"hardware": hardware(), "command": command(), "levels": {}}
    try:
        wait_ready(base)
        results["served"] = httpx.get(f"{base}/v1/admin/models", headers={"Authorization": f"Bearer {TOKEN}"}).json()["served"]
        subprocess.run(["wrk", "-t1", "-c1", f"-d{args.warmup}s", "-s", str(search_script(work, queries_txt, 1)),
                        base], capture_output=True)
        for i, level in enumerate(args.levels):
            swapper = None
            if args.swap and i == len(args.levels) - 1:
                swapper = threading.Thread(target=swap_twice, args=(base, args.swap, args.seconds), daemon=True)
                swapper.start()
            threads = min(level, 2)
            out = subprocess.run(["wrk", f"-t{threads}", f"-c{level}", f"-d{args.seconds}s", "--timeout", "10s",
                                  "-s", str(search_script(work, queries_txt, threads)), base],
                                 capture_output=True, text=True).stdout
            match = re.search(r"RESULT requests=(\d+) seconds=([\d.]+) p50=([\d.]+) p95=([\d.]+) p99=([\d.]+) "
                              r"errors=(\d+) non2xx=(\d+)", out)
            if not match:
                raise RuntimeError(f"wrk printed no result:\n{out}")
            n, seconds, p50, p95, p99, errors, non2xx = match.groups()
            results["levels"][level] = {"qps": round(int(n) / float(seconds), 1), "p50_ms": float(p50),  # type: ignore[index]
                                        "p95_ms": float(p95), "p99_ms": float(p99), "requests": int(n),
                                        "socket_errors": int(errors), "non_2xx": int(non2xx)}
            if swapper is not None:
                swapper.join()
                results["swap"] = {"during_concurrency": level, "swapped": args.swap, "failed_requests": int(non2xx) + int(errors)}
        metrics = httpx.get(f"{base}/metrics").text
        results["degraded_total"] = sum(float(line.split()[-1]) for line in metrics.splitlines()
                                        if line.startswith("shoprank_degraded_total{"))
        results["cache_hit_rates"] = {m.group(1): float(m.group(2)) for m in
                                      re.finditer(r'shoprank_cache_hit_rate\{cache="([^"]+)"\} ([\d.e-]+)', metrics)}
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(results, indent=2))


def swap_twice(base: str, spec: str, seconds: int) -> None:
    role, version = spec.split(":")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    time.sleep(seconds / 4)
    httpx.post(f"{base}/v1/admin/models/{role}/activate", json={"version": version}, headers=headers, timeout=120)
    time.sleep(seconds / 4)
    httpx.post(f"{base}/v1/admin/models/{role}/rollback", headers=headers, timeout=120)


if __name__ == "__main__":
    main()
