"""Click spam against the nightly retrain, on the Home Depot catalog (SIMULATED shoppers and bots), on 127.0.0.1.

    python benchmarks/click_attack.py [--source artifacts/ft] [--work /tmp/shoprank-click-attack] \
        [--sessions 2000] [--attack-searches 300] [--replay-sessions 2000] [--seed 7]

1. A scratch home from ``--source`` (a home with the Home Depot index, store world,
   Feast store and an active LambdaMART: ``artifacts/ft``; its models and features
   are copied, the rest linked, nothing there is written). ``shoprank serve`` runs
   on it without Kafka: the API's event spool is the log.
2. The attack, drawn from ``--seed``: a product shown between ranks 11 and 100 for
   ``--queries`` train-split queries, of another department than each query's judged
   products and judged for none of them.
3. Two days of traffic, each the same honest shoppers (train-split queries, seed
   ``--traffic-seed``) with the attack's searches spread among them
   (:class:`~simulation.attack.ClickAttack`): one bot, then a swarm of 50 bots. A
   third log, no attack, is the first day without the bots' events (the same honest
   searches: the served model is fixed and no streaming features run).
4. ``online_learning.retrain.retrain`` on each log: with the traffic filters, and
   (attacked days) with ``filter_traffic=False`` (``--no-filter``); every candidate
   warm-starts from the active model and is registered, never activated by the job.
5. Each model (the active one before the attack too) is activated in turn through
   the admin API: the attacked product's rank for each attacked query (anonymous
   search, k 100), then a paired replay of the same honest dev-split sessions (seed
   ``--replay-seed``): true NDCG@10, searches with a purchase and with a click,
   paired t-tests (95% CI) of filtered vs unfiltered vs no attack.

The no-attack log is the one-bot day less the bot's events, so a filter that drops
exactly the bot's events gives the retrain the very same data (a difference of 0).
Sizes: about 15 minutes on 2 shared cores at the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import ShoprankProcess, hardware, wait_ready  # noqa: E402
from core.settings import Settings  # noqa: E402
from evaluation.dataset import EvalDataset, load_dataset  # noqa: E402
from online_learning.consumers.base import Delivered  # noqa: E402
from online_learning.consumers.log_sink import ParquetLogSink  # noqa: E402
from online_learning.events import parse  # noqa: E402
from online_learning.local_broker import free_port  # noqa: E402
from online_learning.retrain import RetrainConfig, retrain  # noqa: E402
from simulation.attack import ClickAttack  # noqa: E402
from simulation.simulator import TrafficSimulator, compare_replays  # noqa: E402
from simulation.world import StoreWorld  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "homedepot"
TOKEN = "click-attack-admin"
LINKED = ("indexes", "world", "cache")
COPIED = ("models", "features")  # the retrains register models; Feast rewrites its yaml on open
SINCE = "2000-01-01T00:00:00+00:00"  # every retrain reads its whole log (the registry's windows would skip it)


def scratch_home(source: Path, target: Path, linked: tuple[str, ...] = LINKED) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in linked:
        (target / name).symlink_to((source / name).resolve(), target_is_directory=True)
    for name in COPIED:
        shutil.copytree((source / name).resolve(), target / name)
    return target


def settings_for(home: Path, dataset: Path) -> Settings:
    return Settings(home=home, catalog=dataset / "products.csv", ranking={"reranker": "none", "student": "none"})


def pick_attack(base: str, dataset: EvalDataset, world: StoreWorld, args: argparse.Namespace) -> dict:
    """A product shown at ranks 11..100 for ``args.queries`` train queries of other departments, judged for none."""
    rng = random.Random(args.seed)
    row = {p: i for i, p in enumerate(world.products["product_id"])}
    department = world.products["department_id"].to_numpy()
    pool = [(qid, text) for qid, text in dataset.select("train") if any(dataset.qrels.get(qid, {}).values())]
    pool = rng.sample(pool, min(args.pool, len(pool)))
    shown: dict[str, dict[str, int]] = defaultdict(dict)
    with httpx.Client(timeout=60) as client:
        for qid, text in pool:
            judged = [row[p] for p in dataset.qrels[qid] if p in row]
            if not judged:
                continue
            departments = set(department[judged])
            items = client.post(f"{base}/v1/search", json={"query": text, "k": 100}).json()["items"]
            for item in items[10:]:
                p = item["product_id"]
                if p in row and p not in dataset.qrels[qid] and department[row[p]] not in departments:
                    shown[p].setdefault(text, item["rank"])
    eligible = sorted(p for p, queries in shown.items() if len(queries) >= args.queries)
    if not eligible:
        raise SystemExit(f"no product is shown for {args.queries} of {len(pool)} sampled queries: raise --pool")
    product = rng.choice(eligible)
    queries = sorted(rng.sample(sorted(shown[product]), args.queries))
    r = row[product]
    return {"product": product, "title": world.products["title"].iat[r],
            "category": world.products["category"].iat[r], "department_id": int(department[r]),
            "queries": queries, "rank_when_picked": {q: shown[product][q] for q in queries},
            "pool_queries": len(pool), "eligible_products": len(eligible)}


def spool_sizes(home: Path) -> dict[Path, int]:
    return {p: p.stat().st_size for p in (home / "event_spool").rglob("segment-*.jsonl")}


def spooled_since(home: Path, before: dict[Path, int]) -> list[dict]:
    """Spool records appended since ``before`` (the API fsyncs interactions and flushes impressions at once)."""
    time.sleep(1.0)
    records = []
    for path in sorted((home / "event_spool").rglob("segment-*.jsonl")):
        with open(path, "rb") as handle:
            handle.seek(before.get(path, 0))
            records += [json.loads(line) for line in handle if line.endswith(b"\n")]
    return records


def write_log(records: list[dict], home: Path) -> int:
    batch = [Delivered(r["topic"], 0, n, parse(json.dumps(r["value"]))) for n, r in enumerate(records)]
    ParquetLogSink(home / "event_log")(batch)
    return len(batch)


def traffic(base: str, home: Path, world: StoreWorld, dataset: EvalDataset, attack: ClickAttack,
            args: argparse.Namespace) -> tuple[dict, list[dict]]:
    before = spool_sizes(home)
    simulator = TrafficSimulator(base, world, dataset, "train", seed=args.traffic_seed)
    report = simulator.run(args.sessions, args.concurrency, progress=False, attack=attack)
    report.pop("sessions_detail")
    return report, spooled_since(home, before)


def retrain_on(name: str, records: list[dict], work: Path, args: argparse.Namespace, engine, filters: list[bool]) -> dict:  # type: ignore[no-untyped-def]
    """Retrain on ``records`` once per ``filters`` value; models go to the base home's registry."""
    home = work / name
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "models").symlink_to((work / "base" / "models").resolve(), target_is_directory=True)
    shutil.copytree(work / "base" / "features", home / "features")
    out: dict[str, object] = {"logged_events": write_log(records, home)}
    settings = settings_for(home, args.dataset)
    for filtered in filters:
        started = time.perf_counter()
        result = retrain(settings, engine.featurizer([]), engine.ltr,
                         RetrainConfig(since=SINCE, filter_traffic=filtered), engine.hybrid)
        if result.get("status") != "registered":
            raise SystemExit(f"retrain {name} (filters {'on' if filtered else 'off'}) did not register a model: "
                             f"{result}; log more searches (--sessions)")
        result["seconds"] = round(time.perf_counter() - started, 1)
        out["filtered" if filtered else "unfiltered"] = result
    return out


def activate(base: str, version: str) -> None:
    response = httpx.post(f"{base}/v1/admin/models/ltr/activate", json={"version": version},
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=300)
    response.raise_for_status()


def ranks(base: str, attack: dict) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for query in attack["queries"]:
        items = httpx.post(f"{base}/v1/search", json={"query": query, "k": 100}, timeout=60).json()["items"]
        shown = [i["product_id"] for i in items]
        out[query] = shown.index(attack["product"]) + 1 if attack["product"] in shown else None
    return out


def replay(base: str, world: StoreWorld, dataset: EvalDataset, args: argparse.Namespace) -> dict:
    simulator = TrafficSimulator(base, world, dataset, "dev", seed=args.replay_seed)
    return simulator.run(args.replay_sessions, args.concurrency, progress=False)


def summary(result: dict) -> dict:
    """What the report keeps of one retrain: version, metrics and the exclusions by reason."""
    filtered = result.get("filtered") or {}
    return {"version": result.get("version"), "status": result.get("status"), "seconds": result.get("seconds"),
            "metrics": {k: x for k, x in (result.get("metrics") or {}).items() if k != "filtered"},
            "excluded": filtered.get("excluded_interactions", {}),
            "excluded_shoppers": filtered.get("excluded_shoppers", 0),
            "anomalous_by_reason": filtered.get("anomalous_by_reason", {})}


def retrain_all(days: dict[str, tuple[dict, list[dict]]], settings: Settings, args: argparse.Namespace,
                before: str) -> tuple[dict, dict[str, str]]:
    """No attack (filters on), then each attacked day with and without the filters; the models by label."""
    from serving.loading import open_engine

    honest = [r for r in days["one_bot"][1] if not str(r["value"].get("user_id") or "").startswith("bot-")]
    engine = open_engine(settings, warm_features=False)
    try:
        retrains = {"no_attack": retrain_on("no_attack", honest, args.work, args, engine, [True])}
        for name, (_, records) in days.items():
            retrains[name] = retrain_on(name, records, args.work, args, engine, [True, False])
    finally:
        engine.close()
    models = {"before": before, "no_attack": retrains["no_attack"]["filtered"]["version"]}
    for name in days:
        models[f"{name}_filtered"] = retrains[name]["filtered"]["version"]
        models[f"{name}_unfiltered"] = retrains[name]["unfiltered"]["version"]
    report = {name: {"logged_events": r["logged_events"],
                     **{kind: summary(v) for kind, v in r.items() if kind != "logged_events"}}
              for name, r in retrains.items()}
    return report, models


def measure(base: str, models: dict[str, str], attack: dict, world: StoreWorld, dataset: EvalDataset,
            args: argparse.Namespace) -> dict:
    """Each model served in turn: the attacked product's ranks, then the paired honest replay."""
    rank_of, replays = {}, {}
    for label, version in models.items():
        activate(base, version)
        rank_of[label] = ranks(base, attack)
        replays[label] = replay(base, world, dataset, args)
    activate(base, models["before"])
    paired: dict[str, dict] = {}
    for name in ("one_bot", "swarm"):
        filtered, unfiltered = replays[f"{name}_filtered"], replays[f"{name}_unfiltered"]
        paired[name] = {"unfiltered_minus_filtered": compare_replays(filtered, unfiltered),
                        "filtered_minus_no_attack": compare_replays(replays["no_attack"], filtered),
                        "unfiltered_minus_no_attack": compare_replays(replays["no_attack"], unfiltered)}
    paired["no_attack_minus_before"] = compare_replays(replays["before"], replays["no_attack"])
    return {"attacked_product_rank": rank_of,
            "replay_overall": {label: r["overall"] | {"errors": r["errors"], "seconds": r["seconds"]}
                               for label, r in replays.items()},
            "paired": paired}


def server_env(home: Path, dataset: Path) -> dict[str, str]:
    env = {"SHOPRANK_HOME": str(home), "SHOPRANK_CATALOG": str(dataset / "products.csv"),
           "SHOPRANK_RANKING__RERANKER": "none", "SHOPRANK_RANKING__STUDENT": "none",
           "SHOPRANK_SERVING__RESULTS_CACHE_SIZE": "0", "SHOPRANK_API__ADMIN_TOKEN": TOKEN,
           "SHOPRANK_PROGRESS": "false", "PYTHONPATH": str(ROOT)}
    return {**{k: v for k, v in os.environ.items() if not k.startswith("SHOPRANK_")}, **env}  # no Kafka


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=ROOT / "artifacts" / "ft", help="home to start from (read only)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/shoprank-click-attack"), help="scratch homes")
    parser.add_argument("--dataset", type=Path, default=DATA)
    parser.add_argument("--sessions", type=int, default=2000, help="honest simulated searches per day of traffic")
    parser.add_argument("--attack-searches", type=int, default=300, help="bot searches per attack")
    parser.add_argument("--swarm", type=int, default=50, help="bots in the swarm")
    parser.add_argument("--queries", type=int, default=5, help="attacked queries")
    parser.add_argument("--pool", type=int, default=400, help="train queries searched to find the attack")
    parser.add_argument("--replay-sessions", type=int, default=3000, help="honest dev-split sessions per replay")
    parser.add_argument("--seed", type=int, default=7, help="draws the attacked product and queries")
    parser.add_argument("--traffic-seed", type=int, default=1)
    parser.add_argument("--replay-seed", type=int, default=11)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "click_attack.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    base_home = scratch_home(args.source, args.work / "base")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = ShoprankProcess("api", ["serve", "--host", "127.0.0.1", "--port", str(port)],
                             server_env(base_home, args.dataset), args.work / "serve.log")
    result: dict[str, object] = {
        "hardware": hardware(), "command": "python " + " ".join(sys.argv), "dataset": "homedepot",
        "note": "SIMULATED shoppers, store world and bots (simulation/); 127.0.0.1; serving profile: first stage "
                "+ LambdaMART + rules (no cross-encoders)",
        "sizes": {"honest_sessions_per_day": args.sessions, "attack_searches": args.attack_searches,
                  "swarm_bots": args.swarm, "attacked_queries": args.queries, "pool": args.pool,
                  "replay_sessions": args.replay_sessions, "concurrency": args.concurrency},
        "seeds": {"attack": args.seed, "traffic": args.traffic_seed, "replay": args.replay_seed}}
    try:
        wait_ready(base)
        from core.registry import ModelRegistry

        world, dataset = StoreWorld.load(base_home / "world"), load_dataset(args.dataset)
        before = ModelRegistry(base_home / "models").active_version("ltr")
        attack = result["attack"] = pick_attack(base, dataset, world, args)
        days = {name: traffic(base, base_home, world, dataset,
                              ClickAttack(attack["product"], attack["queries"], bots, args.attack_searches), args)
                for name, bots in (("one_bot", 1), ("swarm", args.swarm))}
        result["traffic"] = {n: {"overall": r["overall"], "attack": r["attack"], "errors": r["errors"],
                                 "seconds": r["seconds"]} for n, (r, _) in days.items()}
        result["retrain"], models = retrain_all(days, settings_for(base_home, args.dataset), args, before)
        result["models"] = models
        result.update(measure(base, models, attack, world, dataset, args))
    finally:
        server.stop()
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
