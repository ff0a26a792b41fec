"""Fit the query-adaptive cross-encoder depth on judged queries, and measure what it costs.

The teacher stage scores the first stage's top ``ranking.teacher_depth`` (20) on every
search; with ``ranking.teacher_depth_confident = c`` it scores only ``c`` when BM25 and
the dense search agree on at least ``ranking.confident_agreement = t`` of the fused top
10 (:class:`ranking.cascade.AdaptiveDepth`). ``--stage student`` fits the same rule for a
served student (``ranking.student_depth`` / ``student_depth_confident``; serve it with
``SHOPRANK_RANKING__RERANKER=none SHOPRANK_RANKING__STUDENT_DEPTH=20`` in the environment).
This benchmark evaluates the served pipeline (``full``: teacher, LambdaMART, rules) in retrieval mode on ``--split`` under each
variant, exactly as ``shoprank evaluate --save`` does with the variant's settings,
and compares each with the deepest variant (``--reference-depth``, the teacher
scoring every candidate up to that depth) query by query (paired bootstrap 95% CI, as
``shoprank compare``). Per variant it prints NDCG@10 (condensed), MRR@10, Recall@100 and
uncondensed NDCG@10 with their differences, and the mean number of pairs the teacher
scores per search (from each query's first-stage agreement).

The fitted rule is the variant with the fewest pairs per search whose NDCG@10 is at
most ``--tolerance`` (0.002) below the reference and not significantly below it (its
CI includes 0). Teacher scores land in the home's score store on the first run, so
the variants after it cost a first stage and LambdaMART per query.

    HF_HUB_OFFLINE=1 SHOPRANK_HOME=artifacts/ft python benchmarks/adaptive_depth.py --dataset D \
        [--split dev] [--stage teacher] [--reference-depth 50] [--confident 3 5 10] [--agreement 0.5 0.7 0.9]

Writes ``benchmarks/results/adaptive_depth.json`` (``adaptive_depth_student.json`` for the student),
or ``--out``, and each variant's evaluation in the folder of the same name without ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import command, hardware
from core.query import Query
from core.settings import get_settings
from evaluation.compare import compare_results
from evaluation.dataset import load_dataset
from evaluation.harness import EvalResult
from ranking.cascade import first_stage_agreement
from serving.loading import open_engine

DATA = ROOT.parent / "shared" / "data" / "homedepot"
METRICS = ("ndcg@10", "mrr@10", "recall@100", "ndcg@10_unjudged_as_0")


def agreements(dataset_dir: Path, split: str, limit: int | None) -> dict[str, float]:
    """query id -> the first stage's agreement on its fused top 10 (what AdaptiveDepth reads)."""
    dataset = load_dataset(dataset_dir)
    engine = open_engine(get_settings(), dataset.products, models=False)
    hybrid = engine.pipeline("hybrid")
    out = {}
    for qid, text in dataset.select(split)[:limit]:
        query = hybrid.analyze(Query(text))
        out[qid] = first_stage_agreement(hybrid.first.search(query.text, 10))
    engine.close()
    return out


def evaluate(args: argparse.Namespace, name: str, env: dict[str, str], out: Path) -> EvalResult:
    """One ``shoprank evaluate --save`` run of the served pipeline under ``env``."""
    argv = [sys.executable, "-m", "shoprank.cli", "--no-progress", "evaluate", "--dataset", str(args.dataset),
            "--split", args.split, "--mode", "retrieval", "--pipeline", "full", "--save", str(out), "--json"]
    if args.limit:
        argv += ["--limit", str(args.limit)]
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL)
    print(f"  {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return EvalResult.load(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATA)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int, default=None, help="only the first N queries")
    parser.add_argument("--stage", choices=["teacher", "student"], default="teacher", help="the cross-encoder "
                        "stage whose depth is fitted")
    parser.add_argument("--depth", type=int, default=None, help="the stage's depth (default: ranking.teacher_depth "
                        "or ranking.student_depth)")
    parser.add_argument("--reference-depth", type=int, default=50, help="the deep reference the variants are held to")
    parser.add_argument("--confident", type=int, nargs="+", default=[3, 5, 10], help="depths for confident searches")
    parser.add_argument("--agreement", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    parser.add_argument("--tolerance", type=float, default=0.002, help="NDCG@10 the fitted rule may lose")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/adaptive_depth.json "
                        "(adaptive_depth_student.json with --stage student)")
    args = parser.parse_args()
    settings = get_settings()
    suffix = "" if args.stage == "teacher" else "_student"
    args.out = args.out or ROOT / "benchmarks" / "results" / f"adaptive_depth{suffix}.json"
    depth = args.depth or (settings.ranking.teacher_depth if args.stage == "teacher" else settings.ranking.student_depth)
    if depth <= 0:
        sys.exit(f"the {args.stage} stage is off (depth 0); set its depth (SHOPRANK_RANKING__{args.stage.upper()}_DEPTH)")
    key = f"SHOPRANK_RANKING__{args.stage.upper()}_DEPTH"
    print(f"CPU: {hardware()}\ncommand: {command()}")
    print(f"home {settings.home}, split {args.split}, {args.stage} depth {depth}, reference depth {args.reference_depth}")
    agree = agreements(args.dataset, args.split, args.limit)
    work = args.out.with_suffix("")  # each variant's evaluation, in a folder named after --out
    work.mkdir(parents=True, exist_ok=True)

    variants: list[tuple[str, dict[str, str], float]] = []  # name, settings, mean pairs per search
    shares = {t: float(np.mean([a >= t for a in agree.values()])) for t in args.agreement}
    # the fixed depths turn the adaptive depth off (it is on by default)
    variants.append((f"depth {args.reference_depth}", {key: str(args.reference_depth), f"{key}_CONFIDENT": "0"},
                     float(args.reference_depth)))
    if depth != args.reference_depth:
        variants.append((f"depth {depth}", {key: str(depth), f"{key}_CONFIDENT": "0"}, float(depth)))
    for c in args.confident:
        for t in args.agreement:
            env = {key: str(depth), f"{key}_CONFIDENT": str(c), "SHOPRANK_RANKING__CONFIDENT_AGREEMENT": str(t)}
            variants.append((f"{c} if agree >= {t}", env, shares[t] * c + (1 - shares[t]) * depth))

    results = {}
    for name, env, _ in variants:
        results[name] = evaluate(args, name, env, work / f"{name.replace(' ', '_').replace('>=', 'ge')}.json")
    reference = results[variants[0][0]]
    rows = []
    for name, env, pairs in variants:
        result = results[name]
        comparison = compare_results(reference, result, saved=True) if result is not reference else {}
        row = {"variant": name, "settings": env, "pairs_per_search": round(pairs, 2),
               "metrics": {m: result.metrics[m] for m in METRICS}}
        for metric in METRICS:
            if metric in comparison:
                c = comparison[metric].to_json()
                row[f"{metric}_diff"] = {k: c[k] for k in ("diff", "ci_low", "ci_high", "p_value")}
        rows.append(row)
    eligible = [r for r in rows[1:] if r["ndcg@10_diff"]["diff"] >= -args.tolerance and r["ndcg@10_diff"]["ci_high"] >= 0]
    fitted = min(eligible, key=lambda r: r["pairs_per_search"]) if eligible else None

    print(f"{'variant':<22}{'pairs':>7}{'NDCG@10':>9}{'diff':>9}  {'CI':<19}{'MRR@10':>8}{'diff':>9}{'R@100':>8}"
          f"{'diff':>9}{'uncond':>8}")
    for row in rows:
        m, d = row["metrics"], row.get("ndcg@10_diff")
        ci = f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]" if d else ""
        diffs = [row.get(f"{k}_diff", {}).get("diff") for k in ("ndcg@10", "mrr@10", "recall@100")]
        text = [f"{x:+9.4f}" if x is not None else f"{'':>9}" for x in diffs]
        print(f"{row['variant']:<22}{row['pairs_per_search']:>7.1f}{m['ndcg@10']:>9.4f}{text[0]}  {ci:<19}"
              f"{m['mrr@10']:>8.4f}{text[1]}{m['recall@100']:>8.4f}{text[2]}{m['ndcg@10_unjudged_as_0']:>8.4f}")
    print("fitted rule:", json.dumps(fitted["settings"]) if fitted else "none within the tolerance",
          f"({fitted['pairs_per_search']:.1f} pairs per search)" if fitted else "")
    args.out.write_text(json.dumps({"cpu": hardware(), "command": " ".join(sys.argv), "stage": args.stage,
                                    "split": args.split,
                                    "queries": reference.queries, "agreement_share": shares, "rows": rows,
                                    "fitted": fitted}, indent=2))


if __name__ == "__main__":
    main()
