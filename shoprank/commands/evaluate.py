"""``shoprank evaluate`` and ``shoprank compare``: a pipeline's metrics on a judged dataset, and
paired comparisons (bootstrap CI, t-test p, queries better / worse / tied) of two runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.arguments import positive
from core.files import finite
from core.settings import Settings
from shoprank.commands.arguments import at_least_100, fraction, out_file

MAX_DEPTH = 100_000  # the metrics read at most 1,000 results deep: a deeper search only costs time and memory


def depth(text: str) -> int:
    """argparse type for ``--depth``: a whole number from 100 (Recall@100 reads that deep) to :data:`MAX_DEPTH`."""
    value = at_least_100(text)
    if value > MAX_DEPTH:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_DEPTH}: pass a depth from 100 to {MAX_DEPTH} "
                                         "(the metrics read at most 1000 results deep)")
    return value


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    """One pipeline's metrics; with ``--compare B`` also B's, and B - A per metric, paired over queries."""
    from core.hardware import limit_math_threads
    from evaluation.compare import check_pair, compare_results
    from evaluation.dataset import load_dataset
    from evaluation.harness import Thresholds, evaluate
    from evaluation.subsets import check_subset
    from serving.loading import open_engine

    check_subset(args.subset)
    names = [args.pipeline]
    if args.compare is not None:
        check_pair(args.pipeline, args.compare)
        names.append(args.compare)
    dataset = load_dataset(args.dataset)
    # one query at a time, with the math threads a server gives each search: so is the latency it reports
    limit_math_threads(settings.serving.math_threads)
    engine = open_engine(settings, dataset.products, batch=True)
    pipelines = [engine.pipeline(name) for name in names]  # an unknown name fails before any evaluation
    results = []
    for name, pipeline in zip(names, pipelines):
        result = evaluate(dataset, engine.index, pipeline, name, args.mode, args.split,
                          Thresholds(recall=args.recall_threshold, mrr=args.mrr_threshold),
                          depth=args.depth, limit=args.limit, progress=settings.progress, subset=args.subset,
                          typos=args.typos)
        result.details["versions"] = engine.versions
        results.append(result)
    if args.save is not None:
        results[0].save(args.save)
    if len(results) == 1:
        if args.json:
            print(json.dumps(finite(results[0].to_json())))
        else:
            for key, value in results[0].to_json().items():
                print(f"{key:>16}: {value}")
        return 0
    first, second = results
    print_comparison(first, second, compare_results(first, second), args.json)
    return 0


def cmd_compare(args: argparse.Namespace, settings: Settings) -> int:
    """B - A per metric, paired over queries, for two runs saved by ``shoprank evaluate --save``."""
    from evaluation.compare import compare_results
    from evaluation.harness import EvalResult

    first, second = EvalResult.load(args.first), EvalResult.load(args.second)
    first.pipeline, second.pipeline = column_names((args.first, args.second),
                                                   (first.label or first.pipeline, second.label or second.pipeline))
    print_comparison(first, second, compare_results(first, second, saved=True), args.json)
    return 0


def column_names(paths: tuple[Path, Path], labels: tuple[str, str]) -> tuple[str, str]:
    """The names two saved runs are shown under: their files' names; where the two are one name
    (``a/bm25.json``, ``b/bm25.json``), the labels they were saved under, or else each file's folder and name."""
    for names in ((paths[0].stem, paths[1].stem), labels, tuple(f"{p.parent.name}/{p.stem}" for p in paths)):
        if names[0] != names[1]:
            return names[0], names[1]
    return f"{paths[0].stem} (A)", f"{paths[1].stem} (B)"  # one file twice


def print_comparison(first, second, comparison, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    from evaluation.compare import LEVEL, RESAMPLES

    paired = comparison["ndcg@10"].n if "ndcg@10" in comparison else first.queries
    if as_json:
        print(json.dumps(finite({"first": first.to_json(), "second": second.to_json(),
                                  "comparison": {metric: c.to_json() for metric, c in comparison.items()},
                                  "subset": first.subset, "queries": paired})))
        return
    for label, result in (("first", first), ("second", second)):
        print(f"{label}: {result.pipeline}")
        for key, value in result.to_json().items():
            print(f"{key:>16}: {value}")
    width = max(9, len(first.pipeline) + 1, len(second.pipeline) + 1)
    print(f"comparison: {second.pipeline} - {first.pipeline} on {paired} paired queries (subset {first.subset}); "
          f"{LEVEL:.0%} CI: paired bootstrap, {RESAMPLES} resamples; p: paired t-test")
    print(f"{'metric':<22}{first.pipeline:>{width}}{second.pipeline:>{width}}{'diff':>9}  {'CI':<19}{'p':>9}"
          f"{'better':>8}{'worse':>7}{'ties':>7}")
    for metric, c in comparison.items():
        figures = c.to_json()
        ci = f"[{figures['ci_low']:+.4f}, {figures['ci_high']:+.4f}]"
        print(f"{metric:<22}{figures['mean_a']:>{width}.4f}{figures['mean_b']:>{width}.4f}{figures['diff']:>+9.4f}  "
              f"{ci:<19}{figures['p_value']:>9.3g}{c.better:>8}{c.worse:>7}{c.ties:>7}")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """``evaluate`` and ``compare``."""
    p = sub.add_parser("evaluate", help="evaluate a pipeline on a judged dataset folder")
    p.add_argument("--dataset", required=True, type=Path, help="folder with products/queries/judgments.csv")
    p.add_argument("--split", default=None, help="query split (default: all queries)")
    p.add_argument("--mode", choices=("rerank", "retrieval"), required=True)
    p.add_argument("--pipeline", default="full", help="bm25, dense, hybrid, rerank, cascade, ltr or full (default)")
    p.add_argument("--compare", default=None, metavar="PIPELINE",
                   help="also evaluate this pipeline on the same queries and report its difference to --pipeline "
                        "per metric (paired bootstrap 95%% CI, paired t-test p, queries better/worse/tied)")
    from evaluation.subsets import SUBSETS

    p.add_argument("--subset", choices=SUBSETS, default="all",
                   help="query subset: misspelled (a word outside the catalog vocabulary), correct, all (default)")
    p.add_argument("--typos", action="store_true",
                   help="search each query typed with one synthetic slip (a letter dropped, doubled, swapped or "
                        "hit on a neighbouring key, or two words run together; drawn from the query's id) and "
                        "leave out queries with no word of 4+ letters: 'shoprank compare' with a run without "
                        "measures what a slip costs on the same queries and judgments")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--save", type=lambda text: Path(out_file(text)), default=None, metavar="FILE",
                   help="write the --pipeline result with its per-query values to FILE, for 'shoprank compare'")
    p.add_argument("--depth", type=depth, default=1000, help="results per query in retrieval mode (100 to "
                   f"{MAX_DEPTH}: Recall@100 is one of the metrics; Recall@1000 counts what the depth holds)")
    p.add_argument("--limit", type=positive, default=None, help="only the first N queries")
    p.add_argument("--recall-threshold", type=fraction, default=0.6, help="relevant: grade >= ceil(F*max), F in (0, 1]")
    p.add_argument("--mrr-threshold", type=fraction, default=0.75, help="MRR hit: grade >= ceil(F*max), F in (0, 1]")
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("compare", help="paired comparison of two saved evaluations (evaluate --save): two "
                                       "encoders, settings or models on the same queries")
    p.add_argument("first", type=Path, help="A: a file written by 'shoprank evaluate --save'")
    p.add_argument("second", type=Path, help="B: another, on the same dataset, split, mode and subset")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=cmd_compare)
