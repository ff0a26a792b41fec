"""The served pipeline under two query streams, with the cross-encoder on: uniform and head-heavy.

Streams over the train + dev queries of the dataset (seeded):

- **uniform**: every query once, shuffled, but for the head queries the nightly warm-up scores
  (no repeats and nothing warmed: nothing to cache);
- **head-heavy**: queries drawn from a Zipf law (s = ``--zipf``, default 1) over a seeded
  ranking of the queries. Day 1 (seed ``--seed``) is the traffic the nightly job warms from:
  its ``--warm-queries`` most frequent queries get their first-stage top ``--warm-depth``
  scored into the shared score store (:func:`serving.warm.warm_scores`, what
  ``shoprank warm-scores`` does with the logged head queries); day 2 (seed + 1), a
  different sample of the same law, is the measured load.

Once the server is ready (its index and models loaded and every product's store features in
memory, ``features.warm_wait_s``), a warm-up load of ``--warmup`` seconds; then, for each stream and concurrency level,
wrk posts (closed loop: each connection sends its next search when the last is answered, so
the server runs saturated) the stream's queries to ``shoprank serve`` on 127.0.0.1 for
``--seconds`` and prints searches/s, p50/p95/p99, failed requests, the share of searches
served degraded and the skipped stages by reason (``degraded_reasons``, from ``/metrics``:
``teacher: timeout``, ``teacher: shed, budget`` / ``overload`` / ``queue``, by the shed's cause), the share admitted over the shed limit (``shed_share``, from ``/metrics``:
their cross-encoders scored only the top ``serving.shed_depth`` of the pairs not cached), each cache's lookups
and hit rate (``caches``: results, query vectors and cross-encoder scores, each tier), the server's CPU milliseconds per search (all its threads and worker
processes, ``api.workers``: a capacity figure steadier than searches/s on a shared machine), the share of
the searches each process answered (``answered_by_process``, from ``X-Served-By``) and the
connections handed back by a process serving more of them (``connections_rebalanced``, ``api.rebalance_margin``), the
server's own time per search (``server_ms``: over all searches, over those it ranked rather than
answered from the results cache, and those searches' costly stages; the gap to the client's
latency is waiting for the process), and the share
whose top 10 a cross-encoder scored (the teacher or student stage ran and was not skipped,
at its full or query-adaptive depth, or the answer
came from the results cache, which keeps only complete answers).

Then, for each ``--open-loop STREAM:CONNECTIONS:RATE`` (default ``uniform:8:25 head-heavy:8:50``),
an open loop: searches arrive at RATE per second (Poisson) over at most CONNECTIONS connections,
as a storefront's steady traffic does, and the same figures are printed, each search's latency
counted from its arrival (waiting for a free connection included), with the degraded searches'
reasons (``teacher: shed, overload``, a stage past its deadline, store features missing).
Last, the memory of each server process (RSS, PSS, USS).

    HF_HUB_OFFLINE=1 SHOPRANK_HOME=artifacts/ft python benchmarks/load_streams.py [--levels 1 8 32] [--seconds 30]

The server runs on the home's active models (``SHOPRANK_*`` settings apply); it prints them.
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
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.metrics import LIVE_INTERVAL_S
from benchmarks.common import hardware, wait_ready
from benchmarks.server_probe import cache_hits, cpu_seconds, searches_counted, server_memory
from core.errors import InvalidInput
from core.settings import get_settings
from online_learning.local_broker import free_port

DATA = ROOT.parent / "shared" / "data" / "homedepot"
TOKEN = "streams-admin"

LUA = r"""
local queries = {}
for line in io.lines("%(queries)s") do queries[#queries + 1] = line end
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  counter = 0
  responses = 0
  degraded = 0
  scored = 0
  bad = 0
  served = {}
  took = {}
end
request = function()
  -- each connection thread walks its own stride of the stream, in order
  local i = (counter * %(threads)d + id) %% #queries + 1
  counter = counter + 1
  local body = '{"query": ' .. queries[i] .. ', "k": 10}'
  return wrk.format("POST", "/v1/search", {["Content-Type"] = "application/json"}, body)
end
response = function(status, headers, body)
  if status ~= 200 then bad = bad + 1 return end
  responses = responses + 1
  local by = headers["x-served-by"] or "?"
  served[by] = (served[by] or 0) + 1
  if not string.find(body, '"degraded":[]', 1, true) then degraded = degraded + 1 end
  local cached = string.find(body, '"cached":true', 1, true)
  -- a cross-encoder stage (teacher or student) ran: timed in stages_ms and not named in degraded
  local stages = string.match(body, '"stages_ms":(%%b{})') or ""
  -- the server's own time for the search (route: analysis to ranked page) and its costly stages
  local function stage(name) return string.match(stages, '"' .. name .. '":([%%d.]+)') or "0" end
  took[#took + 1] = (cached and "1 " or "0 ") .. (string.match(body, '"took_ms":([%%d.]+)') or "0") .. " " ..
    stage("first_stage") .. " " .. stage("student") .. " " .. stage("teacher") .. " " .. stage("ltr")
  local ran = (string.find(stages, '"teacher":', 1, true) and not string.find(body, '"teacher: ', 1, true))
    or (string.find(stages, '"student":', 1, true) and not string.find(body, '"student: ', 1, true))
  if cached or ran then scored = scored + 1 end
end
done = function(summary, latency, requests)
  local r, d, s, by = 0, 0, 0, {}
  for _, t in ipairs(threads) do
    r = r + t:get("responses")
    d = d + t:get("degraded")
    s = s + t:get("scored")
    for process, n in pairs(t:get("served")) do by[process] = (by[process] or 0) + n end
  end
  for process, n in pairs(by) do io.write(string.format("SERVED %%s %%d\n", process, n)) end
  for _, t in ipairs(threads) do
    for _, line in ipairs(t:get("took")) do io.write("TOOK ", line, "\n") end
  end
  io.write(string.format("RESULT requests=%%d seconds=%%.3f p50=%%.3f p95=%%.3f p99=%%.3f errors=%%d non2xx=%%d " ..
    "answered=%%d degraded=%%d scored=%%d timeouts=%%d\n", summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, r, d, s, summary.errors.timeout))
end
"""
TOOK = re.compile(r"^TOOK ([01]) ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)$", re.MULTILINE)
SERVED = re.compile(r"^SERVED (\S+) (\d+)$", re.MULTILINE)
RESULT = re.compile(r"RESULT requests=(\d+) seconds=([\d.]+) p50=([\d.]+) p95=([\d.]+) p99=([\d.]+) errors=(\d+) "
                    r"non2xx=(\d+) answered=(\d+) degraded=(\d+) scored=(\d+) timeouts=(\d+)")


def zipf_stream(queries: list[str], size: int, s: float, seed: int) -> list[str]:
    """``size`` draws from a Zipf law over a seeded ranking of ``queries`` (the same ranking every day)."""
    ranking = np.random.default_rng(12345).permutation(len(queries))
    weights = 1.0 / np.arange(1, len(queries) + 1) ** s
    draws = np.random.default_rng(seed).choice(len(queries), size=size, p=weights / weights.sum())
    return [queries[ranking[d]] for d in draws]


def server_times(out: str) -> dict[str, object]:
    """The server's own milliseconds per search (``took_ms``: from the route's start to the ranked page;
    the rest of a search's latency is waiting for the process and HTTP) at p50 / p95 / p99, over every
    search and over those not answered from the results cache; and, for the latter, each costly stage's
    p50 / p95 (the cross-encoders' time includes waiting for their batcher; a stage whose scores all came
    from the score store takes under a millisecond)."""
    rows = np.array([[float(v) for v in row] for row in TOOK.findall(out)]).reshape(-1, 6)
    if not len(rows):
        return {}

    def pct(values: np.ndarray, qs: tuple[int, ...] = (50, 95, 99)) -> list[float]:
        return [round(float(v), 1) for v in np.percentile(values, qs)] if len(values) else []

    ranked = rows[rows[:, 0] == 0]
    stages = {name: pct(ranked[:, i], (50, 95)) for i, name in
              ((2, "first_stage"), (3, "student"), (4, "teacher"), (5, "ltr")) if len(ranked) and ranked[:, i].any()}
    return {"all": pct(rows[:, 1]), "ranked": pct(ranked[:, 1]), "ranked_share": round(len(ranked) / len(rows), 3),
            "ranked_stages": stages}


def run_wrk(base: str, work: Path, stream: list[str], level: int, seconds: int, name: str,
            server: int | None = None) -> dict[str, object]:
    """One closed-loop level; ``server_cpu_ms_per_search`` is the server's CPU per answered search
    (steadier than searches/s from run to run on a shared machine)."""
    threads = min(level, 2)
    queries = work / f"{name}.txt"
    queries.write_text("\n".join(json.dumps(q) for q in stream))
    script = work / f"{name}-{threads}.lua"
    script.write_text(LUA % {"queries": queries, "threads": threads})
    # every process publishes its cache figures for /metrics once a second (LIVE_INTERVAL_S): wait that long
    # so that the counts before and after the level hold none of the previous level's lookups
    time.sleep(1.5 * LIVE_INTERVAL_S)
    counted = searches_counted(base)
    cpu = cpu_seconds(server)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{level}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script),
                          base], capture_output=True, text=True, check=False).stdout
    match = RESULT.search(out)
    if not match:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    n, took, p50, p95, p99, errors, non2xx, answered, degraded, scored, timeouts = match.groups()
    answered_n = max(1, int(answered))
    cpu_ms = (cpu_seconds(server) - cpu) * 1000 / answered_n
    time.sleep(1.5 * LIVE_INTERVAL_S)
    after = searches_counted(base)
    total, shed = after.total - counted.total, after.shed - counted.shed
    by_process = sorted((int(n) for _, n in SERVED.findall(out)), reverse=True)
    return {"searches_per_s": round(int(n) / float(took), 1), "p50_ms": float(p50), "p95_ms": float(p95),
            "p99_ms": float(p99), "requests": int(n), "failed": int(errors) + int(non2xx), "timeouts": int(timeouts),
            "degraded_share": round(int(degraded) / answered_n, 4), "shed_share": round(shed / max(1.0, total), 4),
            "cross_encoder_top10_share": round(int(scored) / answered_n, 4),
            "server_cpu_ms_per_search": round(cpu_ms, 1) if server is not None else None,
            "answered_by_process": [round(n / answered_n, 3) for n in by_process],
            "server_ms": server_times(out),
            "connections_rebalanced": int(after.rebalanced - counted.rebalanced),
            "degraded_reasons": {key: int(value - counted.degraded.get(key, 0.0)) for key, value
                                 in sorted(after.degraded.items()) if value > counted.degraded.get(key, 0.0)},
            "caches": cache_hits(counted.lookups, after.lookups)}


def run_open(base: str, stream: list[str], connections: int, rate: float, seconds: int, seed: int
             ) -> dict[str, object]:
    """Open loop: searches arrive at ``rate`` per second (Poisson, seeded) whether or not the earlier ones were
    answered, over at most ``connections`` connections; a search's latency runs from its arrival, so time spent
    waiting for a free connection counts (no coordinated omission)."""
    import asyncio

    arrivals = np.cumsum(np.random.default_rng(seed).exponential(1.0 / rate, size=int(rate * seconds * 1.5) + 10))
    arrivals = arrivals[arrivals < seconds]

    reasons: Counter = Counter()

    async def drive() -> tuple[list[float], Counter]:
        counts: Counter = Counter()
        latencies: list[float] = []
        slots = asyncio.Semaphore(connections)
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10.0) as client:
            start = time.perf_counter()

            async def one(at: float, query: str) -> None:
                await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
                async with slots:
                    try:
                        response = await client.post("/v1/search", json={"query": query, "k": 10})
                    except httpx.TimeoutException:
                        counts["timeouts"] += 1
                        return
                    except httpx.HTTPError:
                        counts["failed"] += 1
                        return
                latencies.append(time.perf_counter() - start - at)
                if response.status_code != 200:
                    counts["failed"] += 1
                    return
                body = response.json()
                counts["answered"] += 1
                counts["degraded"] += bool(body["degraded"])
                for reason in body["degraded"]:
                    reasons[reason[:80]] += 1
                ran = any(stage in body["stages_ms"] and not any(d.startswith(f"{stage}:") for d in body["degraded"])
                          for stage in ("teacher", "student"))
                counts["scored"] += bool(body["cached"] or ran)

            await asyncio.gather(*(one(float(at), stream[i % len(stream)]) for i, at in enumerate(arrivals)))
            counts["wall_ms"] = int((time.perf_counter() - start) * 1000)
        return latencies, counts

    latencies, counts = asyncio.run(drive())
    answered = max(1, counts["answered"])
    ms = np.asarray(latencies) * 1e3 if latencies else np.zeros(1)
    return {"offered_per_s": rate, "connections": connections, "requests": len(arrivals),
            "searches_per_s": round(counts["answered"] / (counts["wall_ms"] / 1000), 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "failed": counts["failed"] + counts["timeouts"],
            "timeouts": counts["timeouts"], "degraded_share": round(counts["degraded"] / answered, 4),
            "cross_encoder_top10_share": round(counts["scored"] / answered, 4),
            "degraded_reasons": dict(reasons.most_common())}


def served_models(base: str, timeout: float = 300) -> dict[str, str]:
    """The model versions served; with several server processes each must be ready, so ask until one answers."""
    deadline = time.monotonic() + timeout
    while True:
        answer = httpx.get(f"{base}/v1/admin/models", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        if answer.status_code == 200 and "served" in answer.json():
            return answer.json()["served"]
        if time.monotonic() > deadline:
            raise RuntimeError(f"/v1/admin/models answered {answer.status_code}: {answer.text[:300]}")
        time.sleep(2)


def warm(settings, stream: list[str], n: int, depth: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Score day 1's head queries into the shared store, as the nightly job does."""
    from serving.loading import open_engine
    from serving.warm import warm_scores

    heads = [q for q, _ in Counter(stream).most_common(n)]
    engine = open_engine(settings, warm_features=False)
    started = time.monotonic()
    report = warm_scores(engine, heads, depth)
    engine.close()
    covered = sum(c for q, c in Counter(stream).items() if q in set(heads)) / len(stream)
    return {**asdict(report), "seconds": round(time.monotonic() - started, 1),
            "day1_searches_covered": round(covered, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DATA)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--zipf", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--day-size", type=int, default=20_000, help="searches in a day of the head-heavy stream")
    parser.add_argument("--warm-queries", type=int, default=5000)
    parser.add_argument("--warm-depth", type=int, default=20)
    parser.add_argument("--streams", nargs="+", default=["uniform", "head-heavy"])
    parser.add_argument("--warmup", type=int, default=20, help="seconds of warm-up load before measuring")
    parser.add_argument("--keep-scores", action="store_true", help="keep the home's local score store (default: "
                        "emptied first, so that only the nightly warm-up and this run's searches fill it)")
    parser.add_argument("--open-loop", nargs="*", default=["uniform:8:25", "head-heavy:8:50"],
                        metavar="STREAM:CONNECTIONS:RATE", help="after the closed-loop levels, searches arriving "
                        "at RATE per second over CONNECTIONS connections (a storefront's steady load)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    settings = get_settings()
    frame = pd.read_csv(args.dataset / "queries.csv", dtype=str)
    queries = frame[frame["split"].isin(["train", "dev"])]["query"].drop_duplicates().tolist()
    work = Path(tempfile.mkdtemp(prefix="shoprank-streams-"))
    result: dict[str, object] = {"benchmark": "load_streams", "hardware": hardware(), "command": " ".join(sys.argv),
                                 "home": str(settings.home), "queries": len(queries), "streams": {},
                                 "environment": {k: v for k, v in sorted(os.environ.items())
                                                 if k.startswith("SHOPRANK_") and "TOKEN" not in k}}
    day1 = zipf_stream(queries, args.day_size, args.zipf, args.seed)
    day2 = zipf_stream(queries, args.day_size, args.zipf, args.seed + 1)
    heads = {q for q, _ in Counter(day1).most_common(args.warm_queries)}
    # the uniform stream leaves out the queries the nightly warm-up scores: nothing in it is cached
    uniform = [q for q in np.random.default_rng(args.seed).permutation(queries) if q not in heads]
    if settings.serving.score_store == "local" and not args.keep_scores:
        store = settings.paths.score_store
        result["emptied_score_store"] = {"path": str(store), "bytes": store.stat().st_size if store.exists() else 0}
        for stale in store.parent.glob(store.name + "*"):
            stale.unlink()
    result["head_heavy"] = {"zipf_s": args.zipf, "day_size": args.day_size,
                            "distinct_in_day2": len(set(day2)),
                            "day2_searches_of_day1_heads": round(sum(q in heads for q in day2) / len(day2), 3)}
    result["uniform"] = {"queries": len(uniform), "left_out_warmed_heads": len(queries) - len(uniform)}
    if "head-heavy" in args.streams:
        try:
            result["warm"] = warm(settings, day1, args.warm_queries, args.warm_depth)
        except InvalidInput as err:  # no cross-encoder served: nothing to warm, the streams still run
            result["warm"] = {"skipped": str(err)}
            print(f"no warm-up: {err}", file=sys.stderr)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SHOPRANK_API__ADMIN_TOKEN": TOKEN, "SHOPRANK_PROGRESS": "false",
           "SHOPRANK_EVENTS__LOG_IMPRESSIONS": os.environ.get("SHOPRANK_EVENTS__LOG_IMPRESSIONS", "true")}
    server = subprocess.Popen([sys.executable, "-m", "shoprank.cli", "serve", "--port", str(port)], env=env,
                              stdout=(work / "server.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_ready(base)
        result["served"] = served_models(base)
        # warm-up on queries no level reaches (the uniform stream's tail): ONNX sessions, the store features
        run_wrk(base, work, uniform[-400:], 2, args.warmup, "warmup")
        cursors: dict[str, int] = {}
        result["open_loop"] = {}
        for name in args.streams:
            stream = uniform if name == "uniform" else day2
            levels, cursor = {}, 0
            for level in args.levels:
                # each level goes on where the last stopped: the uniform stream never repeats a query
                rotated = stream[cursor % len(stream):] + stream[:cursor % len(stream)]
                levels[level] = run_wrk(base, work, rotated, level, args.seconds, name, server.pid)
                cursor += int(levels[level]["requests"])  # type: ignore[call-overload]
                print(json.dumps({name: {level: levels[level]}}), file=sys.stderr)
            result["streams"][name] = levels  # type: ignore[index]
            cursors[name] = cursor
        for spec in args.open_loop:
            name, connections, rate = spec.split(":")
            stream = uniform if name == "uniform" else day2
            cursor = cursors.get(name, 0)
            rotated = stream[cursor % len(stream):] + stream[:cursor % len(stream)]
            row = run_open(base, rotated, int(connections), float(rate), args.seconds, args.seed)
            cursors[name] = cursor + int(row["requests"])  # type: ignore[call-overload]
            print(json.dumps({"open_loop": {spec: row}}), file=sys.stderr)
            result["open_loop"][spec] = row  # type: ignore[index]
        result["server_memory"] = server_memory(server.pid)
        print(json.dumps({"server_memory": result["server_memory"]}), file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
