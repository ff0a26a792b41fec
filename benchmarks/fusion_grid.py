"""How the first stage fuses BM25 and the dense search: RRF constants and weights, score fusion.

Runs BM25 and the dense search once per judged query of ``--split`` (analyzed as served,
``--depth`` deep each), then fuses the two runs offline under each variant:

- ``rrf k w``: reciprocal rank fusion, ``1 / (k + rank_bm25) + w / (k + rank_dense)``
  (the served fusion is k = ``retrieval.rrf_k``, w = 1);
- ``score w``: min-max normalized scores, ``(1 - w) * bm25 + w * dense``.

and, with ``--feedback``, the served RRF over the dense run moved by pseudo-relevance
feedback (``retrieval.feedback_docs`` m, ``feedback_weight`` b; the served code), each
against the plain served fusion with a paired bootstrap CI of the Recall@100 difference;
with ``--int8-query``, the served fusion over a dense run whose query vectors come from the
bi-encoder quantized to int8 (ONNX Runtime dynamic quantization, per channel; the catalog
vectors unchanged), compared the same way, with each encoder's time to encode one query
(one thread); with ``--bf16-query`` the same for the float32 encoder computed in bfloat16 on the
OpenVINO execution provider (:mod:`core.onnx_sessions`);
with ``--char-ngrams``, the served RRF with a third run: TF-IDF over character 3-grams of the
titles (scikit-learn ``char_wb``, sublinear tf), searched with the query as typed (lowercased),
at weights 0.3, 0.5 and 1, compared the same way (a fuzzy match for the words the spelling
corrector leaves unknown);
with ``--query-log SPLIT``, two uses of a query log (SPLIT's judged queries, their relevant
products as what shoppers chose; here the train split, never the evaluated one): BM25 over each
title plus the logged queries that chose it (document expansion) in place of the served BM25,
and the products of the 20 logged queries most like the query as a third RRF run (weights 0.1 to
1), compared the same way;
with ``--dense-original``, the served RRF over a dense run of the query as typed (normalized,
not spell-corrected), over one of the sum of both query vectors, and with the typed query's
dense run as a third input where the analyzer rewrote the query (weights 0.3, 0.5, 1), compared
the same way (does a wrong correction cost the dense search what it gains BM25?);
with ``--second-encoder SPEC`` (``minilm``, ``biencoder:vN`` or a folder, as the ``encoder``
setting), the served RRF with a third run: that bi-encoder's dense search over its own index of
the catalog (built on first use), at weights 0.3, 0.5 and 1, compared the same way (does a second
dense model find what the served one misses?), with each encoder's time to encode one query;

and prints condensed NDCG@10, MRR@10 (grade >= 0.75 of the maximum, as ``shoprank
evaluate``), Recall@100 / @200, and Recall@100 on the misspelled subset and the rest, the
misspelled split again by whether the analyzer left a word the catalog does not know.

    HF_HUB_OFFLINE=1 SHOPRANK_HOME=artifacts/ft python benchmarks/fusion_grid.py --dataset D [--split dev] [--feedback] [--int8-query | --bf16-query] [--char-ngrams] [--dense-original] [--query-log train] [--second-encoder minilm] [--bm25-params]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import command, hardware, percentiles, time_each
from core.query import Query
from core.settings import get_settings
from evaluation.compare import paired_bootstrap
from evaluation.dataset import load_dataset
from evaluation.harness import Thresholds
from evaluation.metrics import condense, grade_threshold, mrr_at_k, ndcg_at_k, recall_at_k
from evaluation.subsets import is_misspelled, subset_ids, vocabulary
from retrieval.hybrid import BM25Retriever, HybridRetriever
from retrieval.types import Hits
from serving.loading import open_engine

DATA = ROOT.parent / "shared" / "data" / "homedepot"


def fuse(bm25: Hits, dense: Hits, kind: str, k: float, weight: float,
         third: np.ndarray | None = None, third_weight: float = 0.0) -> np.ndarray:
    """Fused doc rows, best first (``third``: doc rows of a further run, RRF only)."""
    if kind == "rrf":
        weights = [1.0 / (k + np.arange(1, len(bm25) + 1)), weight / (k + np.arange(1, len(dense) + 1))]
    else:
        def scaled(hits: Hits) -> np.ndarray:
            return (hits.scores - hits.scores.min()) / (np.ptp(hits.scores) + 1e-9) if len(hits) else hits.scores
        weights = [(1 - weight) * scaled(bm25), weight * scaled(dense)]
    docs = np.concatenate([bm25.docs, dense.docs])
    if third is not None:
        weights.append(third_weight / (k + np.arange(1, len(third) + 1)))
        docs = np.concatenate([docs, third])
    unique, inverse = np.unique(docs, return_inverse=True)
    fused = np.bincount(inverse, weights=np.concatenate(weights))
    return unique[np.lexsort((unique, -fused))]


def query_vectors_at(engine, texts: list[str], precision: str) -> tuple[np.ndarray, dict[str, dict[str, float]]]:  # type: ignore[no-untyped-def]
    """The query vectors of ``texts`` from the served bi-encoder at ``precision`` (int8: quantized
    weights on ONNX Runtime; bf16: the float32 model computed in bfloat16 on the OpenVINO execution
    provider), and the time each encoder (float32, ``precision``; one thread) takes to encode one query."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from core.onnx_sessions import cpu_session

    encoder = engine.hybrid.dense.encoder
    if engine.settings.retrieval.second_encoder is not None:
        raise SystemExit(f"--{precision}-query measures one served model: unset retrieval.second_encoder")
    fp32 = engine.settings.paths.cache / "onnx" / f"biencoder-{encoder.fingerprint}.onnx"
    other = fp32
    if precision == "int8":
        other = fp32.with_name(f"biencoder-{encoder.fingerprint}-int8.onnx")  # beside the served export, in the cache
        quantize_dynamic(str(fp32), str(other), weight_type=QuantType.QInt8, per_channel=True)
    timings, served = {}, encoder.session
    for name, path in (("fp32", fp32), (precision, other)):
        encoder.session = cpu_session(path, threads=1, bf16=name == "bf16")
        timings[f"{name} ms per query"] = percentiles(time_each(texts[:400], lambda t: encoder.encode([t])))
        vectors = encoder.encode(texts, batch_size=64) if name == precision else None
    encoder.session = served
    return vectors, timings  # type: ignore[return-value]


def char_ngram_runs(titles: list[str], queries: list[str], depth: int) -> tuple[list[np.ndarray], dict]:
    """Doc rows, best first, of a character 3-gram TF-IDF search of ``queries`` over ``titles``,
    and what it took (build seconds, ms per query)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), sublinear_tf=True, min_df=2,
                                 dtype=np.float32)
    by_gram = vectorizer.fit_transform([t.lower() for t in titles]).T.tocsr()  # n-grams x products
    built = time.perf_counter() - started
    started = time.perf_counter()
    vectors, runs = vectorizer.transform([q.lower() for q in queries]), []
    for row in range(vectors.shape[0]):
        scores = (vectors[row] @ by_gram).toarray().ravel()
        top = np.argpartition(-scores, min(depth, len(scores) - 1))[:depth]
        top = top[np.argsort(-scores[top], kind="stable")]
        runs.append(top[scores[top] > 0])
    cost = {"build s": round(built, 2), "ms per query": round((time.perf_counter() - started) / len(queries) * 1e3, 2),
            "n-grams": by_gram.shape[0]}
    return runs, cost


def query_log_runs(dataset, index, analyze, texts: list[str], split: str,  # type: ignore[no-untyped-def]
                   depth: int, work: Path) -> tuple[list[Hits], list[np.ndarray], dict]:
    """Two uses of a query log, here the judged queries of ``split`` (their relevant products as
    the products shoppers chose): BM25 runs of ``texts`` over titles plus each product's logged
    queries (document expansion), and runs of the products of the 20 logged queries most like each
    text (BM25 over the logged queries; a product scores its best query's score x grade / max)."""
    from retrieval.bm25 import BM25Index
    from retrieval.vocabulary import normalize

    relevant = grade_threshold(Thresholds().recall, dataset.max_grade)
    logged = [(qid, analyze(text)) for qid, text in dataset.select(split)]
    expansions: dict[int, list[str]] = {}
    chosen: list[list[tuple[int, int]]] = []
    for qid, text in logged:
        products = [(doc, grade) for pid, grade in dataset.qrels.get(qid, {}).items()
                    if grade >= relevant and (doc := index.doc_of(pid)) is not None]
        chosen.append(products)
        for doc, _ in products:
            expansions.setdefault(doc, []).append(text)
    titles = index.products["title"].fillna("").astype(str).tolist()
    expanded = BM25Index.build(work / "expanded", ((d, normalize(t), " . ".join(expansions.get(d, [])))
                                                   for d, t in enumerate(titles)))
    by_query = BM25Index.build(work / "queries", ((i, text, "") for i, (_, text) in enumerate(logged)))
    bm25_runs = expanded.batch_search(texts, depth)
    log_runs = []
    for text in texts:
        hits, best = by_query.search(text, 20), {}
        for row, score in zip(hits.docs, hits.scores):
            for doc, grade in chosen[int(row)]:
                best[doc] = max(best.get(doc, 0.0), float(score) * grade / dataset.max_grade)
        log_runs.append(np.array(sorted(best, key=best.get, reverse=True), dtype=np.int64))
    return bm25_runs, log_runs, {"logged queries": len(logged), "products with logged queries": len(expansions)}


def second_encoder_runs(settings, dataset, spec: str, engine, texts: list[str],  # type: ignore[no-untyped-def]
                        depth: int) -> tuple[list[np.ndarray], dict]:
    """Doc rows (of the served index), best first, of the dense search of ``texts`` by the bi-encoder
    ``spec`` over its own index of the same catalog, and what one query costs each encoder (uncached)."""
    alone = settings.retrieval.model_copy(update={"second_encoder": None})  # that model alone, whatever is served
    second = open_engine(settings.model_copy(update={"encoder": spec, "retrieval": alone}), dataset.products,
                         models=False)
    if list(second.index.products["product_id"]) != list(engine.index.products["product_id"]):
        raise SystemExit(f"the index of encoder {spec!r} holds another catalog than the served one")
    runs = second.index.dense.batch_search(second.hybrid.dense.embed(texts), depth)
    cost = {name: percentiles(time_each(texts[:400], lambda t, e=e: e.hybrid.dense.encoder.encode([t])))
            for name, e in (("served ms per query", engine), (f"{spec} ms per query", second))}
    return [run.docs for run in runs], cost


def bm25_runs_at(index, texts: list[str], depth: int,  # type: ignore[no-untyped-def]
                 params: list[tuple[float, float]]) -> dict[tuple[float, float], list[Hits]]:
    """BM25 runs of ``texts`` over the titles under each (k1, b): bm25s's Lucene BM25 (the formula
    tantivy scores with, ``tests/retrieval/test_bm25.py``) over the served index's own tokens."""
    import bm25s

    from retrieval.vocabulary import normalize

    analyzer = index.bm25.analyzer
    corpus = [analyzer.analyze(normalize(title)) for title in index.products["title"].fillna("").astype(str)]
    queries = [list(dict.fromkeys(analyzer.analyze(text))) for text in texts]
    out = {}
    for k1, b in params:
        model = bm25s.BM25(method="lucene", k1=k1, b=b)
        model.index(corpus, show_progress=False)
        runs = []
        for query in queries:
            scores = model.get_scores(query) if query else np.zeros(0)
            found = np.flatnonzero(scores)
            top = found[np.lexsort((found, -scores[found]))][:depth]
            runs.append(Hits.of(top, scores[top]) if len(top) else Hits.empty())
        out[(k1, b)] = runs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DATA)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--depth", type=int, default=1000)
    parser.add_argument("--feedback", action="store_true", help="also the dense feedback grid")
    query = parser.add_mutually_exclusive_group()
    query.add_argument("--int8-query", action="store_true", help="also the query encoder quantized to int8")
    query.add_argument("--bf16-query", action="store_true",
                       help="also the query encoder computed in bf16 (OpenVINO execution provider)")
    parser.add_argument("--char-ngrams", action="store_true", help="also a character 3-gram run as a third input")
    parser.add_argument("--query-log", default=None, metavar="SPLIT",
                        help="also two uses of SPLIT's judged queries as a query log: product text expanded by "
                             "them, and their products as a third run")
    parser.add_argument("--dense-original", action="store_true",
                        help="also dense runs of the query as typed (normalized, not spell-corrected)")
    parser.add_argument("--second-encoder", default=None, metavar="SPEC",
                        help="also a second bi-encoder's dense run as a third input ('minilm', 'biencoder:vN', a folder)")
    parser.add_argument("--bm25-params", action="store_true", help="also BM25 runs under other k1 and b")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fusion_grid.json")
    args = parser.parse_args()
    settings = get_settings()
    dataset = load_dataset(args.dataset)
    engine = open_engine(settings, dataset.products, models=False)
    index, hybrid = engine.index, engine.pipeline("hybrid")
    selected = [(q, t) for q, t in dataset.select(args.split) if any(dataset.qrels.get(q, {}).values())]
    misspelled = subset_ids(dataset, selected, "misspelled")
    texts = [hybrid.analyze(Query(t)).text for _, t in selected]
    vocab = vocabulary(dataset.products)
    unresolved = {qid for (qid, _), text in zip(selected, texts) if qid in misspelled and is_misspelled(text, vocab)}
    started = time.perf_counter()
    vectors = engine.hybrid.dense.embed(texts)
    dense_runs = index.dense.batch_search(vectors, args.depth)
    bm25_runs = index.bm25.batch_search(texts, args.depth)
    print(f"CPU: {hardware()}\ncommand: {command()}\n"
          f"{len(selected)} queries, runs in {time.perf_counter() - started:.0f} s; "
          f"served: rrf k={settings.retrieval.rrf_k} w=1", flush=True)
    relevant = grade_threshold(Thresholds().recall, dataset.max_grade)
    hit = grade_threshold(Thresholds().mrr, dataset.max_grade)
    ids = np.array([index.product_id(d) for d in range(len(index.products))])

    variants = [("rrf", k, w, 0, 0.0) for k in (10, 30, 60, 120) for w in (0.7, 1.0, 1.5, 2.0)]
    variants += [("score", 0, w, 0, 0.0) for w in (0.3, 0.5, 0.6, 0.7)]
    if args.feedback:
        variants += [("rrf", settings.retrieval.rrf_k, 1.0, m, b) for m in (3, 5, 10, 20) for b in (0.1, 0.2, 0.3, 0.6)]
    # Variants with m < 0 replace a run or add a third one; per code: the dense runs, the BM25 runs,
    # the third run of each query (None: none for that query) and the label (b: the third run's weight).
    dense_of: dict[int, list] = {}
    bm25_of: dict[int, list] = {}
    third_of: dict[int, list] = {}
    label_of: dict[int, str] = {}
    timings: dict = {}
    served = lambda m, weights=(0.0,): [("rrf", settings.retrieval.rrf_k, 1.0, m, b) for b in weights]  # noqa: E731
    if args.int8_query or args.bf16_query:
        precision = "int8" if args.int8_query else "bf16"
        other_vectors, timings = query_vectors_at(engine, texts, precision)
        dense_of[-1], label_of[-1] = index.dense.batch_search(other_vectors, args.depth), f" {precision} query encoder"
        print(json.dumps(timings), flush=True)
        variants += served(-1)
    if args.char_ngrams:
        third_of[-2], timings["char n-grams"] = char_ngram_runs(index.products["title"].fillna("").astype(str).tolist(),
                                                                [t for _, t in selected], args.depth)
        label_of[-2] = " + char 3-grams w={b}"
        print(json.dumps(timings["char n-grams"]), flush=True)
        variants += served(-2, (0.3, 0.5, 1.0))
    if args.dense_original:
        typed = [hybrid.analyze(Query(t, rewrite=False)).text for _, t in selected]
        typed_vectors = engine.hybrid.dense.embed(typed)
        typed_runs = index.dense.batch_search(typed_vectors, args.depth)
        mixed = vectors + typed_vectors  # equal to vectors (doubled) where nothing was rewritten
        mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
        dense_of[-3], label_of[-3] = typed_runs, " dense on the query as typed"
        dense_of[-4] = index.dense.batch_search(mixed.astype(np.float32), args.depth)
        label_of[-4] = " dense on typed + corrected vectors"
        # a third run only where the analyzer rewrote the query
        third_of[-5] = [run.docs if a != b else None for run, a, b in zip(typed_runs, typed, texts)]
        label_of[-5] = " + dense on the query as typed w={b}"
        rewritten = sum(a != b for a, b in zip(texts, typed))
        print(f"{rewritten} of {len(texts)} queries rewritten", flush=True)
        variants += served(-3) + served(-4) + served(-5, (0.3, 0.5, 1.0))
    if args.query_log:
        import tempfile

        if args.query_log == args.split:
            parser.error(f"--query-log {args.query_log} is the evaluated split: its judgments would be the answers")
        with tempfile.TemporaryDirectory() as work:
            bm25_of[-6], third_of[-7], timings["query log"] = query_log_runs(
                dataset, index, lambda t: hybrid.analyze(Query(t)).text, texts, args.query_log,
                args.depth, Path(work))
        label_of[-6], label_of[-7] = " BM25 over titles + logged queries", " + logged queries' products w={b}"
        print(json.dumps(timings["query log"]), flush=True)
        variants += served(-6) + served(-7, (0.1, 0.3, 0.5, 1.0))
    if args.second_encoder:
        third_of[-8], timings["second encoder"] = second_encoder_runs(settings, dataset, args.second_encoder,
                                                                      engine, texts, args.depth)
        label_of[-8] = f" + dense {args.second_encoder} w={{b}}"
        print(json.dumps(timings["second encoder"]), flush=True)
        variants += served(-8, (0.3, 0.5, 1.0))
    if args.bm25_params:
        grid = [(k1, b) for k1 in (0.6, 0.9, 1.2, 1.6, 2.0) for b in (0.25, 0.5, 0.75, 0.9)]
        for code, ((k1, b), runs) in enumerate(bm25_runs_at(index, texts, args.depth, grid).items(), start=100):
            bm25_of[-code], label_of[-code] = runs, f" BM25 k1={k1} b={b}"
            variants += served(-code)
    rows: list[dict[str, object]] = []
    served_recall: dict[str, float] | None = None
    for kind, k, w, m, b in variants:
        values: dict[str, list[float]] = {name: [] for name in ("ndcg@10", "mrr@10", "recall@100", "recall@200",
                                                          "recall@100 misspelled", "recall@100 correct",
                                                          "recall@100 misspelled resolved",
                                                          "recall@100 misspelled unresolved")}
        runs, thirds = dense_of.get(m, dense_runs), third_of.get(m)
        if m > 0:
            moved = HybridRetriever(BM25Retriever(index), engine.hybrid.dense, rrf_k=k, depth=args.depth,
                                    feedback_docs=m, feedback_weight=b)
            runs = moved._feedback(vectors, bm25_runs, dense_runs, args.depth)
        per_query: dict[str, float] = {}
        for position, ((qid, _), bm25, dense) in enumerate(zip(selected, bm25_of.get(m, bm25_runs), runs)):
            grades = dataset.qrels[qid]
            third = thirds[position] if thirds is not None else None
            ranked = list(ids[fuse(bm25, dense, kind, k, w, third, b)[: args.depth]])
            condensed = condense(ranked, grades, 100)
            values["ndcg@10"].append(ndcg_at_k(condensed, grades, 10))
            values["mrr@10"].append(mrr_at_k(condensed, grades, 10, hit))
            recall = recall_at_k(ranked, grades, 100, relevant)
            if recall is not None:
                per_query[qid] = recall
                values["recall@100"].append(recall)
                values["recall@200"].append(recall_at_k(ranked, grades, 200, relevant) or 0.0)
                values["recall@100 misspelled" if qid in misspelled else "recall@100 correct"].append(recall)
                if qid in misspelled:
                    values["recall@100 misspelled " + ("unresolved" if qid in unresolved else "resolved")].append(recall)
        row = {"fusion": f"{kind} k={k} w={w}" if kind == "rrf" else f"score w={w}"}
        row["fusion"] += f" feedback m={m} b={b}" if m > 0 else label_of.get(m, "").format(b=b)
        row |= {name: round(float(np.mean(v)), 4) for name, v in values.items()}
        row["misspelled resolved / unresolved queries"] = [len(values["recall@100 misspelled resolved"]),
                                                           len(values["recall@100 misspelled unresolved"])]
        if kind == "rrf" and k == settings.retrieval.rrf_k and w == 1.0 and not m:
            served_recall = per_query
        elif m and served_recall:
            qids = sorted(served_recall)
            a, b_ = np.array([served_recall[q] for q in qids]), np.array([per_query[q] for q in qids])
            interval = paired_bootstrap(a, b_)
            row["recall@100 vs served"] = [round(float(np.mean(b_ - a)), 4), round(interval.low, 4),
                                           round(interval.high, 4)]
        rows.append(row)
        print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps({"cpu": hardware(), "command": " ".join(sys.argv), "home": str(settings.home),
                                    "queries": len(selected), "rows": rows} | ({"encode": timings} if timings else {}),
                                   indent=2))


if __name__ == "__main__":
    main()
