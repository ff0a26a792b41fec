"""Same simulated shoppers, different serving profiles: a paired comparison on 127.0.0.1.

    python benchmarks/replay_profiles.py [--home artifacts/loop] [--sessions 3000] \
        --profile first-stage SHOPRANK_RANKING__LTR=none \
        --profile ltr-v1 SHOPRANK_RANKING__LTR=v1

Needs a home built by ``benchmarks/learning_loop.py`` (catalog index, store world,
Feast online store, LambdaMART versions). For each profile a ``shoprank serve``
process starts on a scratch copy of that home (its event log and caches stay
apart, no Kafka: events are only logged on disk there), and ``shoprank simulate``
replays the same sessions (same users, dev-split queries and click-model
randomness, same ``--seed``). Every later profile is compared with the first by
a paired t-test over the sessions (``shoprank report replay``): true NDCG@10
(the simulator knows the judged grades), searches with a purchase, searches
with a click. This is where a ranker's gain on SIMULATED purchases shows when the
judged data cannot show it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import ShoprankProcess, command, hardware, wait_ready  # noqa: E402
from online_learning.local_broker import free_port  # noqa: E402
from simulation.simulator import compare_replays  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "homedepot"
SHARED = ("models", "indexes", "world", "cache")  # read by the server: linked, not copied
COPIED = ("features",)  # Feast rewrites its yaml on open: each scratch home gets its own copy


def scratch_home(source: Path, target: Path) -> Path:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in SHARED:
        if (source / name).exists():
            (target / name).symlink_to((source / name).resolve(), target_is_directory=True)
    for name in COPIED:
        shutil.copytree(source / name, target / name)
    return target


def replay(name: str, assignments: list[str], args: argparse.Namespace, work: Path) -> dict:
    home = scratch_home(args.home, work / name)
    env = {**os.environ, "SHOPRANK_HOME": str(home), "SHOPRANK_CATALOG": str(args.dataset / "products.csv"),
           "SHOPRANK_RANKING__RERANKER": "none", "SHOPRANK_RANKING__STUDENT": "none",
           "SHOPRANK_PROGRESS": "false", "PYTHONPATH": str(ROOT)}
    env.pop("SHOPRANK_EVENTS__KAFKA_BOOTSTRAP", None)
    for assignment in assignments:
        key, _, value = assignment.partition("=")
        if not key.startswith("SHOPRANK_") or not _:
            raise SystemExit(f"profile {name}: {assignment!r} is not SHOPRANK_FIELD=value")
        env[key] = value
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = ShoprankProcess(name, ["serve", "--host", "127.0.0.1", "--port", str(port)], env,
                             work / f"{name}.serve.log")
    try:
        wait_ready(base)
        out = work / f"{name}.json"
        started = time.perf_counter()
        with open(work / f"{name}.simulate.err", "wb") as err:
            subprocess.run([sys.executable, "-m", "shoprank.cli", "--no-progress", "simulate", "--base-url", base,
                            "--dataset", str(args.dataset), "--split", args.split, "--sessions", str(args.sessions),
                            "--concurrency", str(args.concurrency), "--seed", str(args.seed), "--out", str(out)],
                           env=env, check=True, stdout=subprocess.DEVNULL, stderr=err)
        report = json.loads(out.read_text())
        report["wall_seconds"] = round(time.perf_counter() - started, 1)
        report["profile"] = assignments
        return report
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=ROOT / "artifacts" / "loop")
    parser.add_argument("--dataset", type=Path, default=DATA)
    parser.add_argument("--split", default="dev", choices=("train", "dev"))
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--profile", nargs="+", action="append", metavar=("NAME", "SHOPRANK_X=Y"), required=True,
                        help="a name and the settings it serves with; give two or more")
    args = parser.parse_args()
    if len(args.profile) < 2:
        parser.error("give at least two --profile NAME SHOPRANK_X=Y ... (the first is the baseline)")
    names = [name for name, *_ in args.profile]
    if len(set(names)) < len(names):  # one report per name: a repeated one would replace the other
        parser.error(f"profile names repeat ({', '.join(sorted({n for n in names if names.count(n) > 1}))}): "
                     "give each --profile its own NAME")
    for needed in ("models", "indexes", "world", "features"):
        if not (args.home / needed).exists():
            raise SystemExit(f"{args.home} has no {needed}/: run benchmarks/learning_loop.py first")
    work = args.home.parent / f"{args.home.name}-replays"
    work.mkdir(parents=True, exist_ok=True)
    reports = {name: replay(name, assignments, args, work) for name, *assignments in args.profile}
    baseline, *others = reports
    result: dict[str, object] = {"hardware": hardware(), "command": command(), "sessions": args.sessions,
                                 "split": args.split,
                                 "seed": args.seed, "note": "SIMULATED shoppers (simulation.world)"}
    result["profiles"] = {name: {"settings": r["profile"], "wall_seconds": r["wall_seconds"], **r["overall"]}
                          for name, r in reports.items()}
    result["paired_vs_" + baseline] = {name: compare_replays(reports[baseline], reports[name]) for name in others}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
