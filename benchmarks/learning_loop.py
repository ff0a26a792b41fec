"""End-to-end learning loop with a real Kafka-protocol broker (Tansu), on 127.0.0.1.

    python benchmarks/learning_loop.py [--sessions 3000] [--ab-sessions 8000]

1. A fresh home serving the Home Depot catalog (SIMULATED store world: prices,
   stock, promotions, 2,000 users), LambdaMART v1 trained on the judged train
   split; the API runs as a real process, events go to the broker, the Parquet
   log sink and the streaming feature updater run as real consumer processes.
2. Day 1: simulated shoppers (train-split queries) search and click / buy.
3. ``shoprank retrain`` builds v2 from the logs (IPS, EM propensities).
4. Shadow: v2 scores live traffic in the background; the diff is summarised.
5. A/B v1 vs v2, then ``shoprank promote`` decides (and activates the winner);
   when the A/B is not significant yet, team-draft interleaving decides.
6. The same simulated traffic (same seeds) is replayed against v1 and against
   the promoted model: true NDCG@10 and purchase rate, with significance
   (paired t-test over the same sessions).
7. A deliberately worse candidate (v2 with its scores reversed) is A/B tested
   and must be rejected, then activated on purpose and caught by ``guard``.
8. ``shoprank report ab`` writes the analyst report.

Serving profile for the loop: first stage + LambdaMART + rules (no
cross-encoders: they cost ~0.4 s per search on 2 cores, which would make a
simulated day take hours). Prints timings and resources of each step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import ShoprankProcess, command, hardware, wait_ready  # noqa: E402
from core.paths import Home  # noqa: E402
from core.registry import ModelRegistry  # noqa: E402
from online_learning.events import INTERACTIONS_TOPIC, RANKINGS_TOPIC  # noqa: E402
from online_learning.local_broker import LocalBroker, create_topics, free_port  # noqa: E402
from simulation.simulator import compare_replays  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "homedepot"
TOKEN = "loop-admin"


def shoprank(env: dict, *args: str, check: bool = True) -> dict:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "shoprank.cli", "--no-progress", *args], env=env,
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"shoprank {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    out = result.stdout.strip()
    try:
        payload = json.loads(out[out.index("{"):]) if "{" in out else {}
    except json.JSONDecodeError:
        payload = {"raw": out[-2000:]}
    payload["_seconds"] = round(time.perf_counter() - started, 1)
    return payload


def mean_of(values: list) -> float | None:
    """The mean of the known values (a shadow record of a cached page has no served time), to 0.1."""
    known = [v for v in values if v is not None]
    return round(sum(known) / len(known), 1) if known else None


def admin(base: str, method: str, path: str, body: dict | None = None) -> dict:
    response = httpx.request(method, f"{base}{path}", json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                             timeout=300)
    response.raise_for_status()
    return response.json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=ROOT / "artifacts" / "loop")
    parser.add_argument("--dataset", type=Path, default=DATA, help="judged dataset whose catalog is served")
    parser.add_argument("--sessions", type=int, default=3000, help="simulated searches on day 1")
    parser.add_argument("--ab-sessions", type=int, default=8000)
    parser.add_argument("--interleave-sessions", type=int, default=3000,
                        help="team-draft interleaving when the A/B is not yet significant (0: skip)")
    parser.add_argument("--eval-sessions", type=int, default=3000)
    parser.add_argument("--worse-sessions", type=int, default=3000)
    parser.add_argument("--shadow-sessions", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--fresh", action="store_true", help="delete the loop home first")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(args.home, ignore_errors=True)
    args.home.mkdir(parents=True, exist_ok=True)
    home = Home(args.home)
    cache = home.cache
    if not cache.exists():  # reuse exported encoders and embeddings of the main artifacts
        shared = Home(ROOT / "artifacts").cache.resolve()
        shared.mkdir(parents=True, exist_ok=True)  # a fresh clone has no artifacts yet
        cache.symlink_to(shared, target_is_directory=True)
    logs = home.logs
    logs.mkdir(exist_ok=True)
    steps: dict[str, object] = {"hardware": hardware(), "command": command()}
    broker = LocalBroker(log=logs / "tansu.log").start()
    create_topics(broker.bootstrap, [RANKINGS_TOPIC, INTERACTIONS_TOPIC])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data = args.dataset
    env = {**os.environ, "SHOPRANK_HOME": str(args.home), "SHOPRANK_CATALOG": str(data / "products.csv"),
           "SHOPRANK_RANKING__RERANKER": "none", "SHOPRANK_RANKING__STUDENT": "none",
           "SHOPRANK_EVENTS__KAFKA_BOOTSTRAP": broker.bootstrap, "SHOPRANK_API__ADMIN_TOKEN": TOKEN,
           "SHOPRANK_PROGRESS": "false", "PYTHONPATH": str(ROOT)}
    processes: list[ShoprankProcess] = []
    sessions_detail: dict[str, dict] = {}
    try:
        steps["features_build"] = shoprank(env, "features", "build", "--dataset", str(data))
        steps["features_apply"] = shoprank(env, "features", "apply")
        steps["features_materialize"] = shoprank(env, "features", "materialize")
        if ModelRegistry(home.models).active_version("ltr") is None:
            steps["train_ltr_v1"] = shoprank(env, "train", "ltr", "--dataset", str(data), "--run-name", "v1")
        api = ShoprankProcess("api", ["serve", "--port", str(port)], env, logs / "api.log")
        sink = ShoprankProcess("sink", ["consume", "sink"], env, logs / "sink.log")
        features = ShoprankProcess("features", ["consume", "features"], env, logs / "features.log")
        processes += [api, sink, features]
        wait_ready(base)

        def simulate(name: str, sessions: int, seed: int, split: str = "train") -> dict:
            started = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "shoprank.cli", "--no-progress", "simulate", "--base-url",
                                     base, "--dataset", str(data), "--split", split, "--sessions", str(sessions),
                                     "--concurrency", str(args.concurrency), "--seed", str(seed),
                                     "--out", str(logs / f"{name}.json")], env=env, stdout=subprocess.DEVNULL,
                                    stderr=open(logs / f"{name}.err", "ab"))
            cpu_start = sum(p.ps.cpu_times().user + p.ps.cpu_times().system for p in processes)
            while proc.poll() is None:
                for p in processes:
                    p.sample()
                time.sleep(1)
            report = json.loads((logs / f"{name}.json").read_text())
            sessions_detail[name] = report.pop("sessions_detail")  # per session, for paired replays
            cpu = sum(p.ps.cpu_times().user + p.ps.cpu_times().system for p in processes) - cpu_start
            report["wall_seconds"] = round(time.perf_counter() - started, 1)
            report["server_cpu_seconds"] = round(cpu, 1)
            report["peak_rss_gib"] = {p.name: round(p.peak_rss / 2**30, 2) for p in processes}
            return report

        def settle() -> None:
            time.sleep(15)  # consumers drain (the log sink commits after durable writes)

        steps["day1"] = simulate("day1", args.sessions, seed=1)
        settle()
        steps["retrain"] = shoprank(env, "retrain", "--settle-minutes", "0")  # the day's traffic was just made
        candidate = steps["retrain"].get("version")
        admin(base, "PUT", "/v1/admin/experiment", {"experiment": None, "shadow": candidate})
        steps["shadow_traffic"] = simulate("shadow", args.shadow_sessions, seed=2)
        steps["shadow"] = admin(base, "GET", "/v1/admin/experiment")
        shadow_file = home.shadow / f"{candidate}.jsonl"
        if shadow_file.exists():
            records = [json.loads(line) for line in shadow_file.read_text().splitlines()]
            steps["shadow_diff"] = {
                "searches": len(records),
                "mean_overlap@10": round(sum(r["overlap@10"] for r in records) / len(records), 3),
                "mean_kendall_tau@10": round(sum(taus) / len(taus) if (taus := [t for r in records if (t := r[
                    "kendall_tau@10"]) is not None and t == t]) else 0.0, 3),  # None (or NaN): < 3 in common
                "served_ms_mean": mean_of([r["served_ms"] for r in records]),
                "shadow_ms_mean": round(sum(r["shadow_ms"] for r in records) / len(records), 1)}
        def experiment_round(name: str, mode: str, sessions: int, seed: int, report: str) -> tuple[dict, dict, dict]:
            """Run one v1-vs-candidate experiment: traffic, the promotion decision (applied), the report."""
            experiment = {"name": name, "mode": mode, "control": "control",
                          "arms": {"control": {"ltr": "v1"}, "treatment": {"ltr": candidate}}}
            admin(base, "PUT", "/v1/admin/experiment", {"experiment": experiment, "shadow": None})
            traffic = simulate(mode, sessions, seed=seed)
            settle()
            decision = shoprank(env, "promote", "--experiment", name, "--apply")
            written = shoprank(env, "report", "ab", "--experiment", name, "--out",
                               str(home.reports / report))
            return traffic, decision, written

        steps["ab_traffic"], steps["promote"], steps["report"] = experiment_round(
            "ltr-v1-vs-candidate", "ab", args.ab_sessions, 3, "ab.html")
        if steps["promote"].get("decision") == "continue" and args.interleave_sessions:
            # A/B on purchases is underpowered at this traffic: team-draft interleaving compares both
            # rankings within each search, so far fewer searches decide (Chapelle et al. 2012)
            steps["interleave_traffic"], steps["promote_interleaving"], steps["report_interleaving"] = experiment_round(
                "ltr-v1-vs-candidate-interleaved", "interleave", args.interleave_sessions, 4, "interleaving.html")
        admin(base, "PUT", "/v1/admin/experiment", {"experiment": None, "shadow": None})
        active = admin(base, "POST", "/v1/admin/reload")["served"].get("ltr")
        steps["served_after_promotion"] = active
        # same simulated traffic (same seeds, dev queries) against the initial and the promoted model
        admin(base, "POST", "/v1/admin/models/ltr/activate", {"version": "v1"})
        steps["replay_v1"] = simulate("replay_v1", args.eval_sessions, seed=11, split="dev")
        admin(base, "POST", "/v1/admin/models/ltr/activate", {"version": active})
        steps["replay_promoted"] = simulate("replay_promoted", args.eval_sessions, seed=11, split="dev")
        steps["replay_paired"] = compare_replays({"sessions_detail": sessions_detail["replay_v1"]},
                                                 {"sessions_detail": sessions_detail["replay_promoted"]})
        steps["worse_candidate"] = worse_candidate(env, base, active, simulate, settle, args.worse_sessions)
    finally:
        for p in processes:
            p.stop()
        broker.stop()
    print(json.dumps(steps, indent=2, default=str))
    home.reports.mkdir(exist_ok=True)
    (home.reports / "learning_loop.json").write_text(json.dumps(steps, indent=2, default=str))


def negate_leaves(folder: Path) -> None:
    """Negate every leaf value of the LightGBM model files under ``folder`` (warm-start parents too)."""
    for path in folder.rglob("model.txt"):
        text = re.sub(r"^tree_sizes=.*\n", "", path.read_text(), flags=re.M)  # sizes change; parsed without
        text = re.sub(r"^leaf_value=(.*)$", lambda m: "leaf_value=" + " ".join(
            repr(-float(v)) for v in m.group(1).split()), text, flags=re.M)
        path.write_text(text)


def worse_candidate(env: dict, base: str, active: str, simulate, settle, sessions: int) -> dict:  # type: ignore[no-untyped-def]
    """Register ``active`` with its scores reversed, A/B it (must be rejected), then force it live (guard rolls back)."""
    home = Home(Path(env["SHOPRANK_HOME"]))
    registry = ModelRegistry(home.models)
    source = registry.get("ltr", active)
    folder = home.training("worse")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(Path(source.path), folder)
    negate_leaves(folder)  # the same trees, order reversed: a deliberately bad candidate
    worse = registry.register("ltr", folder, base_model="deliberately reversed", parent=active,
                              notes="scores negated on purpose: the policy must reject it").version
    experiment = {"name": "worse-candidate", "mode": "ab", "control": "control",
                  "arms": {"control": {"ltr": active}, "treatment": {"ltr": worse}}}
    admin(base, "PUT", "/v1/admin/experiment", {"experiment": experiment, "shadow": None})
    traffic = simulate("worse_ab", sessions, seed=5)
    settle()
    decision = shoprank(env, "promote", "--experiment", "worse-candidate")
    admin(base, "PUT", "/v1/admin/experiment", {"experiment": None, "shadow": None})
    admin(base, "POST", "/v1/admin/models/ltr/activate", {"version": worse})  # a bad deploy on purpose
    after = simulate("worse_live", sessions, seed=6)
    settle()
    guard = shoprank(env, "guard", "--apply")
    return {"version": worse, "ab": traffic["arms"], "decision": decision, "live": after["overall"], "guard": guard}


if __name__ == "__main__":
    main()
