"""Query analyzer cost and effect on a real catalog: latency per query, share rewritten.

    python benchmarks/query_analyzer.py --dataset ../shared/data/homedepot [--split dev] [--per-query FILE] \
        [--synonyms FILE]

Opens the dataset's index (built on first use, as ``shoprank evaluate`` does),
times building its vocabulary, then analyzes every query of the split with the
index's analyzer and an empty cache (each query's first analysis: the cost a new
query pays) and prints JSON: CPU, command, vocabulary build seconds, latency
p50/p95/p99 in ms, the share of queries rewritten (spelling / split) and examples,
and the rewrites of words that are common English words (symspellpy's English frequency
list): a typed word the catalog lacks may be a real word, not a typo.

It also asks whether the judgments can reward a correction: for each word of a query, the share of
the query's relevant judged products (the recall grade) whose title holds it (by stem), averaged
over the words of the correctly spelled queries, over the known words of the misspelled ones (a
word outside the catalog's vocabulary) and over their corrected words. Judgments collected from
an engine that searched the typed text hold the corrected word less often than the others.

``--per-query FILE`` (written by ``shoprank evaluate ... --subset misspelled --save FILE``)
adds what those queries still miss: Recall@100 of the ones the analyzer rewrote and of the
ones it left as typed, and the worst of them with their rewrites.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import hardware, percentiles  # noqa: E402
from core.query import Analysis  # noqa: E402
from core.settings import Settings  # noqa: E402
from evaluation.dataset import EvalDataset, load_dataset  # noqa: E402
from evaluation.harness import Thresholds  # noqa: E402
from evaluation.metrics import grade_threshold  # noqa: E402
from evaluation.subsets import subset_ids  # noqa: E402
from retrieval.analyzer import Analyzer, english_word_counts  # noqa: E402
from retrieval.synonyms import Synonyms  # noqa: E402
from retrieval.vocabulary import TOKEN, UNITS, Vocabulary, normalize, stem  # noqa: E402
from serving.indexing import open_encoder, open_index  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--split", default="dev")
    parser.add_argument("--per-query", type=Path, help="a `shoprank evaluate --save` file of the same split")
    parser.add_argument("--synonyms", type=Path, help="a synonyms file the analyzer applies (retrieval.synonyms)")
    args = parser.parse_args()
    dataset = load_dataset(args.dataset)
    settings = Settings(progress=False)
    index = open_index(settings, open_encoder(settings), dataset.products)
    started = time.perf_counter()
    products = dataset.products
    vocabulary = Vocabulary.build(products["title"].tolist(), products["description"].tolist())
    build = time.perf_counter() - started
    started = time.perf_counter()
    synonyms = Synonyms.load(args.synonyms) if args.synonyms else None
    analyzer = Analyzer(index.vocabulary, cache_size=0, synonyms=synonyms)  # builds the SymSpell dictionary
    speller = time.perf_counter() - started
    queries = dict(dataset.select(args.split))
    seconds, reasons, examples, analyses = [], Counter(), [], {}
    for qid, text in queries.items():
        began = time.perf_counter()
        analysis = analyses[qid] = analyzer.analyze(text)
        seconds.append(time.perf_counter() - began)
        for rewrite in analysis.rewrites:
            reasons[rewrite.reason] += 1
        if analysis.rewrites and len(examples) < 25:
            examples.append(f"{text} -> {analysis.text}")
    rewritten = sum(1 for analysis in analyses.values() if analysis.rewrites)
    report = {
        "hardware": hardware(), "command": " ".join(sys.argv), "queries": len(queries),
        "vocabulary_words": len(vocabulary.counts), "brand_words": len(vocabulary.brands),
        "type_words": len(vocabulary.types), "vocabulary_build_s": round(build, 2),
        "speller_build_s": round(speller, 2), "synonym_rules": len(synonyms.rules) if synonyms else 0,
        "latency_ms": percentiles(seconds),
        "queries_rewritten": rewritten, "share_rewritten": round(rewritten / max(1, len(queries)), 4),
        "rewrites_by_reason": dict(reasons), "examples": examples,
        "english_word_rewrites": english_word_rewrites(analyses.values()),
    }
    report["words_in_relevant_titles"] = words_in_relevant_titles(dataset, queries, analyses, index.vocabulary)
    if args.per_query:
        report["misses"] = misses(json.loads(args.per_query.read_text()), queries, analyses)
    print(json.dumps(report, indent=2))


def english_word_rewrites(analyses: Iterable[Analysis], shown: int = 40) -> dict:
    """Rewrites of typed words found in symspellpy's English frequency list, most frequent words first."""
    english = english_word_counts()
    found: Counter[tuple[str, str]] = Counter()
    total = 0
    for analysis in analyses:
        for rewrite in analysis.rewrites:
            total += 1
            if rewrite.original in english:
                found[(rewrite.original, rewrite.replacement)] += 1
    ranked = sorted(found, key=lambda pair: -english[pair[0]])
    return {"rewrites": total, "of_english_words": sum(found.values()),
            "examples": [f"{word} -> {replacement}" for word, replacement in ranked[:shown]]}


def words_in_relevant_titles(dataset: EvalDataset, texts: dict[str, str], analyses: dict[str, Analysis],
                             vocabulary: Vocabulary) -> dict:
    """Mean share of a query's relevant judged titles holding each of its words, by kind of word."""
    relevant = grade_threshold(Thresholds().recall, dataset.max_grade)
    titles = dict(zip(dataset.products["product_id"], dataset.products["title"]))
    misspelled = subset_ids(dataset, list(texts.items()), "misspelled")
    shares: dict[str, list[float]] = {"correct_queries": [], "misspelled_queries_known_words": [],
                                      "misspelled_queries_corrected_words": []}
    for qid, text in texts.items():
        held = [{stem(w) for w in TOKEN.findall(normalize(titles[p]))}
                for p, grade in dataset.qrels.get(qid, {}).items() if grade >= relevant and p in titles]
        if not held:
            continue
        corrected = {r.original: r.replacement for r in analyses[qid].rewrites}
        for word in TOKEN.findall(normalize(text)):
            if not word.isalpha() or len(word) < 3 or word in UNITS:
                continue
            if qid not in misspelled:
                kind, searched = "correct_queries", word
            elif word in corrected:
                kind, searched = "misspelled_queries_corrected_words", corrected[word]
            elif vocabulary.knows(word):
                kind, searched = "misspelled_queries_known_words", word
            else:
                continue
            shares[kind].append(sum(all(stem(w) in t for w in searched.split()) for t in held) / len(held))
    return {kind: {"words": len(values), "share_of_relevant_titles": round(sum(values) / max(1, len(values)), 3)}
            for kind, values in shares.items()}


def misses(saved: dict, texts: dict[str, str], analyses: dict[str, Analysis], shown: int = 40) -> dict:
    """Recall@100 of the saved queries, rewritten by the analyzer or left as typed, and the worst."""
    recall = saved["per_query"]["recall@100"]
    rows = [(value, qid) for qid, value in recall.items() if qid in texts]
    rewritten = [value for value, qid in rows if analyses[qid].rewrites]
    as_typed = [value for value, qid in rows if not analyses[qid].rewrites]
    mean = lambda values: round(sum(values) / len(values), 4) if values else None  # noqa: E731
    return {"queries": len(rows), "recall@100": mean([value for value, _ in rows]),
            "rewritten": {"queries": len(rewritten), "recall@100": mean(rewritten)},
            "as_typed": {"queries": len(as_typed), "recall@100": mean(as_typed)},
            "worst": [f"{value:.2f} | {texts[qid]} -> {analyses[qid].text}" for value, qid in sorted(rows)[:shown]]}


if __name__ == "__main__":
    main()
